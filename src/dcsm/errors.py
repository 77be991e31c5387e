"""The one exception type that dcsm raises for problems a user can fix."""

from __future__ import annotations


class DcsmError(Exception):
    """A user-facing error: bad input, unknown model, class or layer, bad numbers.

    The command-line front prints its message as one line on stderr and exits with status 2.
    """
