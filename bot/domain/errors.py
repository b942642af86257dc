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
├── InfrastructureError  the operator's problem, not the user's: a chat user sees only an apology
│   ├── VaultError      the master key is missing or wrong, or a ciphertext does not open
│   └── StoreError      the store cannot be opened, is corrupted, or refused a write
│       └── AuditWriteError an audit event could not be written: nothing was revealed
├── DeliveryError       a chat platform did not take a message
├── SecretSourceError   an outside secret source (1Password) could not give a secret: nothing was shown
└── StartupError        the server cannot start (port in use, unsafe settings): says what to change

`field` names the form input a user error is about (FIELD_ITEM, ...), so a form can point at it.
Infrastructure errors reach chat users only as `wording.apology` with an error id from `new_error_id`
(the one format the CLI, Slack and Teams share); the detail goes to the log under that id.
"""

from __future__ import annotations

import logging
import secrets
import traceback
from collections.abc import Sequence

from bot.domain.syntax import SLACK, Hint, Syntax

FIELD_ITEM = "item"
FIELD_REASON = "reason"
FIELD_DURATION = "duration"
FIELD_START = "start"


def refused_for_good(status: int) -> bool:
    """Whether an HTTP status says the call itself is wrong, so the same call cannot succeed later:
    a 4xx (bad request, forbidden, not found, gone, too large), except 408 / 425 / 429 (try again later)."""
    return 400 <= status < 500 and status not in (408, 425, 429)


def new_error_id() -> str:
    """`E-` and six hex digits: what a user quotes to an admin, and what the log line carries."""
    return "E-" + secrets.token_hex(3).upper()


def log_incident(log: logging.Logger, where: str, exc: BaseException, **context: str | None) -> str:
    """Log an infrastructure or unexpected error under a new error id (returned for the apology).

    An infrastructure error's own message is logged (it names the store or key problem, never a secret);
    an unexpected one's is not (it might quote data): only its type, and its frames at DEBUG.
    """
    error_id = new_error_id()
    extra = "".join(f" {key}={value or '-'}" for key, value in context.items())
    if isinstance(exc, InfrastructureError):
        log.error("event=infrastructure_error error_id=%s where=%s%s error=%s detail=%r", error_id, where, extra,
                  type(exc).__name__, exc.message)
    else:
        log.error("event=unexpected_error error_id=%s where=%s%s error=%s", error_id, where, extra,
                  type(exc).__name__)
    log.debug("event=error_trace error_id=%s frames=%r", error_id, "".join(traceback.format_tb(exc.__traceback__)))
    return error_id


class JitpassError(Exception):
    """Base for errors whose message can be shown to the person who caused them.

    A hint that names a command is a `Hint` (data), spelled in each platform's own syntax.
    """

    def __init__(self, message: str, *, hint: str | Hint = "", field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
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


class InfrastructureError(JitpassError):
    """The store, the key ring or another part of the installation failed; the user did nothing wrong."""


class VaultError(InfrastructureError):
    pass


class StoreError(InfrastructureError):
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
