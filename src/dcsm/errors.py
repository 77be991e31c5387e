"""The exception dcsm raises for problems a user can fix, its warning type, and the one-line
wording of errors: :func:`first_line` for quoting another exception in a message,
:func:`failure_reason` for recording why a step of a long run failed, :func:`one_line`."""

from __future__ import annotations


class DcsmError(Exception):
    """A user-facing error: bad input, unknown model, class or layer, bad numbers.

    The command-line front prints its message as one line on stderr and exits with status 2.
    """


class DcsmWarning(UserWarning):
    """A result the user should look at (a class whose distinct map is zero everywhere).

    The command-line front prints its message as one line on stderr and carries on.
    """


def first_line(exc: BaseException, default: str | None = None) -> str:
    """The first non-blank line of ``exc``'s message, stripped.

    For a message that is empty or blank: ``default``, or the exception's type name when
    ``default`` is None. Used wherever another library's error is quoted in a one-line message.
    """
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__ if default is None else default


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines included) made one space, and stripped."""
    return " ".join(text.split())


def failure_reason(exc: BaseException) -> str:
    """Why a step failed, in one line, for the record of a run that goes on past it (the
    ``failed`` records of ``dcsm batch``, the failures of ``dcsm evaluate``).

    A :class:`DcsmError` is worded for the user already: its whole message, on one line. A
    :class:`MemoryError`: ``"out of memory"``. Any other exception: its type and the first line
    of its message (``"RuntimeError: CUDA error: an illegal memory access"``), or the type
    alone for an empty message.
    """
    if isinstance(exc, DcsmError):
        return one_line(str(exc)) or type(exc).__name__
    if isinstance(exc, MemoryError):
        return "out of memory"
    first = first_line(exc, default="")
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
