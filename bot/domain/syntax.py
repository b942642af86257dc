"""How a person types a jitpass command on each platform, so hints can name it in their own words.

Slack has one slash command (`/access cancel R-…`, `/access <item> <why> <when>`); Teams reads plain
words (`cancel R-…`, `access <item> <why> <when>`). The core says which command it means (`Typed`);
the platform's `Syntax` spells it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SLACK", "TEAMS", "Hint", "Syntax", "Typed", "example"]


@dataclass(frozen=True)
class Typed:
    """A command as a person would type it, without the platform's prefix."""

    verb: str  # "cancel", "extend", ...; "" is a request itself (`<item> <why> <when>`)
    args: str = ""


@dataclass(frozen=True)
class Syntax:
    """One platform's spelling of commands."""

    prefix: str  # "/access" in Slack (the slash command), "" in Teams
    request_verb: str  # the word before `<item> <why> <when>`: "" in Slack, "access" in Teams

    def spell(self, typed: Typed) -> str:
        """`typed` as this platform's users type it."""
        return " ".join(w for w in (self.prefix, typed.verb or self.request_verb, typed.args) if w)


SLACK = Syntax(prefix="/access", request_verb="")
TEAMS = Syntax(prefix="", request_verb="access")


@dataclass(frozen=True)
class Hint:
    """A hint that names commands: `template` has one `{}` slot per command (our words only, never user text)."""

    template: str
    commands: tuple[Typed, ...] = ()

    def render(self, syntax: Syntax = SLACK) -> str:
        return self.template.format(*(syntax.spell(c) for c in self.commands))


def example(verb: str, args: str = "") -> Hint:
    """`Example: <the command>`."""
    return Hint("Example: {}", (Typed(verb, args),))
