"""`/access report …`: an admin's access report as an ephemeral summary, with the CSV and HTML as files.

The files are shared only in the admin's direct-message conversation with the bot (never the
channel the command was typed in, never a leads channel): a report names people and
credentials. The core refuses non-admins (auditing `access.refused`) and records
`report.generated` before anything leaves the process.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from adapters.slack import blocks
from adapters.slack.api import SharedFile, SlackApi, SlackCallError
from bot.domain import wording
from bot.domain.model import Identity
from bot.ports import ChatReports

__all__ = ["handle_report"]

log = logging.getLogger("jitpass.slack")


async def handle_report(reports: ChatReports, api: SlackApi, dm_channel: Callable[[str], Awaitable[str]],
                        who: Identity, text: str) -> str:
    """Build the report (admins only), share its files in the admin's DM; return the ephemeral reply."""
    report = await reports(who, text)
    files = [SharedFile(report.csv_filename, "Access report (CSV)", report.csv),
             SharedFile(report.html_filename, "Access report (HTML, open in a browser)", report.html)]
    heading = wording.report_reply(report.summary).heading
    try:
        channel = await dm_channel(who.user_id)
        file_ids = await api.share_files(channel, files, comment=blocks.escape(heading))
    except SlackCallError as exc:
        # The summary is still worth showing; the audit event says the report was produced.
        log.warning("event=report_files_failed user=%s method=%s error=%s", who.user_id, exc.method, exc.error)
        return blocks.report_text(report.summary, shared=False, problem=exc.error)
    log.info("event=report_files_shared user=%s channel=%s files=%s bytes=%d", who.user_id, channel,
             ",".join(file_ids), sum(len(f.data) for f in files))
    return blocks.report_text(report.summary, shared=True)
