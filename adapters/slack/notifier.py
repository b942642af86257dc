"""SlackNotifier: renders what the core decided (bot.ports.Notifier) as Slack messages.

Where the secret goes: an ephemeral message through the slash command's `response_url` when
that URL will still work when the grant ends (Slack keeps one for 30 minutes and 5 uses, and we
need one use to wipe the secret), otherwise a DM, which `chat.update` can wipe at any time.
Ephemeral messages are never stored in channel history, which is why they are preferred.

Intent first: `delivery_target` names where the secret will go, and the core stores that before
`deliver_secret` sends it. A DM delivery carries message `metadata` with the request id, so when the
process died after Slack took the message but before its ts was saved, the next attempt (or the
wipe) finds it again with `conversations.history(include_all_metadata=true)` instead of posting a
second copy or leaving one behind. Every method returns `Sent` or `Failed`; none raises for Slack.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from adapters.slack import blocks
from adapters.slack.api import SlackApi, SlackCallError
from bot.domain.errors import refused_for_good
from bot.domain.model import AccessRequest, Item, Reveal
from bot.domain.policy import Policy
from bot.ports import Clock, Failed, NotifyResult, Sent

__all__ = ["DELIVERY_EVENT_TYPE", "RESPONSE_URL_MAX_USES", "RESPONSE_URL_TTL", "ResponseUrl", "SlackNotifier"]

log = logging.getLogger("jitpass.slack.notifier")

RESPONSE_URL_TTL = timedelta(minutes=30)
RESPONSE_URL_MAX_USES = 5
# Head-room for clock skew and the time a post takes.
_RESPONSE_URL_MARGIN = timedelta(minutes=2)
# Message metadata of a delivered secret: how a delivery whose ts was never saved is found again.
DELIVERY_EVENT_TYPE = "jitpass_delivery"
# ... and of an approval card in the leads channel: a card post retried after a crash finds it instead of
# posting a second card.
CARD_EVENT_TYPE = "jitpass_card"
# At most this many conversations.history pages are read looking for one of them.
_FIND_PAGES = 5
# How far back conversations.history looks for it (before the recorded intent time).
_FIND_MARGIN = timedelta(minutes=5)


@dataclass(frozen=True)
class ResponseUrl:
    """A `response_url` and how much of its life is left."""

    url: str
    issued_at: datetime
    uses: int = 0

    def usable(self, until: datetime, uses_needed: int = 1) -> bool:
        """Whether it still works at `until` for `uses_needed` more posts."""
        fresh = until <= self.issued_at + RESPONSE_URL_TTL - _RESPONSE_URL_MARGIN
        return fresh and self.uses + uses_needed <= RESPONSE_URL_MAX_USES

    def used(self) -> ResponseUrl:
        return ResponseUrl(self.url, self.issued_at, self.uses + 1)

    def to_refs(self) -> dict[str, Any]:
        return {"response_url": self.url, "issued_at": self.issued_at.isoformat(), "uses": self.uses}

    @classmethod
    def from_refs(cls, data: Any) -> ResponseUrl | None:
        """Read back what `to_refs` stored; None when absent or unreadable."""
        if not isinstance(data, Mapping) or not isinstance(data.get("response_url"), str):
            return None
        try:
            issued = datetime.fromisoformat(str(data.get("issued_at")))
        except ValueError:
            return None
        if issued.tzinfo is None:
            return None
        uses = data.get("uses")
        return cls(data["response_url"], issued, uses if isinstance(uses, int) else RESPONSE_URL_MAX_USES)


def command_url(refs: Mapping[str, Any]) -> ResponseUrl | None:
    """The `response_url` of the slash command that created the request."""
    return ResponseUrl.from_refs(refs.get("command"))


class SlackNotifier:
    """Posts and edits the approval card, delivers and wipes the secret, DMs the requester."""

    platform = "slack"

    def __init__(self, api: SlackApi, policy: Policy, clock: Clock) -> None:
        self.api = api
        self.policy = policy
        self.clock = clock
        self._dm_channels: dict[str, str] = {}
        self._dm_opening: dict[str, asyncio.Future[str]] = {}  # one conversations.open per person at a time
        self._emails: dict[str, str | None] = {}

    # -- the approval card -----------------------------------------------------------------------

    async def request_posted(self, request: AccessRequest, item: Item, *, attempt: int = 1) -> NotifyResult:
        """Post the approval card to the vault's Slack leads channel (once: a saved card is not posted again).

        The card carries the request id as message metadata. A later attempt (an earlier one may have
        reached Slack and died before its ts was saved) first looks for that card in the channel's history
        and, if it is there, edits it to the current state instead of posting a second one."""
        known = request.refs.get("card")
        if isinstance(known, Mapping) and known.get("ts"):
            return Sent(done=False)
        channel = self.policy.leads_channel(request.vault, "slack")
        if not channel:
            return Failed("no_leads_channel", permanent=True)
        card = blocks.approval_card(request, item, self.policy.timezone)
        try:
            found = None
            if attempt > 1:
                found = await self._find_by_metadata(channel, request.created_at - _FIND_MARGIN, CARD_EVENT_TYPE,
                                                     request.id)
            if found is not None:
                await self.api.call("chat.update", channel=channel, ts=found, **card.payload())
                log.info("event=card_posted request_id=%s channel=%s recovered=true", request.id, channel)
                return Sent({"card": {"channel": channel, "ts": found}})
            data = await self.api.call("chat.postMessage", channel=channel, unfurl_links=False, unfurl_media=False,
                                       metadata=_metadata(request, CARD_EVENT_TYPE), **card.payload())
        except SlackCallError as exc:
            return _failed(exc)
        log.info("event=card_posted request_id=%s channel=%s", request.id, channel)
        return Sent({"card": {"channel": str(data.get("channel") or channel), "ts": str(data.get("ts"))}})

    async def request_updated(self, request: AccessRequest, item: Item) -> NotifyResult:
        """Edit the card in place (chat.update on the stored channel and ts)."""
        card = request.refs.get("card")
        if not isinstance(card, Mapping) or not card.get("ts"):
            return Sent(done=False)
        message = blocks.approval_card(request, item, self.policy.timezone)
        try:
            await self.api.call("chat.update", channel=card["channel"], ts=card["ts"], **message.payload())
        except SlackCallError as exc:
            return _failed(exc)
        log.info("event=card_updated request_id=%s status=%s", request.id, request.status.value)
        return Sent()

    # -- the secret ------------------------------------------------------------------------------

    async def delivery_target(self, request: AccessRequest) -> NotifyResult:
        """Where the secret goes: the live delivery (an extension edits it), the command's response_url
        while it will still work at the end, else the requester's DM. Stored before anything is sent."""
        previous = _live_delivery(request)
        if previous is not None:
            return Sent()
        intent = request.refs.get("delivery_intent")
        tries = int(intent.get("tries", 0)) if isinstance(intent, Mapping) else 0
        url = command_url(request.refs)
        assert request.ends_at is not None
        if url is not None and url.usable(request.ends_at, uses_needed=2 + tries) and tries < 2:
            return Sent({"delivery_intent": {"via": "response_url", "tries": tries + 1, **url.to_refs()}})
        try:
            channel = await self.dm_channel(request.requester.user_id, request.refs)
        except SlackCallError as exc:
            return _failed(exc)
        return Sent({"dm_channel": channel, "delivery_intent": {
            "via": "dm", "channel": channel, "at": self.clock.now().isoformat(), "tries": tries + 1}})

    async def deliver_secret(self, request: AccessRequest, reveal: Reveal) -> NotifyResult:
        """Give the requester the secret privately, where `delivery_target` said."""
        message = blocks.secret_message(request, reveal, self.policy.timezone)
        try:
            previous = _live_delivery(request)
            if previous is not None and previous.get("via") == "dm":
                # A new window (extension) on a DM delivery: edit the same message.
                await self.api.call("chat.update", channel=previous["channel"], ts=previous["ts"],
                                    **message.payload())
                return Sent({"delivery": dict(previous)})
            earlier = ResponseUrl.from_refs(previous) if previous else None
            intent = request.refs.get("delivery_intent")
            intent = intent if isinstance(intent, Mapping) else {}
            if earlier is not None or intent.get("via") == "response_url":
                url = earlier or ResponseUrl.from_refs(intent)
                if url is None:
                    return Failed("bad_delivery_intent")
                # A retry replaces what an earlier attempt may have shown: one message, never two.
                replace = earlier is not None or int(intent.get("tries", 1)) > 1
                try:
                    await self.api.respond(url.url, {"response_type": "ephemeral", "replace_original": replace,
                                                     **message.payload()})
                except SlackCallError as exc:
                    if not exc.error.startswith(("http 404", "http 410")):
                        raise
                    # Slack says the URL is spent or expired: nothing was shown. Try the DM at once.
                    spent = {**url.to_refs(), "uses": RESPONSE_URL_MAX_USES}
                    gone: dict[str, Any] = {"delivery_intent": None}
                    gone |= {"delivery": {**spent, "via": "response_url", "ended": True}} if earlier else {
                        "command": spent}
                    return Failed(f"response_url:{exc.error[:12]}", retry_after=0, refs=gone)
                log.info("event=grant_delivered request_id=%s via=response_url", request.id)
                return Sent({"delivery": {"via": "response_url", **url.used().to_refs()}})
            channel = str(intent.get("channel") or "")
            if not channel:
                return Failed("no_delivery_intent")
            # Only a retry can find an earlier copy: the first attempt posts without looking.
            found = await self._find_delivery(request, channel, intent) if int(intent.get("tries", 1)) > 1 else None
            if found is not None:
                # Slack took an earlier attempt whose ts was never saved: edit that one.
                await self.api.call("chat.update", channel=channel, ts=found, **message.payload())
                log.info("event=grant_delivered request_id=%s via=dm recovered=true", request.id)
                return Sent({"delivery": {"via": "dm", "channel": channel, "ts": found}})
            data = await self.api.call("chat.postMessage", channel=channel, unfurl_links=False, unfurl_media=False,
                                       metadata=_metadata(request), **message.payload())
        except SlackCallError as exc:
            return _failed(exc)
        log.info("event=grant_delivered request_id=%s via=dm", request.id)
        return Sent({"delivery": {"via": "dm", "channel": str(data.get("channel") or channel),
                                  "ts": str(data.get("ts"))}})

    async def secret_revoked(self, request: AccessRequest, item: Item) -> NotifyResult:
        """Replace the delivered secret (and any open code window) with "access expired".

        `Sent(done=False)`: nothing was ever delivered. A DM whose ts was not saved is found by its
        metadata; an ephemeral message whose response_url can no longer be used is a permanent failure
        (nothing else can edit it), which the core raises as an alert."""
        ended = blocks.ended_message(request, item, self.policy.timezone)
        refs: dict[str, Any] = {}
        view_id = request.refs.get("code_view")
        if isinstance(view_id, str) and view_id:
            try:
                await self.api.call("views.update", view_id=view_id,
                                    view=blocks.ended_modal(request, item, self.policy.timezone))
            except SlackCallError as exc:  # usually: the user closed it already
                log.info("event=code_view_not_updated request_id=%s error=%s", request.id, exc.error)
            refs["code_view"] = None
        try:
            delivery = await self._delivery_to_wipe(request)
        except SlackCallError as exc:
            return _failed(exc)
        if delivery is None:
            return Sent(refs or None, done=False)
        try:
            if delivery.get("via") == "dm":
                await self.api.call("chat.update", channel=delivery["channel"], ts=delivery["ts"], **ended.payload())
            else:
                url = ResponseUrl.from_refs(delivery)
                if url is None or not url.usable(self.clock.now()):
                    log.warning("event=wipe_impossible request_id=%s via=response_url", request.id)
                    return Failed("response_url_expired", permanent=True)
                await self._wipe_ephemeral(url, ended)
                delivery = {**delivery, **url.used().to_refs()}
        except SlackCallError as exc:
            return _failed(exc)
        log.info("event=delivery_wiped request_id=%s via=%s", request.id, delivery.get("via"))
        return Sent({**refs, "delivery": {**delivery, "ended": True}})

    async def _delivery_to_wipe(self, request: AccessRequest) -> Mapping[str, Any] | None:
        delivery = request.refs.get("delivery")
        if isinstance(delivery, Mapping):
            return None if delivery.get("ended") else delivery
        intent = request.refs.get("delivery_intent")
        if not isinstance(intent, Mapping):
            return None
        if intent.get("via") == "response_url":
            return intent
        channel = str(intent.get("channel") or "")
        ts = await self._find_delivery(request, channel, intent) if channel else None
        return {"via": "dm", "channel": channel, "ts": ts} if ts else None

    async def _find_delivery(self, request: AccessRequest, channel: str, intent: Mapping[str, Any]) -> str | None:
        """The ts of this request's delivery in `channel`, found by its metadata (None: never posted)."""
        try:
            since = datetime.fromisoformat(str(intent.get("at"))) - _FIND_MARGIN
        except ValueError:
            since = self.clock.now() - RESPONSE_URL_TTL
        return await self._find_by_metadata(channel, since, DELIVERY_EVENT_TYPE, request.id)

    async def _find_by_metadata(self, channel: str, since: datetime, event_type: str, request_id: str) -> str | None:
        """The ts of the message in `channel` since `since` whose metadata names `request_id` (None: none)."""
        cursor = ""
        for _ in range(_FIND_PAGES):
            params: dict[str, Any] = {"channel": channel, "oldest": f"{since.timestamp():.6f}",
                                      "include_all_metadata": True, "limit": 200}
            if cursor:
                params["cursor"] = cursor
            data = await self.api.call("conversations.history", **params)
            for message in data.get("messages") or []:
                meta = message.get("metadata") if isinstance(message, Mapping) else None
                if not isinstance(meta, Mapping) or meta.get("event_type") != event_type:
                    continue
                payload = meta.get("event_payload")
                if isinstance(payload, Mapping) and payload.get("request_id") == request_id:
                    return str(message.get("ts"))
            next_page = data.get("response_metadata")
            cursor = str(next_page.get("next_cursor") or "") if isinstance(next_page, Mapping) else ""
            if not data.get("has_more") or not cursor:
                return None
        return None

    async def _wipe_ephemeral(self, url: ResponseUrl, message: blocks.Message) -> None:
        await self.api.respond(url.url, {"response_type": "ephemeral", "replace_original": True,
                                         **message.payload()})

    # -- telling the requester -------------------------------------------------------------------

    async def requester_told(self, request: AccessRequest, message: str, *, reply: bool = False) -> NotifyResult:
        """DM the requester an outcome (approved, declined with reason, timed out, ended, ...); a `reply` (the
        answer to a command acknowledged "queued") goes ephemerally through the command's response_url while
        it works, else to the DM too."""
        # A reply's words are the adapter's own Slack markup already; the core's sentences are plain text.
        text = blocks.truncate(message if reply else blocks.escape(message), blocks.MESSAGE_TEXT_MAX)
        url = command_url(request.refs) if reply else None
        if url is not None and url.usable(self.clock.now()):
            try:
                await self.api.respond(url.url, {"response_type": "ephemeral", "replace_original": False,
                                                 "text": text})
            except SlackCallError as exc:
                if not exc.error.startswith(("http 404", "http 410")):
                    return _failed(exc)
                # Spent or expired: nothing was shown; the DM below says it (and the delivery will not try it).
                request = dataclasses.replace(request, refs={**request.refs, "command": {
                    **url.to_refs(), "uses": RESPONSE_URL_MAX_USES}})
            else:
                return Sent({"command": url.used().to_refs()})
        try:
            channel = await self.dm_channel(request.requester.user_id, request.refs)
            await self.api.call("chat.postMessage", channel=channel, text=text)
        except SlackCallError as exc:
            return _failed(exc)
        refs: dict[str, Any] = {} if request.refs.get("dm_channel") == channel else {"dm_channel": channel}
        if url is not None and request.refs.get("command") != url.to_refs():
            refs["command"] = request.refs["command"]  # the spent response_url, recorded as spent
        return Sent(refs or None)

    async def leads_told(self, vault: str, message: str) -> NotifyResult:
        """Post a notice (direct use of a 1Password item) to the vault's Slack leads channel."""
        channel = self.policy.leads_channel(vault, "slack")
        if not channel:
            return Sent(done=False)
        try:
            await self.api.call("chat.postMessage", channel=channel, unfurl_links=False, unfurl_media=False,
                                text=blocks.truncate(blocks.escape(message), blocks.MESSAGE_TEXT_MAX))
        except SlackCallError as exc:
            return _failed(exc)
        return Sent()

    async def email_of(self, user_id: str) -> str | None:
        """The person's Slack profile e-mail (users.info; needs users:read.email), remembered; None if hidden."""
        if user_id not in self._emails:
            data = await self.api.call("users.info", user=user_id)
            user = data.get("user")
            profile = user.get("profile") if isinstance(user, dict) else None
            email = profile.get("email") if isinstance(profile, dict) else None
            self._emails[user_id] = str(email).lower() if isinstance(email, str) and "@" in email else None
        return self._emails[user_id]

    async def dm_channel(self, user_id: str, refs: Mapping[str, Any] | None = None) -> str:
        """The bot's DM channel with `user_id`: from the request's refs, remembered, or conversations.open."""
        known = (refs or {}).get("dm_channel")
        if isinstance(known, str) and known:
            self._dm_channels.setdefault(user_id, known)
            return known
        channel = self._dm_channels.get(user_id)
        if channel is not None:
            return channel
        opening = self._dm_opening.get(user_id)
        if opening is not None:  # the delivery and the "approved" message ask at once: open it once
            return await asyncio.shield(opening)
        opening = self._dm_opening[user_id] = asyncio.get_running_loop().create_future()
        try:
            data = await self.api.call("conversations.open", users=user_id)
            opened = data.get("channel")
            channel = str(opened.get("id")) if isinstance(opened, Mapping) else ""
            if not channel:
                raise SlackCallError("conversations.open", "no channel id")
        except BaseException as exc:
            opening.set_exception(exc if isinstance(exc, Exception) else SlackCallError("conversations.open",
                                                                                       "cancelled"))
            opening.exception()  # retrieved here: a failure nobody else awaited is not "never retrieved"
            raise
        finally:
            del self._dm_opening[user_id]
        self._dm_channels[user_id] = channel
        opening.set_result(channel)
        return channel


