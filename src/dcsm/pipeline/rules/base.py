"""Back-propagation rules: how gradients pass through a model's non-linearities.

A rule is a context manager factory. Inside ``with rule.active():`` the model's forward records a
graph whose backward follows the rule; on leaving the block, for any reason, everything the rule
changed is undone. Rules never modify the model object itself.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator


class BackpropRule(ABC):
    """Base class of back-propagation rules."""

    name: str = "rule"

    @abstractmethod
    def _enter(self) -> contextlib.AbstractContextManager[None]:
        """The context in which a forward pass records this rule's backward."""

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Apply the rule for the duration of the block; always undone afterwards."""
        with self._enter():
            yield

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
