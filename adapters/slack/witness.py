"""The Slack chat witness: each signed audit checkpoint posted to a channel the database cannot reach.

A short message (`jitpass audit checkpoint seq N: `{…}``) whose text `jitpass audit verify --witness -`
reads back. Posted directly through the Web API (not the durable chat effects: those belong to an
access request); a failed post is recorded by the checkpointer and the next checkpoint, which covers
everything before it, is posted again.
"""

from __future__ import annotations

from adapters.slack.api import SlackApi
from bot.domain.audit_signing import SignedCheckpoint

__all__ = ["SlackWitness"]


class SlackWitness:
    name = "slack"

    def __init__(self, api: SlackApi, channel: str) -> None:
        self.api = api
        self.channel = channel

    async def publish(self, checkpoint: SignedCheckpoint) -> None:
        """chat.postMessage; SlackCallError when Slack refuses."""
        await self.api.call("chat.postMessage", channel=self.channel, text=checkpoint.chat_text())
