"""SlackNotifier: renders what the core decided (bot.ports.Notifier) as Slack messages.

Where the secret goes: an ephemeral message through the slash command's `response_url` when
that URL will still work when the grant ends (Slack keeps one for 30 minutes and 5 uses, and we
need one use to wipe the secret), otherwise a DM, which `chat.update` can wipe at any time.
Ephemeral messages are never stored in channel history, which is why they are preferred.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from adapters.slack import blocks
from adapters.slack.api import SlackApi, SlackCallError
from adapters.slack.home import HomeTab
from bot.domain.errors import DeliveryError
from bot.domain.model import AccessRequest, Item, Reveal
from bot.domain.policy import Policy
from bot.ports import Clock

__all__ = ["RESPONSE_URL_MAX_USES", "RESPONSE_URL_TTL", "ResponseUrl", "SlackNotifier"]

log = logging.getLogger("jitpass.slack.notifier")

RESPONSE_URL_TTL = timedelta(minutes=30)
RESPONSE_URL_MAX_USES = 5
# Head-room for clock skew and the time a post takes.
_RESPONSE_URL_MARGIN = timedelta(minutes=2)


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

    def __init__(self, api: SlackApi, policy: Policy, clock: Clock, home: HomeTab) -> None:
        self.api = api
        self.policy = policy
        self.clock = clock
        self.home = home
        self._dm_channels: dict[str, str] = {}
        self._emails: dict[str, str | None] = {}

    # -- the approval card -----------------------------------------------------------------------

    async def request_posted(self, request: AccessRequest, item: Item) -> Mapping[str, Any] | None:
        """Post the approval card to the vault's Slack leads channel."""
        self.home.refresh(request.requester)
        channel = self.policy.leads_channel(request.vault, "slack")
        if not channel:
            raise DeliveryError(f"No Slack leads channel is configured for vault '{request.vault}'.")
        card = blocks.approval_card(request, item, self.policy.timezone)
        data = await self.api.call("chat.postMessage", channel=channel, unfurl_links=False, unfurl_media=False,
                                   **card.payload())
        log.info("event=card_posted request_id=%s channel=%s", request.id, channel)
        return {"card": {"channel": str(data.get("channel") or channel), "ts": str(data.get("ts"))}}

    async def request_updated(self, request: AccessRequest, item: Item) -> Mapping[str, Any] | None:
        """Edit the card in place (chat.update on the stored channel and ts)."""
        self.home.refresh(request.requester)
        card = request.refs.get("card")
        if not isinstance(card, Mapping) or not card.get("ts"):
            return None
        message = blocks.approval_card(request, item, self.policy.timezone)
        await self.api.call("chat.update", channel=card["channel"], ts=card["ts"], **message.payload())
        log.info("event=card_updated request_id=%s status=%s", request.id, request.status.value)
        return None

    # -- the secret ------------------------------------------------------------------------------

    async def deliver_secret(self, request: AccessRequest, reveal: Reveal) -> Mapping[str, Any] | None:
        """Give the requester the secret privately; raises when nothing could be delivered."""
        self.home.refresh(request.requester)
        message = blocks.secret_message(request, reveal, self.policy.timezone)
        previous = request.refs.get("delivery")
        previous = previous if isinstance(previous, Mapping) and not previous.get("ended") else None
        if previous and previous.get("via") == "dm":
            # A new window (extension) on a DM delivery: edit the same message.
            await self.api.call("chat.update", channel=previous["channel"], ts=previous["ts"], **message.payload())
            return {"delivery": dict(previous)}
        earlier = ResponseUrl.from_refs(previous) if previous else None
        url = earlier or command_url(request.refs)
        if url is not None and url.usable(reveal.ends_at, uses_needed=2):
            try:
                await self.api.respond(url.url, {"response_type": "ephemeral", "replace_original": earlier is not None,
                                                 **message.payload()})
                log.info("event=grant_delivered request_id=%s via=response_url", request.id)
                return {"delivery": {"via": "response_url", **url.used().to_refs()}}
            except SlackCallError as exc:
                log.warning("event=response_url_failed request_id=%s error=%s", request.id, exc.error)
        if earlier is not None:
            await self._wipe_ephemeral(request, earlier, "Your access continues in a direct message from jitpass.")
        channel = await self.dm_channel(request.requester.user_id)
        data = await self.api.call("chat.postMessage", channel=channel, unfurl_links=False, unfurl_media=False,
                                   **message.payload())
        log.info("event=grant_delivered request_id=%s via=dm", request.id)
        return {"delivery": {"via": "dm", "channel": str(data.get("channel") or channel), "ts": str(data.get("ts"))}}

    async def secret_revoked(self, request: AccessRequest, item: Item) -> Mapping[str, Any] | None:
        """Replace the delivered secret (and any open code window) with "access expired"."""
        self.home.refresh(request.requester)
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
        delivery = request.refs.get("delivery")
        if not isinstance(delivery, Mapping) and request.revealed:
            # Revealed but no delivery recorded: the process stopped between posting the secret and
            # saving where it went. The slash command's URL is where it most likely went.
            url = command_url(request.refs)
            delivery = {"via": "response_url", **url.used().to_refs()} if url else None
        if not isinstance(delivery, Mapping) or delivery.get("ended"):
            return refs or None
        if delivery.get("via") == "dm":
            await self.api.call("chat.update", channel=delivery["channel"], ts=delivery["ts"], **ended.payload())
            refs["delivery"] = {**delivery, "ended": True}
        else:
            url = ResponseUrl.from_refs(delivery)
            if url is None:
                return refs or None
            refs["delivery"] = {**delivery, **url.used().to_refs(), "ended": True}
            try:
                await self._wipe_ephemeral(request, url, ended.text, ended)
            except DeliveryError as exc:
                # Nothing else can edit an ephemeral message (it vanishes on reload); record and move on.
                log.warning("event=wipe_failed request_id=%s error=%s", request.id, exc.message)
                refs["delivery"]["wipe_failed"] = True
        log.info("event=delivery_wiped request_id=%s via=%s", request.id, delivery.get("via"))
        return refs

    async def _wipe_ephemeral(self, request: AccessRequest, url: ResponseUrl, text: str,
                              message: blocks.Message | None = None) -> None:
        if not url.usable(self.clock.now()):
            raise DeliveryError(f"The delivered message of {request.id} can no longer be replaced.")
        payload = message.payload() if message else {"text": blocks.escape(text)}
        await self.api.respond(url.url, {"response_type": "ephemeral", "replace_original": True, **payload})

    # -- telling the requester -------------------------------------------------------------------

    async def requester_told(self, request: AccessRequest, message: str) -> None:
        """DM the requester an outcome (approved, declined with reason, timed out, ended, ...)."""
        self.home.refresh(request.requester)
        channel = await self.dm_channel(request.requester.user_id)
        await self.api.call("chat.postMessage", channel=channel, text=blocks.truncate(blocks.escape(message),
                                                                                      blocks.MESSAGE_TEXT_MAX))

    async def leads_told(self, vault: str, message: str) -> None:
        """Post a notice (direct use of a 1Password item) to the vault's Slack leads channel."""
        channel = self.policy.leads_channel(vault, "slack")
        if not channel:
            return
        await self.api.call("chat.postMessage", channel=channel, unfurl_links=False, unfurl_media=False,
                            text=blocks.truncate(blocks.escape(message), blocks.MESSAGE_TEXT_MAX))

    async def email_of(self, user_id: str) -> str | None:
        """The person's Slack profile e-mail (users.info; needs users:read.email), remembered; None if hidden."""
        if user_id not in self._emails:
            data = await self.api.call("users.info", user=user_id)
            user = data.get("user")
            profile = user.get("profile") if isinstance(user, dict) else None
            email = profile.get("email") if isinstance(profile, dict) else None
            self._emails[user_id] = str(email).lower() if isinstance(email, str) and "@" in email else None
        return self._emails[user_id]

    async def dm_channel(self, user_id: str) -> str:
        """The bot's DM channel with `user_id` (conversations.open, remembered)."""
        channel = self._dm_channels.get(user_id)
        if channel is None:
            data = await self.api.call("conversations.open", users=user_id)
            opened = data.get("channel")
            channel = str(opened.get("id")) if isinstance(opened, Mapping) else ""
            if not channel:
                raise SlackCallError("conversations.open", "no channel id")
            self._dm_channels[user_id] = channel
        return channel
