"""The viewer (``dcsm serve``): its logic as plain functions, the command without its extra, and
the page itself in a real headless Chromium driven by Selenium.

The browser test needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them)
and skips, saying so, where they are missing; nothing is downloaded at run time. Set
``DCSM_VIEWER_SCREENSHOT=path.png`` to keep a screenshot of the page it drove.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
from PIL import Image

import dcsm
from dcsm import cli
from dcsm.errors import DcsmError
from dcsm.io import viz
from dcsm.pipeline.images import shrink_image, shrink_map
from dcsm.viewer.app import (
    INSTALL_HINT,
    MAX_UPLOAD_MB,
    decoded_upload,
    redraw,
    run_explain,
    show_photo,
)
from dcsm.viewer.logic import (
    BUNDLED_IMAGE,
    VIEW_SIDE,
    Settings,
    Viewer,
    class_maps_html,
    default_preset,
    layer_maps_html,
    load_picture,
    scores_markdown,
    segmentation_html,
    write_downloads,
)

PAIR = ("tabby", "espresso")


@pytest.fixture(scope="module")
def viewer() -> Viewer:
    return Viewer.from_name()


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return load_picture(BUNDLED_IMAGE)


@pytest.fixture(scope="module")
def analysis(viewer, image):
    return viewer.analyse(image, Settings(classes=PAIR, preset="paper"))


def _embedded(page: str) -> dict[str, np.ndarray]:
    found = re.findall(r'<img alt="([^"]*)" src="data:image/png;base64,([^"]+)"', page)
    return {alt: np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))
            for alt, data in found}


# ----------------------------------------------------------------------------- logic
def test_analysis_is_the_library_result(viewer, image, analysis):
    expected = dcsm.explain(viewer.adapter, image, classes=list(PAIR), per_layer=True,
                            preset="paper")
    assert [c.name for c in analysis.result.candidates] == list(PAIR)
    for name in PAIR:
        np.testing.assert_allclose(analysis.result.maps[name], expected.maps[name], atol=1e-6)
    assert set(analysis.result.layer_maps["tabby"]) == set(viewer.preset_layers("paper"))
    seg = dcsm.segment(expected)
    np.testing.assert_array_equal(analysis.segmentation.labels, seg.labels)
    # The cat is on the left half, the cup on the right.
    labels = analysis.segmentation.labels
    assert (labels[:, :224] == 1).sum() > 10 * (labels[:, 224:] == 1).sum()
    assert (labels[:, 224:] == 2).sum() > 10 * (labels[:, :224] == 2).sum()


def test_explainers_are_built_once(viewer):
    first = viewer.explainer(Settings(preset="paper"))
    assert viewer.explainer(Settings(preset="paper",
                                     layers=tuple(viewer.preset_layers("paper")))) is first
    assert viewer.explainer(Settings(preset="released")) is not first
    assert viewer.explainer(Settings()) is viewer.explainer(Settings(preset=default_preset()))
    assert viewer.explainer(Settings(method="simonyan", preset="tuned")) is viewer.explainer(
        Settings(method="simonyan"))  # the baselines have no preset and read no layer


def test_preset_layers(viewer):
    from dcsm.pipeline.presets import get_preset

    for name in ("paper", "released", "tuned"):
        own = get_preset(name).layers_for(viewer.model_name)
        assert viewer.preset_layers(name) == list(own or viewer.default_layers)
        assert set(viewer.preset_layers(name)) <= set(viewer.layer_choices())
    tuned = viewer.explainer(Settings(preset="tuned"))
    assert list(tuned.parameters()["layers"]) == viewer.preset_layers("tuned")


def test_auto_classes_and_top_classes(viewer, image):
    auto = viewer.analyse(image, Settings(segmenter="none", method="gradcam"))
    assert [c.name for c in auto.result.candidates] == ["espresso", "tiger cat"]
    assert auto.segmentation is None and auto.result.layer_maps is None
    top = auto.top_classes
    assert len(top) == 10 and [c.name for c in top[:2]] == ["espresso", "tiger cat"]
    assert all(a.score >= b.score for a, b in zip(top, top[1:], strict=False))
    for c, ranked in zip(auto.result.candidates, top, strict=False):
        assert c.score == pytest.approx(ranked.score, abs=1e-5)


@pytest.mark.parametrize(("settings", "says"), [
    (Settings(method="gradcam", layers=("block14", "block15")), "exactly one layer"),
    (Settings(classes=("no such class",)), "unknown class 'no such class'"),
    (Settings(layers=()), "at least one layer"),
    (Settings(layers=("nope",)), "nope"),
    (Settings(segmenter="watershed"), "unknown segmenter 'watershed'"),
    (Settings(top_k=0), "top-k"),
])
def test_refused_settings_are_one_line(viewer, image, settings, says):
    with pytest.raises(DcsmError, match=says) as exc:
        viewer.analyse(image, settings)
    assert "\n" not in str(exc.value)


def test_load_picture_refuses_bad_files(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"this is text, not a picture")
    with pytest.raises(DcsmError, match="not a recognised image format"):
        load_picture(bad)
    with pytest.raises(DcsmError, match="no image"):
        load_picture(None)
    preview, status = show_photo(str(bad))
    assert preview is None and status.startswith("**Error:**") and "bad.png" in status
    preview, _ = show_photo(str(BUNDLED_IMAGE))
    assert preview.shape == (224, 448, 3)


def test_class_maps_html(analysis):
    page = class_maps_html(analysis, 0.7, "inferno")
    assert 'id="class-maps"' in page
    assert "tabby " + f"{analysis.result.candidates[0].score:.3f}" in page
    pictures = _embedded(page)
    assert list(pictures) == list(PAIR)
    small = shrink_image(analysis.result.image, VIEW_SIDE)
    for name, picture in pictures.items():
        np.testing.assert_array_equal(picture, viz.overlay(
            small, shrink_map(analysis.result.maps[name], VIEW_SIDE), 0.7, "inferno"))
    with pytest.raises(DcsmError, match="opacity"):
        class_maps_html(analysis, 2.0)


def test_layer_maps_html(viewer, analysis):
    pictures = _embedded(layer_maps_html(analysis))
    layers = viewer.preset_layers("paper")
    assert list(pictures) == [f"{c} / {layer}" for c in PAIR for layer in layers]
    small = shrink_image(shrink_image(analysis.result.image, VIEW_SIDE), 256)
    m = shrink_map(analysis.result.layer_maps["espresso"][layers[-1]], 256)
    np.testing.assert_array_equal(pictures[f"espresso / {layers[-1]}"], viz.overlay(small, m))


def test_segmentation_html_and_scores(analysis):
    from dcsm.segmentation import label_overlay

    page = segmentation_html(analysis)
    counts = analysis.segmentation.summary()["pixels"]
    for name in ("background", *PAIR):
        assert f"{name}: {counts[name]} px" in page
    picture = _embedded(page)["segmentation"]
    np.testing.assert_array_equal(picture, label_overlay(analysis.result.image,
                                                         analysis.segmentation.labels))
    table = scores_markdown(analysis)
    for c in analysis.result.candidates:
        assert f"| {c.name} | {c.score:.3f} | yes |" in table
    assert "| tiger cat | " in table  # one of the model's own top classes, not explained


def test_write_downloads(tmp_path, analysis):
    paths = write_downloads(analysis, tmp_path)
    assert [p.name for p in paths] == ["maps.npz", "labels.png", "summary.json"]
    with np.load(paths[0]) as npz:
        for name in PAIR:
            np.testing.assert_array_equal(npz[name], analysis.result.maps[name])
    np.testing.assert_array_equal(np.asarray(Image.open(paths[1])), analysis.segmentation.labels)
    summary = json.loads(paths[2].read_text())
    assert [c["name"] for c in summary["candidates"]] == list(PAIR)
    assert summary["segmentation"]["labels"] == {"0": "background", "1": "tabby",
                                                 "2": "espresso"}


def test_handlers(viewer):
    state, status, files = run_explain(viewer, str(BUNDLED_IMAGE), list(PAIR), 2, "simonyan",
                                       "paper", None, "none")
    assert status.startswith("Explained with simonyan") and "tabby" in status
    assert [name for name, _ in files] == ["maps.npz", "summary.json"]
    assert json.loads(files[1][1])["method"] == "simonyan"
    shown = redraw(state, 0.5, "viridis")
    assert list(_embedded(shown["maps"])) == list(PAIR)
    assert "reads no set of layers" in shown["layers"]
    assert "No segmentation" in shown["segmentation"] and "| tabby |" in shown["scores"]
    grey = _embedded(redraw(state, 1.0, "gray")["maps"])["tabby"]
    assert (grey[..., 0] == grey[..., 1]).all()  # opacity 1: the grey map alone
    assert redraw(None, 0.5, "viridis") == {"maps": "", "layers": "", "segmentation": "",
                                            "scores": ""}
    refused = run_explain(viewer, str(BUNDLED_IMAGE), ["nope"], 2, "dcsm", "paper", None, "crf")
    assert refused == (None, "**Error:** unknown class 'nope' for model efficientnet_lite0", [])


def test_an_upload_is_decoded_once_and_leaves_no_file(monkeypatch, tmp_path):
    from dcsm.viewer import app

    decoded, contents = [], []

    def counting(path):
        decoded.append(Path(path))
        contents.append(Path(path).read_bytes())  # the upload's bytes, in a private folder
        return show_photo(path)

    monkeypatch.setattr(app, "show_photo", counting)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the temporary folders go
    data = BUNDLED_IMAGE.read_bytes()
    state: dict = {}
    first = decoded_upload(state, "cat.png", data)
    for _ in range(3):  # the page's reruns: a slider moved, a class picked
        again = decoded_upload(state, "cat.png", data)
        assert again[0] is first[0]
    assert len(decoded) == 1 and first[0].shape == (224, 448, 3) and contents == [data]
    broken = decoded_upload(state, "../../broken.png", b"this is text, not a picture")
    assert broken[0] is None and len(decoded) == 2
    assert decoded[1].name == "broken.png" and decoded[1].parent.parent == tmp_path
    assert broken[1].startswith("**Error:**") and "'broken.png'" in broken[1]  # no folder
    assert decoded_upload(state, "..", data)[0].shape == (224, 448, 3)  # a name that is no file
    assert decoded[2].name == "upload" and len(decoded) == 3
    assert list(tmp_path.iterdir()) == []  # each folder removed once the picture was read


def test_host_names_and_the_hosts_a_server_accepts():
    from dcsm.viewer.guard import allowed_hosts, host_name

    for header, name in [("127.0.0.1:8501", "127.0.0.1"), ("LocalHost:8501", "localhost"),
                         ("[::1]:9000", "::1"), ("[::1]", "::1"), ("example.org.", "example.org"),
                         ("evil.example", "evil.example"), ("", None), (None, None),
                         ("a:b", None), ("[::1", None), ("x/y:80", None), ("u@h:1", None),
                         ("h:70000", None)]:
        assert host_name(header) == name, header
    local = allowed_hosts("127.0.0.1")
    for ok in ("127.0.0.1:8501", "localhost:8501", "[::1]:8501", "localhost:9000"):
        assert local.accepts(ok), ok  # the port is not compared: any SSH tunnel works
    for bad in ("evil.example:8501", "evil.example", "192.168.1.20:8501", "", None,
                "127.0.0.1.evil.example:8501", "localhost.:x"):
        assert not local.accepts(bad), bad
    assert allowed_hosts("localhost", ["viewer.lab.example"]).accepts("viewer.lab.example")
    wide = allowed_hosts("0.0.0.0")
    assert wide.accepts("192.168.1.20:8501") and wide.accepts("[fe80::1]:8501")
    assert wide.accepts(socket.gethostname()) and not wide.accepts("evil.example:8501")


def test_launch_settings(monkeypatch):
    """What the server is started with: the guard in front, the caps, nothing extra."""
    st = pytest.importorskip("streamlit", reason="the viewer extra (streamlit) is not installed")
    from dcsm.viewer import app
    from dcsm.viewer.guard import HostGuard

    started = {}

    class FakeApp:
        def __init__(self, script, middleware):
            started["script"], started["middleware"] = script, middleware

        def run(self, config):
            started["config"] = config

    monkeypatch.setattr(st, "App", FakeApp)
    monkeypatch.setattr(app, "_VIEWER", None)
    app.launch(object(), host="127.0.0.1", port=8999)
    config = started["config"]
    assert config["server.maxUploadSize"] == MAX_UPLOAD_MB == 20
    assert config["server.address"] == "127.0.0.1" and config["server.port"] == 8999
    assert config["browser.gatherUsageStats"] is False
    assert config["server.enableXsrfProtection"] is True and config["server.enableCORS"] is True
    assert config["server.enableAgentApi"] is False
    assert config["server.enableStaticServing"] is False
    assert set(config["server.allowedHosts"]) == {"localhost", "127.0.0.1", "::1"}
    (guard,) = started["middleware"]
    assert guard.cls is HostGuard and guard.kwargs["rule"].accepts("localhost:1")
    assert started["script"].endswith("page.py")


# ----------------------------------------------------------------------------- the command
def test_serve_without_the_extra_is_one_line(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "streamlit", None)  # `import gradio` raises ImportError

    def never(*args, **kwargs):
        raise AssertionError("the model must not load without the extra")

    monkeypatch.setattr(Viewer, "from_name", never)
    code = cli.main(["serve", "--port", "7999"])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err == ("dcsm: error: the viewer needs Streamlit, which is not installed: "
                   f"{INSTALL_HINT}\n")


@pytest.mark.parametrize("port", ["0", "65536", "http"])
def test_serve_bad_port(capsys, port):
    assert cli.main(["serve", "--port", port]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--port" in err


def test_serve_refuses_a_taken_port_before_loading(monkeypatch, capsys):
    def never(*args, **kwargs):
        raise AssertionError("the model must not load for an address that cannot serve")

    monkeypatch.setattr(Viewer, "from_name", never)
    pytest.importorskip("streamlit", reason="the viewer extra (streamlit) is not installed")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert cli.main(["serve", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err == (f"dcsm: error: cannot listen on 127.0.0.1:{port}: Address already in use; "
                   "choose another --port\n")
    assert cli.main(["serve", "--host", "no-such-host.invalid"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dcsm: error: cannot listen on no-such-host.invalid: ")
    assert err.count("\n") == 1


def test_viewer_takes_the_label_set():
    voc = Viewer.from_name(labels="voc")
    assert "cat" in voc.class_names and "tabby" not in voc.class_names
    analysis = voc.analyse(load_picture(BUNDLED_IMAGE),
                           Settings(classes=("cat",), segmenter="none", method="gradcam"))
    assert [c.name for c in analysis.result.candidates] == ["cat"]


def test_serve_defaults_to_this_machine_only():
    args = cli.build_parser().parse_args(["serve"])
    assert args.host == "127.0.0.1" and args.port == 8501


# ----------------------------------------------------------------------------- the browser
def _browser() -> tuple[str, str]:
    """Chromium and its driver, or a skip saying what is missing."""
    pytest.importorskip("streamlit", reason="the viewer extra (streamlit) is not installed")
    pytest.importorskip("selenium", reason="selenium is not installed")
    chrome = next((p for p in map(shutil.which, ("chromium", "chromium-browser",
                                                 "google-chrome")) if p), None)
    driver = shutil.which("chromedriver")
    if chrome is None or driver is None:
        pytest.skip("no headless browser: install Debian's chromium and chromium-driver "
                    "(.ci/run does)")
    return chrome, driver


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def served():
    """``dcsm serve`` on a free port, as a user starts it; stopped after the tests."""
    pytest.importorskip("streamlit", reason="the viewer extra (streamlit) is not installed")
    port = _free_port()
    env = {**os.environ, "NO_PROXY": "127.0.0.1"}
    proc = subprocess.Popen([sys.executable, "-m", "dcsm", "serve", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"dcsm serve stopped: {proc.stdout.read()}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("dcsm serve did not listen within 120 s")
    yield f"http://127.0.0.1:{port}/"
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    proc.stdout.close()


@pytest.fixture(scope="module")
def server(served):
    """The served page, for the browser."""
    _browser()
    return served


def _ask(url: str, path: str, host: str, headers: dict[str, str] | None = None,
         ) -> tuple[int, dict[str, str], bytes]:
    """One HTTP GET to the server of ``url`` with the ``Host`` header ``host``."""
    import http.client

    where = urlparse(url)
    conn = http.client.HTTPConnection(where.hostname, where.port, timeout=30)
    try:
        conn.putrequest("GET", path, skip_host=True)
        for key, value in {"Host": host, **(headers or {})}.items():
            conn.putheader(key, value)
        conn.endheaders()
        answer = conn.getresponse()
        return answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read()
    finally:
        conn.close()


def test_the_server_answers_only_for_its_own_address(served):
    """DNS rebinding: a page at evil.example whose name resolves to 127.0.0.1 reaches the port,
    but its requests (HTTP and the page's WebSocket) name evil.example: refused."""
    port = urlparse(served).port
    websocket = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
                 "Sec-WebSocket-Key": base64.b64encode(b"0123456789abcdef").decode()}
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"):
        status, headers, body = _ask(served, "/", host)
        assert status == 200 and b"<html" in body.lower(), host
        assert headers["x-frame-options"] == "SAMEORIGIN"  # no other site frames the page
        status, _, _ = _ask(served, "/_stcore/stream", host,
                            {**websocket, "Origin": f"http://{host}"})
        assert status == 101, host  # the page's own WebSocket opens
    for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1.evil.example:{port}"):
        for path in ("/", "/_stcore/health", "/_stcore/host-config", "/static/index.html"):
            status, _, body = _ask(served, path, host)
            assert status == 403 and b"Host header refused" in body, (host, path)
        status, _, _ = _ask(served, "/_stcore/stream", host,
                            {**websocket, "Origin": f"http://{host}"})
        assert status == 403, host  # no WebSocket for the rebinding page


