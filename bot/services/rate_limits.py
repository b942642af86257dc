"""Per-person rate limits for the actions one person can repeat quickly: requests, New code, reports.

Counted by the store (`Store.take_rate_token`: a sliding window per person and action, checked and
counted in one atomic step), so every replica on one store shares one budget: a person gets the limit,
not the limit times the number of replicas. There is no in-process fallback: a store that cannot count
cannot grant either, and the attempt fails closed with the store's error.

A burst of refusals is audited twice, not once per refusal: its first refusal at once (`access.refused`;
the store says which refusal is the first, whichever replica saw it), and, when the burst ends (the
person acts again, or may: the scheduler tick asks the store), one `access.refused_burst` with how many
attempts were refused in all, so the trail shows the volume without a flood writing an event per press."""

from __future__ import annotations

__all__ = ["ACTIONS", "action_of", "rate_key"]

ACTIONS = ("requests", "codes", "reports")
_SEPARATOR = "|"  # never in an action name; a person key may hold anything after it


def rate_key(action: str, person: str) -> str:
    """The store's key for one person's budget of one action."""
    return f"{action}{_SEPARATOR}{person}"


def action_of(key: str) -> str:
    """The action a `rate_key` counts."""
    return key.split(_SEPARATOR, 1)[0]
