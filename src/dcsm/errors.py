"""The exception dcsm raises for problems a user can fix, and its warning type."""

from __future__ import annotations


class DcsmError(Exception):
    """A user-facing error: bad input, unknown model, class or layer, bad numbers.

    The command-line front prints its message as one line on stderr and exits with status 2.
    """


class DcsmWarning(UserWarning):
    """A result the user should look at (a class whose distinct map is zero everywhere).

    The command-line front prints its message as one line on stderr and carries on.
    """