def test_the_server_serves_nothing_but_the_page(served):
    host = f"127.0.0.1:{urlparse(served).port}"
    assert _ask(served, "/_stcore/health", host)[0] == 200  # the page needs it
    for path in ("/_stcore/metrics", "/_stcore/metrics?families=all",
                 "/_stcore/agent/openapi.json", "/_stcore/agent/interact",
                 "/_stcore/agent/mcp", "/_stcore/script-health-check", "/auth/login",
                 "/oauth2callback"):
        status, _, body = _ask(served, path, host)
        assert status == 404 and b"cache_memory" not in body, path


@pytest.fixture(scope="module")
def browser():
    chrome, driver_path = _browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chrome
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1700", "--lang=en-US"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def test_the_page_in_a_browser(server, browser, viewer, tmp_path):
    from selenium.common.exceptions import (
        ElementClickInterceptedException,
        NoSuchElementException,
        StaleElementReferenceException,
    )
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    flaky = (StaleElementReferenceException, NoSuchElementException, IndexError,
             ElementClickInterceptedException)

    def wait(condition, seconds: float = 60):
        """Wait for ``condition``; elements replaced by a rerun meanwhile are looked up again."""
        return WebDriverWait(browser, seconds, ignored_exceptions=flaky).until(
            lambda d: condition())

    def act(action) -> None:
        """Do ``action`` once the page lets it (a rerun may replace the elements it uses)."""
        def attempt() -> bool:
            action()
            return True

        wait(attempt, 20)

    def find(css: str) -> list:
        return browser.find_elements(By.CSS_SELECTOR, css)

    def map_names() -> list[str]:
        return [img.get_attribute("alt") for img in find("#class-maps img")]

    def status() -> str:
        alerts = find('[data-testid="stAlert"]')
        return alerts[0].text if alerts else ""

    browser.get(server)
    wait(lambda: find(".st-key-explain button") and find('[data-testid="stImage"] img'))
    assert "chelsea_coffee.png" in find('[data-testid="stImage"]')[0].text  # preloaded

    # Run the bundled image with the model's own classes (the library's default preset).
    auto = [c.name for c in dcsm.explain(viewer.adapter, BUNDLED_IMAGE).candidates]
    act(lambda: find(".st-key-explain button")[0].click())
    wait(lambda: map_names() == auto)
    sizes = browser.execute_script(
        "return Array.from(document.querySelectorAll('#class-maps img'))"
        ".map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
    assert sizes == [[True, 448, 224]] * 2  # decoded pictures, the photo's size
    assert "Explained with dcsm" in status() and auto[0] in status()
    wait(lambda: find("#segmentation img") and len(find('[data-testid="stDownloadButton"]')) == 3)
    assert f"{auto[-1]}:" in find("#segmentation")[0].text
    assert [b.text for b in find('[data-testid="stDownloadButton"]')] == [
        "Download maps.npz", "Download labels.png", "Download summary.json"]

    # Pick other classes, explain them; then the opacity slider redraws without explaining.
    for name in PAIR:
        option = f"//*[@role='option'][normalize-space(.)='{name}']"

        def pick(name=name, option=option) -> None:
            box = find(".st-key-classes input")[0]
            box.click()
            box.send_keys(Keys.CONTROL, "a")
            box.send_keys(name)
            WebDriverWait(browser, 5).until(lambda d, option=option: d.find_elements(
                By.XPATH, option))
            browser.find_elements(By.XPATH, option)[0].click()

        act(pick)
        wait(lambda name=name: name in find(".st-key-classes")[0].text.split("\n"), 20)
    act(lambda: find(".st-key-classes input")[0].send_keys(Keys.ESCAPE))
    act(lambda: find(".st-key-explain button")[0].click())
    wait(lambda: map_names() == list(PAIR))
    if os.environ.get("DCSM_VIEWER_SCREENSHOT"):
        browser.save_screenshot(os.environ["DCSM_VIEWER_SCREENSHOT"])
    before = find("#class-maps img")[0].get_attribute("src")
    explained = status()
    act(lambda: ActionChains(browser).click(
        find(".st-key-opacity [role='group'] [data-rac][style*='left']")[0]).send_keys(
        Keys.END).perform())  # opacity 1
    wait(lambda: find("#class-maps img") and
         find("#class-maps img")[0].get_attribute("src") != before, 20)
    assert status() == explained  # redrawn, not explained again

    # A file that is not an image is refused with one line in the page.
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"this is text, not a picture")
    act(lambda: find(".st-key-upload input[type=file]")[0].send_keys(str(bad)))
    wait(lambda: "Error:" in status(), 30)
    assert "broken.png" in status() and "not a recognised image format" in status()

    # Nothing was fetched from anywhere but the local server.
    hosts = set()
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            url = urlparse(message["params"]["request"]["url"])
            if url.scheme in ("http", "https", "ws", "wss"):
                hosts.add(url.hostname)
    assert hosts == {"127.0.0.1"}
