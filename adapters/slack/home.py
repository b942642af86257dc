"""The App Home tab: published on `app_home_opened` and whenever one of the user's requests changes."""

from __future__ import annotations

import logging
from datetime import tzinfo

from adapters.slack import blocks
from adapters.slack.api import SlackApi, SlackCallError
from adapters.slack.background import Background
from bot.model import Identity
from bot.service import AccessService

__all__ = ["HomeTab"]

log = logging.getLogger("jitpass.slack.home")


class HomeTab:
    """Publishes a user's Home tab; a burst of changes for one user becomes one or two publishes."""

    def __init__(self, api: SlackApi, service: AccessService, tz: tzinfo, background: Background) -> None:
        self.api = api
        self.service = service
        self.tz = tz
        self.background = background
        self._running: set[str] = set()
        self._dirty: set[str] = set()

    def refresh(self, who: Identity) -> None:
        """Republish `who`'s Home tab soon (no-op for people on other platforms)."""
        if who.platform != "slack":
            return
        self._dirty.add(who.user_id)
        if who.user_id not in self._running:
            self._running.add(who.user_id)
            self.background.spawn(self._publish_while_dirty(who.user_id), name="home")

    async def _publish_while_dirty(self, user_id: str) -> None:
        try:
            while user_id in self._dirty:
                self._dirty.discard(user_id)
                await self.publish(user_id)
        finally:
            self._running.discard(user_id)

    async def publish(self, user_id: str) -> None:
        """Publish the Home tab now; failures are logged, never raised (it is a convenience view)."""
        requests = await self.service.my_requests(Identity("slack", user_id), open_only=False, limit=40)
        try:
            await self.api.call("views.publish", user_id=user_id, view=blocks.home_view(requests, self.tz))
        except SlackCallError as exc:
            log.warning("event=home_publish_failed user=%s error=%s", user_id, exc.error)
