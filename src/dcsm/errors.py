"""The exception dcsm raises for problems a user can fix, its warning type, and
:func:`first_line` for quoting other exceptions in one line."""

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
