"""Slack adapter (placeholder until the Slack issue lands)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from bot.config import Settings
from bot.runtime import Runtime


class SlackAdapter:
    platform = "slack"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def add_routes(self, app: web.Application) -> None:
        async def events(request: web.Request) -> web.Response:
            return web.json_response({"error": "the Slack adapter is not implemented yet"}, status=501)

        app.router.add_post("/slack/events", events)

    async def start(self, runtime: Runtime) -> None:
        return None

    async def stop(self) -> None:
        return None

    def describe(self) -> dict[str, Any]:
        return {"mode": "not implemented"}
