"""Back-propagation rules (plain, guided); a new rule is one new module here."""

from __future__ import annotations

from dcsm.errors import DcsmError
from dcsm.pipeline.rules.base import BackpropRule
from dcsm.pipeline.rules.guided import GuidedRule, guided_activation, guided_relu, warn_if_unguided
from dcsm.pipeline.rules.plain import PlainRule

RULES: dict[str, type[BackpropRule]] = {"plain": PlainRule, "guided": GuidedRule}


def get_rule(rule: str | BackpropRule) -> BackpropRule:
    """A rule instance from its name (``plain``, ``guided``) or an instance."""
    if isinstance(rule, BackpropRule):
        return rule
    try:
        return RULES[rule]()
    except KeyError:
        raise DcsmError(f"unknown back-propagation rule '{rule}'; known: "
                        + ", ".join(RULES)) from None


__all__ = ["RULES", "BackpropRule", "GuidedRule", "PlainRule", "get_rule", "guided_activation",
           "guided_relu", "warn_if_unguided"]
