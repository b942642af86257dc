"""Reports from chat: `/access report 30d` (Slack) and `report 30d` (Teams)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from bot.domain.errors import InputError, NotAllowed
from bot.domain.model import Identity
from bot.domain.report_data import AuditTrust, ChatReport
from bot.domain.request_text import MAX_LOOKBACK, parse_duration
from bot.ports import ReportSource
from bot.reports.build import build_report, parse_period, record_report
from bot.reports.html import render_html
from bot.reports.render import render_csv, render_summary

if TYPE_CHECKING:
    from bot.services.access import AccessService


# -- chat ------------------------------------------------------------------------------------------


CHAT_EXAMPLE = "Example: report 30d vault:acme"


def parse_chat_args(text: str) -> dict[str, str]:
    """`30d vault:acme item:acme-zendesk user:U123 from:2026-01-01 to:2026-01-31` (all optional)."""
    found: dict[str, str] = {}
    for word in text.split():
        key, sep, value = word.partition(":")
        key = key.lower().lstrip("-")
        if sep and key in {"vault", "item", "user", "from", "to"} and value:
            found[key] = value
        elif not sep and "since" not in found:
            found["since"] = word
        else:
            raise InputError(f"I don't understand {word!r} in a report request.", hint=CHAT_EXAMPLE)
    if "since" in found:
        try:
            parse_duration(found["since"], maximum=MAX_LOOKBACK)
        except InputError:
            raise InputError(f"{found['since']!r} is not a period such as 30d.", hint=CHAT_EXAMPLE) from None
    return found


async def chat_report(service: AccessService, actor: Identity, args_text: str, *,
                      source: ReportSource | None = None,
                      trust: Callable[[], Awaitable[AuditTrust | None]] | None = None) -> ChatReport:
    """`/access report 30d`: admins only; refusals are audited. Records `report.generated`.

    `trust` (Runtime.audit_trust) adds the signed checkpoint and the witness verdict, as in `jitpass report`."""
    if not service.policy.is_admin(actor):
        await service.record_refusal(actor, "report without being an admin")
        raise NotAllowed("Only jitpass admins can produce access reports.")
    await service.check_rate(actor, "reports")
    args = parse_chat_args(args_text)
    now = service.clock.now()
    since, until = parse_period(now, service.policy.timezone, since=args.get("since"), start=args.get("from"),
                                end=args.get("to"))
    report = await build_report(source or service.store, service.policy, now, since, until,
                                vault=args.get("vault"), item=args.get("item"), user=args.get("user"))
    if trust is not None:
        report = replace(report, trust=await trust())
    await record_report(service.store, actor, report, "chat")
    stem = f"jitpass-report-{report.since:%Y%m%d}-{report.until:%Y%m%d}"
    return ChatReport(summary=render_summary(report), csv=render_csv(report).encode(),
                      html=render_html(report).encode(), csv_filename=f"{stem}.csv", html_filename=f"{stem}.html")
