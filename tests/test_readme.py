"""The README's Python example runs as written and prints what it claims."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def python_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_has_two_setup_commands_first():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    first_block = re.search(r"```sh\n(.*?)```", text, flags=re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.splitlines() if line.strip()]
    assert commands == ["make demo", "make test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_readme_python_example_runs(index, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    exec(compile(python_blocks()[index], f"README.md[python {index}]", "exec"), {})
    out = capsys.readouterr().out
    if index == 0:
        lines = dict(line.split(" ", 1) for line in out.strip().splitlines())
        cat_left = float(lines["tabby"].split()[-1])
        cup_left = float(lines["espresso"].split()[-1])
        assert cat_left > 0.95 and cup_left < 0.1
