"""1Password: Connect (catalogue sync and reveal at the moment of use) and the Events API (direct use)."""

from .client import DEFAULT_EVENTS_URL, ConnectClient, EventsClient, OnePasswordError
from .source import ConnectSource, EventsFeed

__all__ = ["DEFAULT_EVENTS_URL", "ConnectClient", "ConnectSource", "EventsClient", "EventsFeed",
           "OnePasswordError"]
