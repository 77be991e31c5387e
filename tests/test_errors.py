"""first_line, one_line and failure_reason: how errors are worded in dcsm's one-line messages and
in the failure records of batch runs and evaluations."""

from __future__ import annotations

import pytest

from dcsm.batch import runner
from dcsm.errors import DcsmError, failure_reason, first_line, one_line
from dcsm.evaluation import compare


def test_first_line_of_an_exception():
    assert first_line(RuntimeError("CUDA out of memory.\nTried to allocate 2 GiB")) == \
        "CUDA out of memory."
    assert first_line(ValueError("\n\n   padded  \nmore")) == "padded"
    assert first_line(KeyError()) == "KeyError"
    assert first_line(OSError("  \n ")) == "OSError"
    assert first_line(ValueError(""), default="") == ""
    assert first_line(ValueError(""), default="no reason") == "no reason"


def test_one_line():
    assert one_line("  cannot read\n\tthe file  now ") == "cannot read the file now"
    assert one_line("\n \n") == ""


class _CustomError(Exception):
    pass


@pytest.mark.parametrize(("exc", "reason"), [
    # dcsm's own message is written for the user: all of it, on one line
    (DcsmError("cannot read image 'a.png':\n  not a recognised image format"),
     "cannot read image 'a.png': not a recognised image format"),
    (DcsmError(""), "DcsmError"),
    (MemoryError("Tried to allocate 2 GiB"), "out of memory"),
    (MemoryError(), "out of memory"),
    # another library's: its type and the first line of its message
    (RuntimeError("CUDA error: an illegal memory access\nCUDA kernel errors might be ..."),
     "RuntimeError: CUDA error: an illegal memory access"),
    (ValueError("\n  padded  \nmore"), "ValueError: padded"),
    (ValueError("ends with a colon:"), "ValueError: ends with a colon:"),
    (KeyError(), "KeyError"),
    (OSError("  \n "), "OSError"),
    (_CustomError("boom"), "_CustomError: boom"),
])
def test_failure_reason(exc, reason):
    assert failure_reason(exc) == reason


def test_the_batch_runner_and_the_evaluation_share_the_reason():
    assert runner.failure_reason is failure_reason and compare.failure_reason is failure_reason
    assert not hasattr(runner, "_reason") and not hasattr(compare, "_reason")
