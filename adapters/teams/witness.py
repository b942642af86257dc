"""The Teams chat witness: each signed audit checkpoint posted to a channel the database cannot reach.

The same short message as in Slack (`jitpass audit checkpoint seq N: `{…}``), posted through the Bot
Connector (`POST {serviceUrl}/v3/conversations/{channel id}/activities`). The Bot Connector has no way
to read a channel's messages back, so the verifier gets them the way a person would: copy them from
the channel into `jitpass audit verify --witness -` (docs/audit-format.md, "Chat witnesses").
Like the Slack witness it is not a durable chat effect: a failed post is recorded by the checkpointer
and the next checkpoint, which covers everything before it, is posted again.
"""

from __future__ import annotations

import asyncio

from microsoft_agents.activity import Activity, ActivityTypes

from adapters.teams.connector import Connector, ServiceUrlBook
from adapters.teams.refs import ConversationRef
from bot.domain.audit_signing import SignedCheckpoint
from bot.domain.errors import DeliveryError

__all__ = ["TeamsWitness"]


class TeamsWitness:
    name = "teams"

    def __init__(self, connector: Connector, service_urls: ServiceUrlBook, channel: str, *,
                 timeout: float = 10.0) -> None:
        self.connector = connector
        self.service_urls = service_urls
        self.channel = channel
        self.timeout = timeout

    async def publish(self, checkpoint: SignedCheckpoint) -> None:
        """Post the checkpoint to the channel; DeliveryError or the connector's HTTP error when that fails."""
        # Proactive messages need the serviceUrl Teams gave us in an inbound activity (kept in the store).
        service_url = self.service_urls.for_tenant("")
        if not service_url:
            raise DeliveryError("no Teams service URL is known yet: message the bot once in Teams")
        activity = Activity(type=ActivityTypes.message, text=checkpoint.chat_text())
        async with asyncio.timeout(self.timeout):
            await self.connector.send(ConversationRef(service_url, self.channel, ""), activity)
