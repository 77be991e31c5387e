"""first_line: how another library's error is quoted in dcsm's one-line messages."""

from __future__ import annotations

from dcsm.errors import first_line


def test_first_line_of_an_exception():
    assert first_line(RuntimeError("CUDA out of memory.\nTried to allocate 2 GiB")) == \
        "CUDA out of memory."
    assert first_line(ValueError("\n\n   padded  \nmore")) == "padded"
    assert first_line(KeyError()) == "KeyError"
    assert first_line(OSError("  \n ")) == "OSError"
    assert first_line(ValueError(""), default="") == ""
    assert first_line(ValueError(""), default="no reason") == "no reason"
