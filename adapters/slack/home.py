"""The App Home tab: the user's active grants with their live TOTP code, waiting requests, history.

Published on `app_home_opened`, whenever one of the user's requests changes, and at every TOTP
period boundary while a code is on it (one refresher task per user), so the code shown is the
current one. The tab never shows a password: it only ever receives `AccessService.live_code`.

Auditing (`grant.code_shown`, via=app_home, written before the code leaves): opening the tab or
pressing New code there is a person looking, so every code published then is audited. The
periodic republishes in between keep that same view current and are not audited again. A grant
that reaches the tab before the user opened it (on activation) is published with its code and
audited right away, once per grant per process (`_audited`): the code is then on a screen the
user can see at any moment, and holding it back would leave the tab without a code until Slack
next sends `app_home_opened`, which it does only when the user switches to the tab. After a
restart the first publish audits again: more events, never an unrecorded code.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import tzinfo

from adapters.slack import blocks
from adapters.slack.api import SlackApi, SlackCallError
from adapters.slack.background import Background
from bot.domain.errors import JitpassError
from bot.domain.model import AccessRequest, CodeView, Identity, Status
from bot.ports import ChatAccess

__all__ = ["VIA", "HomeTab"]

log = logging.getLogger("jitpass.slack.home")

VIA = "app_home"  # the `via` of the tab's grant.code_shown events


class HomeTab:
    """Publishes a user's Home tab; a burst of changes for one user becomes one or two publishes."""

    def __init__(self, api: SlackApi, service: ChatAccess, tz: tzinfo, background: Background) -> None:
        self.api = api
        self.service = service
        self.tz = tz
        self.background = background
        self._running: set[str] = set()
        self._dirty: set[str] = set()
        self._looking: set[str] = set()  # opened the tab since its last publish
        self._audited: dict[str, set[str]] = {}  # user -> grants whose code on the tab is already audited
        self._next_period: dict[str, int] = {}  # user -> seconds until the codes on the tab change
        self._refreshers: dict[str, asyncio.Task[None]] = {}
        # One publish at a time per user, so a view computed before an expiry cannot land after it.
        self._locks: dict[str, asyncio.Lock] = {}

    @property
    def refreshing(self) -> frozenset[str]:
        """Users whose Home tab is republished every TOTP period."""
        return frozenset(self._refreshers)

    def refresh(self, who: Identity, *, opened: bool = False) -> None:
        """Republish `who`'s Home tab soon; `opened`: they are looking at it (no-op off Slack)."""
        if who.platform != "slack":
            return
        if opened:
            self._looking.add(who.user_id)
        self._dirty.add(who.user_id)
        if who.user_id not in self._running:
            self._running.add(who.user_id)
            self.background.spawn(self._publish_while_dirty(who.user_id), name="home")

    async def _publish_while_dirty(self, user_id: str) -> None:
        try:
            # Grants are being ended right now (a burst of expiries): the store's time goes to that first.
            await self.service.expiries_done(timeout=10.0)
            while user_id in self._dirty:
                self._dirty.discard(user_id)
                opened = user_id in self._looking
                self._looking.discard(user_id)
                await self.publish(user_id, opened=opened)
        finally:
            self._running.discard(user_id)

    async def refresh_now(self, user_id: str) -> None:
        """One periodic republish, now: current codes, no new audit for codes already audited."""
        await self.publish(user_id)

    async def show_new_code(self, who: Identity, request_id: str) -> None:
        """New code pressed on the tab: audit that grant's code (refusals raise), then republish."""
        async with self._lock(who.user_id):
            await self.service.live_code(request_id, who, via=VIA, audit=True)
            self._audited.setdefault(who.user_id, set()).add(request_id)
            await self._publish(who.user_id, opened=False)

    async def publish(self, user_id: str, *, opened: bool = False) -> None:
        """Publish the Home tab now (`opened`: audit every code shown); Slack errors are logged, not raised."""
        async with self._lock(user_id):
            await self._publish(user_id, opened=opened)

    def _lock(self, user_id: str) -> asyncio.Lock:
        return self._locks.setdefault(user_id, asyncio.Lock())

    async def _publish(self, user_id: str, *, opened: bool) -> None:
        who = Identity("slack", user_id)
        requests = await self.service.my_requests(who, open_only=False, limit=40)
        codes = await self._live_codes(who, [r for r in requests if r.status is Status.ACTIVE], opened=opened)
        # Only grants on the tab now: ended ones drop out, so this stays as small as the tab.
        self._audited[user_id] = set(codes)
        try:
            await self.api.call("views.publish", user_id=user_id,
                                view=blocks.home_view(requests, self.tz, codes=codes))
        except SlackCallError as exc:
            log.warning("event=home_publish_failed user=%s error=%s", user_id, exc.error)
        self._plan(user_id, min((c.seconds_left for c in codes.values()), default=None))

    async def _live_codes(self, who: Identity, active: Sequence[AccessRequest], *,
                          opened: bool) -> dict[str, CodeView]:
        audited = self._audited.get(who.user_id, set())
        codes: dict[str, CodeView] = {}
        for request in active:
            try:
                code = await self.service.live_code(request.id, who, via=VIA,
                                                    audit=opened or request.id not in audited)
            except JitpassError:  # ended a moment ago, or its item is gone: listed without a code
                continue
            except Exception as exc:  # e.g. the audit event could not be written: fail closed, no code
                log.warning("event=home_code_withheld request_id=%s error=%s", request.id, type(exc).__name__)
                continue
            if code is not None:
                codes[request.id] = code
        return codes

    def _plan(self, user_id: str, seconds_left: int | None) -> None:
        """Keep one refresher for a user while codes are shown; stop it when none are."""
        task = self._refreshers.get(user_id)
        if seconds_left is None:
            self._next_period.pop(user_id, None)
            if task is not None:
                del self._refreshers[user_id]
                if task is not asyncio.current_task():  # the refresher itself just leaves its loop
                    task.cancel()
            return
        self._next_period[user_id] = seconds_left
        if task is None:
            self._refreshers[user_id] = self.background.spawn(self._refresh_every_period(user_id),
                                                              name="home-refresh", lasting=True)

    async def _refresh_every_period(self, user_id: str) -> None:
        """Sleep to the next TOTP period boundary, republish, repeat while codes are shown."""
        me = asyncio.current_task()
        while self._refreshers.get(user_id) is me and (delay := self._next_period.get(user_id)) is not None:
            # seconds_left counts whole seconds from a time with a fraction: waking at most that
            # fraction after the boundary, never before it.
            await asyncio.sleep(delay)
            try:
                await self.refresh_now(user_id)
            except Exception as exc:  # e.g. the store is briefly unavailable: try again next period
                log.warning("event=home_refresh_failed user=%s error=%s", user_id, type(exc).__name__)
