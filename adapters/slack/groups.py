"""Who is in which Slack user group (the policy's `slack_groups`), and each user's verified e-mail
(one person across platforms: policy `person_of`)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from adapters.slack.api import SlackApi, SlackCallError
from bot.domain.model import Identity

__all__ = ["EMAIL_CACHE_SECONDS", "GROUP_CACHE_SECONDS", "GroupDirectory"]

log = logging.getLogger("jitpass.slack.groups")

# Long enough to spare Slack a call per button press, short enough that removing someone
# from a user group takes effect within a minute.
GROUP_CACHE_SECONDS = 60.0
# A user's e-mail changes rarely; a changed one counts within five minutes.
EMAIL_CACHE_SECONDS = 300.0


class GroupDirectory:
    """Resolves a Slack user's memberships among the user groups the policy names."""

    def __init__(self, api: SlackApi, group_ids: frozenset[str], *, ttl: float = GROUP_CACHE_SECONDS,
                 email_ttl: float = EMAIL_CACHE_SECONDS, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.api = api
        self.group_ids = group_ids
        self.ttl = ttl
        self.email_ttl = email_ttl
        self.monotonic = monotonic
        self._members: dict[str, tuple[float, frozenset[str]]] = {}
        self._emails: dict[str, tuple[float, str]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def identity(self, user_id: str, display: str = "", *, groups: bool = True) -> Identity:
        """A Slack identity with its verified e-mail and (when asked) its groups resolved."""
        found = await self.groups_of(user_id) if groups else frozenset()
        return Identity("slack", user_id, display, groups=found, email=await self.verified_email(user_id))

    async def verified_email(self, user_id: str) -> str:
        """The user's confirmed profile e-mail (users.info, with users:read.email), lower case; "" when
        Slack does not say or cannot be asked: then the account is only itself (fail closed)."""
        cached = self._emails.get(user_id)
        if cached is not None and cached[0] > self.monotonic():
            return cached[1]
        try:
            data = await self.api.call("users.info", user=user_id)
        except SlackCallError as exc:
            log.warning("event=email_lookup_failed user=%s error=%s", user_id, exc.error)
            return ""  # not cached: the next action asks again
        user = data.get("user")
        user = user if isinstance(user, dict) else {}
        profile = user.get("profile")
        email = profile.get("email") if isinstance(profile, dict) else None
        # Only a confirmed address is evidence of who someone is: anyone can type one into a profile.
        verified = (str(email).strip().lower() if isinstance(email, str) and "@" in email
                    and user.get("is_email_confirmed") is True and not user.get("deleted") else "")
        self._emails[user_id] = (self.monotonic() + self.email_ttl, verified)
        return verified

    async def groups_of(self, user_id: str) -> frozenset[str]:
        """The policy's group ids that `user_id` belongs to; a failed lookup counts as not a member."""
        found: set[str] = set()
        for group_id in sorted(self.group_ids):
            members = await self._members_of(group_id)
            if user_id in members:
                found.add(group_id)
        return frozenset(found)

    async def _members_of(self, group_id: str) -> frozenset[str]:
        cached = self._members.get(group_id)
        if cached is not None and cached[0] > self.monotonic():
            return cached[1]
        lock = self._locks.setdefault(group_id, asyncio.Lock())
        async with lock:  # one lookup per group at a time, however many presses arrive together
            cached = self._members.get(group_id)
            if cached is not None and cached[0] > self.monotonic():
                return cached[1]
            try:
                data = await self.api.call("usergroups.users.list", usergroup=group_id)
            except SlackCallError as exc:
                # Fail closed and do not cache: the next press asks again.
                log.warning("event=usergroup_lookup_failed group=%s error=%s", group_id, exc.error)
                return frozenset()
            users = data.get("users")
            members = frozenset(u for u in users if isinstance(u, str)) if isinstance(users, list) else frozenset()
            self._members[group_id] = (self.monotonic() + self.ttl, members)
            return members
