"""The suite's own scheduling on two workers (``tests/conftest.py``): which tests share one."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import MULTI_PROCESS, ROOT, group_of


def _test_names(module: Path) -> set[str]:
    tree = ast.parse(module.read_text(encoding="utf-8"))
    return {node.name for node in tree.body
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}


def test_every_multi_process_test_exists():
    # a renamed test would silently leave the group and share the cores with another
    for nodeid in MULTI_PROCESS:
        path, name = nodeid.split("::")
        assert name in _test_names(ROOT / path), nodeid


def test_groups():
    assert group_of(MULTI_PROCESS[0]) == "multi-process"
    assert group_of(MULTI_PROCESS[0] + "[param]") == "multi-process"
    # a module with a module-scoped fixture runs on one worker
    assert group_of("tests/viewer/test_app.py::test_handlers") == "tests/viewer/test_app.py"
    assert group_of("tests/cli/test_segment.py::test_figure_command") == \
        "tests/cli/test_segment.py"
    # ... and with a multi-process test beside it, in that group
    assert group_of("tests/batch/test_runner.py::test_voc_split_source") == "multi-process"
    # any other test is scheduled alone
    assert group_of("tests/test_suite_groups.py::test_groups") == \
        "tests/test_suite_groups.py::test_groups"
    assert group_of("tests/no_such_module.py::test_x") == "tests/no_such_module.py::test_x"
