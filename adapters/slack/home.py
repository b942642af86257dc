"""The App Home tab: the user's active grants with their live TOTP code, waiting requests, history.

Published to people who have the tab: Slack sends `app_home_opened` each time a user switches to it,
and jitpass publishes then (so an opened tab is always current) and records a marker for that user in
the store (`Store.mark_home_opened`, kept for every worker process and across restarts). After that, a
change of one of their requests republishes their tab, and so does every TOTP period boundary while a
code is on it (one refresher task per user, started only by a publish Slack accepted), so the code shown
is the current one. A change for someone without a marker publishes nothing (no Web API call, no view
built): a new request, an approval, a decline, a timeout, and also the activation of a grant, whose code
is then not put on a screen nobody opened (the delivered message says to open the App Home for the
current code, and opening it publishes the code, audited). One exception, so that no code is ever left
on a tab: when an active grant ends (expired, revoked, done) the tab is republished even without a
marker, with no code on it at all (a tab published by an older version, before markers, may show one).

A press on a button of the tab (Cancel, Done, New code, …) also counts as having it, so a tab an older
version published is kept current from the first press on it.

Who has a marker (`OpenedTabs`): read from the store once (all markers), then kept in memory; a marker
this process writes is known at once. A marker another worker process wrote is learnt by reading only
the markers written since the last read, at most once per `SYNC_EVERY` seconds for the whole process,
and only when a change concerns someone not known to have the tab. So the request path costs no store
read per request (at most one a second, whatever the number of people), and a worker learns of another's
new marker at the first change after that second. A change in the second between someone opening the tab
in one worker and the next read in another is not published (the tab shows what the opening published,
until the next change or opening); a grant ending is published whatever the markers say.

The tab never shows a password: it only ever receives `AccessService.live_code`.

Auditing (`grant.code_shown`, via=app_home, written before the code leaves): opening the tab or
pressing New code there is a person looking, so every code published then is audited. The
periodic republishes in between keep that same view current and are not audited again. A grant
that reaches an opened tab on activation (the user is not looking at that moment, as far as jitpass
knows) is published with its code and audited right away, once per grant per process (`_audited`): the
code is then on a screen the user can see at any moment. After a restart the first publish audits
again: more events, never an unrecorded code.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, tzinfo

from adapters.slack import blocks
from adapters.slack.api import SlackApi, SlackCallError
from adapters.slack.background import Background
from bot.domain.errors import JitpassError
from bot.domain.model import AccessRequest, CodeView, Identity, Status
from bot.ports import ChatAccess, Clock, Store

__all__ = ["SYNC_EVERY", "VIA", "HomeTab", "OpenedTabs"]

log = logging.getLogger("jitpass.slack.home")

VIA = "app_home"  # the `via` of the tab's grant.code_shown events
PLATFORM = "slack"
# At most one read of new markers per this many seconds per process (only when someone unknown changes).
SYNC_EVERY = 1.0
# A read of new markers asks for those first written this long before the previous read started: covers
# a marker whose write committed after that read, and clocks of other hosts (MongoDB replicas) a little off.
SINCE_MARGIN = timedelta(seconds=60)
# Only reached from active: a grant that was on someone's tab with its code has ended.
ENDED = frozenset({Status.EXPIRED, Status.REVOKED})
# A failed publish while a refresher runs: it tries again after this long when no code says sooner.
RETRY_SECONDS = 30


class OpenedTabs:
    """Who has opened the Home tab: markers held in the store, known in memory (see the module docstring)."""

    def __init__(self, store: Store, clock: Clock, *, sync_every: float = SYNC_EVERY,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.clock = clock
        self.sync_every = sync_every
        self._monotonic = monotonic
        self._known: set[str] = set()  # have a marker (read from the store, or opened in this process)
        self._stored: set[str] = set()  # their marker is known to be in the store
        self._read_at: datetime | None = None  # the clock's time when the last successful read started
        self._synced: float | None = None  # monotonic time of the last read (tried), None: never
        self._lock = asyncio.Lock()
        self.reads = 0  # store reads of markers made (tests, the bench)

    def answer(self, user_id: str) -> bool | None:
        """True: has opened the tab; False: not as of a read less than `sync_every` ago; None: read first."""
        if user_id in self._known:
            return True
        if self._fresh():
            return False
        return None

    async def has_opened(self, user_id: str) -> bool:
        """Whether `user_id` has opened the tab, reading new markers first when the last read is too old."""
        if (known := self.answer(user_id)) is not None:
            return known
        await self.sync()
        return user_id in self._known

    async def sync(self, *, force: bool = False) -> None:
        """Read the markers written since the last read (all of them the first time); one read at a time."""
        async with self._lock:
            if self._fresh() and not force:
                return  # another caller read while this one waited
            started, since = self.clock.now(), self._read_at
            self._synced = self._monotonic()
            self.reads += 1
            try:
                found = await self.store.home_openers(PLATFORM, since=None if since is None else since - SINCE_MARGIN)
            except Exception as exc:  # store unavailable: not known for now (a grant's end is published anyway)
                log.warning("event=home_markers_read_failed error=%s", type(exc).__name__)
                return
            self._known |= found
            self._stored |= found
            self._read_at = started

    def remember(self, user_id: str) -> bool:
        """`user_id` has the tab: known here from now on; True if their marker still has to be written."""
        self._known.add(user_id)
        return user_id not in self._stored

    async def mark(self, user_id: str) -> None:
        """`user_id` opened the tab: known here at once, and recorded in the store unless it already is."""
        if not self.remember(user_id):
            return
        try:
            await self.store.mark_home_opened(PLATFORM, user_id, self.clock.now())
        except Exception as exc:  # this process knows; another learns at the next opening
            log.warning("event=home_marker_write_failed user=%s error=%s", user_id, type(exc).__name__)
            return
        self._stored.add(user_id)

    def _fresh(self) -> bool:
        return self._synced is not None and self._monotonic() - self._synced < self.sync_every


class HomeTab:
    """Publishes a user's Home tab; a burst of changes for one user becomes one or two publishes."""

    def __init__(self, api: SlackApi, service: ChatAccess, tz: tzinfo, background: Background,
                 tabs: OpenedTabs) -> None:
        self.api = api
        self.service = service
        self.tz = tz
        self.background = background
        self.tabs = tabs
        self._running: set[str] = set()
        self._dirty: set[str] = set()
        self._looking: set[str] = set()  # opened the tab since its last publish
        self._ended: set[str] = set()  # a grant of theirs ended since the last publish: publish, marker or not
        self._audited: dict[str, set[str]] = {}  # user -> grants whose code on the tab is already audited
        self._next_period: dict[str, int] = {}  # user -> seconds until the codes on the tab change
        self._refreshers: dict[str, asyncio.Task[None]] = {}
        # One publish at a time per user, so a view computed before an expiry cannot land after it.
        self._locks: dict[str, asyncio.Lock] = {}
        self.skipped = 0  # changes not published: nobody known to have the tab (tests, the bench)

    @property
    def refreshing(self) -> frozenset[str]:
        """Users whose Home tab is republished every TOTP period."""
        return frozenset(self._refreshers)

    def changed(self, request: AccessRequest) -> None:
        """One of the requester's requests changed: republish their tab if they have one, or if a grant ended."""
        who = request.requester
        if who.platform != PLATFORM:
            return
        if request.status in ENDED:
            self._ended.add(who.user_id)
        elif self.tabs.answer(who.user_id) is False:
            self.skipped += 1  # the hot path: no task, no store read, no Web API call
            return
        self._schedule(who.user_id)

    def refresh(self, who: Identity, *, opened: bool = False) -> None:
        """Republish `who`'s Home tab soon if they have one; `opened`: they are looking at it (no-op off Slack)."""
        if who.platform != PLATFORM:
            return
        if opened:
            self._looking.add(who.user_id)
        self._schedule(who.user_id)

    def pressed(self, user_id: str) -> None:
        """A button on `user_id`'s Home tab was pressed: they have the tab (perhaps one an older version
        published, before markers), so what the press changes is published there, and the marker written."""
        if self.tabs.remember(user_id):
            self.background.spawn(self.tabs.mark(user_id), name="home-marker")

    def _schedule(self, user_id: str) -> None:
        self._dirty.add(user_id)
        if user_id not in self._running:
            self._running.add(user_id)
            self.background.spawn(self._publish_while_dirty(user_id), name="home")

    async def _publish_while_dirty(self, user_id: str) -> None:
        try:
            # Grants are being ended right now (a burst of expiries): the store's time goes to that first.
            await self.service.expiries_done(timeout=10.0)
            while user_id in self._dirty:
                self._dirty.discard(user_id)
                opened = user_id in self._looking
                self._looking.discard(user_id)
                ended = user_id in self._ended
                self._ended.discard(user_id)
                if opened:
                    await self.tabs.mark(user_id)
                if opened or await self.tabs.has_opened(user_id):
                    await self.publish(user_id, opened=opened)
                elif ended:  # no marker: take off any code an older version put there, show none
                    await self.publish(user_id, codes=False)
                else:
                    self.skipped += 1
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
            await self._publish(who.user_id, opened=False, codes=True)

    async def publish(self, user_id: str, *, opened: bool = False, codes: bool = True) -> None:
        """Publish the Home tab now (`opened`: audit every code shown; `codes=False`: show none, audit none);
        Slack errors are logged, not raised."""
        async with self._lock(user_id):
            await self._publish(user_id, opened=opened, codes=codes)

    def _lock(self, user_id: str) -> asyncio.Lock:
        return self._locks.setdefault(user_id, asyncio.Lock())

    async def _publish(self, user_id: str, *, opened: bool, codes: bool) -> None:
        who = Identity(PLATFORM, user_id)
        requests = await self.service.my_requests(who, open_only=False, limit=40)
        active = [r for r in requests if r.status is Status.ACTIVE] if codes else []
        shown = await self._live_codes(who, active, opened=opened)
        # Only grants on the tab now: ended ones drop out, so this stays as small as the tab.
        self._audited[user_id] = set(shown)
        seconds_left = min((c.seconds_left for c in shown.values()), default=None)
        try:
            await self.api.call("views.publish", user_id=user_id,
                                view=blocks.home_view(requests, self.tz, codes=shown))
        except SlackCallError as exc:
            log.warning("event=home_publish_failed user=%s error=%s", user_id, exc.error)
            if user_id in self._refreshers:  # what is on the tab is unknown: the refresher tries again
                self._next_period[user_id] = RETRY_SECONDS if seconds_left is None else seconds_left
            return  # no refresher for a tab Slack did not take
        self._plan(user_id, seconds_left)

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
