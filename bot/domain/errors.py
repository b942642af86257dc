"""Domain errors. Each carries a message fit to show a user; none ever carries a secret.

JitpassError
├── InputError          bad input from a user or a file; `hint` shows a corrected example
│   ├── ParseError      the `<item> <why> <when>` text could not be understood
│   └── ImportFileError rows of an import file were rejected (row numbers in `problems`)
├── NotFound            unknown item or request (`suggestions` lists close names)
├── NotAllowed          the actor may not do this (not an approver, own request, not admin, ...)
├── Conflict            the request moved on already ("already approved by ...") or the name exists
│   └── ClaimTaken      the store refused a second open request / a second holder (`claim`: open | hold)
├── PolicyError         the policy file is invalid (names the key and the line)
├── VaultError          the master key is missing or wrong, or a ciphertext does not open
├── StoreError          the store cannot be opened, is corrupted, or refused a write
│   └── AuditWriteError an audit event could not be written: nothing was revealed
├── DeliveryError       a chat platform did not take a message
├── SecretSourceError   an outside secret source (1Password) could not give a secret: nothing was shown
└── StartupError        the server cannot start (port in use, unsafe settings): says what to change
"""

from __future__ import annotations

from collections.abc import Sequence

from bot.domain.syntax import SLACK, Hint, Syntax


class JitpassError(Exception):
    """Base for errors whose message can be shown to the person who caused them.

    A hint that names a command is a `Hint` (data), spelled in each platform's own syntax.
    """

    def __init__(self, message: str, *, hint: str | Hint = "") -> None:
        super().__init__(message)
        self.message = message
        self.hints = hint if isinstance(hint, Hint) else Hint(hint.replace("{", "{{").replace("}", "}}"))

    @property
    def hint(self) -> str:
        """The hint in Slack's syntax (the CLI and the tests read this)."""
        return self.hints.render(SLACK)

    def user_message(self, syntax: Syntax = SLACK) -> str:
        hint = self.hints.render(syntax)
        return f"{self.message}\n{hint}" if hint else self.message


class InputError(JitpassError):
    pass


class ParseError(InputError):
    pass


class ImportFileError(InputError):
    def __init__(self, message: str, problems: Sequence[str]) -> None:
        super().__init__(message + "".join(f"\n  {p}" for p in problems))
        self.problems = list(problems)


class NotFound(JitpassError):
    def __init__(self, message: str, suggestions: Sequence[str] = ()) -> None:
        self.suggestions = list(suggestions)
        hint = f"Did you mean: {', '.join(self.suggestions)}?" if self.suggestions else ""
        super().__init__(message, hint=hint)


class NotAllowed(JitpassError):
    pass


class Conflict(JitpassError):
    pass


class ClaimTaken(Conflict):
    """A store invariant refused the write: `claim` is "open" (one open request per person and item)
    or "hold" (one active grant per exclusive item). Nothing was written."""

    def __init__(self, claim: str, message: str) -> None:
        super().__init__(message)
        self.claim = claim


class PolicyError(JitpassError):
    pass


class VaultError(JitpassError):
    pass


class StoreError(JitpassError):
    pass


class AuditWriteError(StoreError):
    pass


class DeliveryError(JitpassError):
    pass


class SecretSourceError(JitpassError):
    """An outside secret source could not answer; `reason` says how (unreachable, unauthorized, forbidden,
    not_found, bad_item). The message is fit for the requester; the detail goes to the log only."""

    def __init__(self, message: str, *, source: str, reason: str, detail: str = "") -> None:
        super().__init__(message)
        self.source = source
        self.reason = reason
        self.detail = detail


class StartupError(JitpassError):
    pass