# Slack's refusals that retrying the same call cannot change (https://api.slack.com/methods/chat.postMessage,
# chat.update, conversations.open, conversations.history, views.publish: "Errors"). Anything else (ratelimited,
# internal_error, fatal_error, service_unavailable, request_timeout, a timeout, a dropped connection, HTTP 5xx,
# an error code not listed here) is transient: retried with backoff until the effect's budget is spent.
PERMANENT_SLACK_ERRORS = frozenset({
    "invalid_blocks", "invalid_blocks_format", "msg_too_long", "no_text", "too_many_attachments",
    "invalid_metadata_format", "invalid_metadata_schema", "metadata_too_large", "invalid_arguments",
    "channel_not_found", "not_in_channel", "is_archived", "channel_is_archived", "cannot_dm_bot",
    "user_not_found", "user_not_visible", "user_disabled", "message_not_found", "cant_update_message",
    "edit_window_closed", "restricted_action", "missing_scope", "no_permission", "not_allowed_token_type",
    "invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired", "ekm_access_denied",
    "team_access_not_granted", "access_denied", "method_deprecated", "deprecated_endpoint",
})


def permanent_slack_error(error: str) -> bool:
    """Whether Slack's answer `error` (an error code, or "http <status>..." when there was no JSON body)
    is a refusal for good rather than a failure worth retrying."""
    if error.startswith("http "):
        status = error[5:8]
        return status.isdigit() and refused_for_good(int(status))
    return error in PERMANENT_SLACK_ERRORS


def _failed(exc: SlackCallError) -> Failed:
    return Failed(f"{exc.method}:{exc.error}", retry_after=exc.retry_after, permanent=permanent_slack_error(exc.error))


def _live_delivery(request: AccessRequest) -> Mapping[str, Any] | None:
    previous = request.refs.get("delivery")
    return previous if isinstance(previous, Mapping) and not previous.get("ended") else None


def _metadata(request: AccessRequest, event_type: str = DELIVERY_EVENT_TYPE) -> dict[str, Any]:
    return {"event_type": event_type, "event_payload": {"request_id": request.id}}
