"""The Teams part of a request's adapter-owned `refs`: where its cards live and how to reach its requester.

Each reference sits under its own top-level key so that the core's merge-by-key
(`AccessService.save_refs`) never lets one notification overwrite another's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["DELIVERY", "LEADS", "PERSONAL", "REQUESTER", "VERSION", "ConversationRef", "RequesterRef"]

VERSION = "teams.v"  # bump when the shape of the references below changes
REQUESTER = "teams.requester"  # where the request was typed, and who typed it
PERSONAL = "teams.personal"  # the requester's 1:1 chat with the bot (secrets only ever go here)
LEADS = "teams.leads"  # the approval card in the leads channel
DELIVERY = "teams.delivery"  # the card holding the secret, in the 1:1 chat


@dataclass(frozen=True)
class ConversationRef:
    """A conversation the bot can post to proactively, and optionally one of its messages there."""

    service_url: str
    conversation_id: str
    tenant_id: str = ""
    activity_id: str = ""

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    def with_activity(self, activity_id: str) -> ConversationRef:
        return ConversationRef(self.service_url, self.conversation_id, self.tenant_id, activity_id)

    @classmethod
    def from_refs(cls, refs: Mapping[str, Any], key: str) -> ConversationRef | None:
        data = refs.get(key)
        if not isinstance(data, Mapping) or not data.get("service_url") or not data.get("conversation_id"):
            return None
        return cls(str(data["service_url"]), str(data["conversation_id"]), str(data.get("tenant_id") or ""),
                   str(data.get("activity_id") or ""))


@dataclass(frozen=True)
class RequesterRef:
    """Who asked, and the conversation they asked in (a 1:1 chat, a channel or a group chat)."""

    service_url: str
    conversation_id: str
    conversation_type: str  # "personal", "channel" or "groupChat"
    user_id: str  # the Teams user id (29:...), needed to open a 1:1 chat
    aad_object_id: str
    tenant_id: str
    bot_id: str  # our own id in that conversation (28:...)

    @property
    def is_personal(self) -> bool:
        return self.conversation_type == "personal"

    def personal(self) -> ConversationRef:
        return ConversationRef(self.service_url, self.conversation_id, self.tenant_id)

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_refs(cls, refs: Mapping[str, Any]) -> RequesterRef | None:
        data = refs.get(REQUESTER)
        if not isinstance(data, Mapping) or not data.get("service_url") or not data.get("conversation_id"):
            return None
        return cls(**{name: str(data.get(name) or "") for name in cls.__dataclass_fields__})
