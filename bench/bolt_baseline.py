"""The same-run baseline of bench/request_path.py: a minimal slack-bolt AsyncApp that only acks.

    .venv/bin/python bench/bolt_baseline.py --port 3000 --api-url http://127.0.0.1:PORT/api/

`process_before_response=True` (the setting jitpass uses), request signatures verified by bolt with
SLACK_SIGNING_SECRET. A slash command is acked with one line of text; a button press is acked and one
`chat.postMessage` goes to the presser's DM channel (`D` + user id) at the Slack stand-in: the floor for
"approve -> a message arrives". Nothing else: no store, no audit, no cards.
"""

from __future__ import annotations

import argparse
import os
import re
from typing import Any

from aiohttp import web
from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient


def build(api_url: str, token: str, signing_secret: str) -> AsyncApp:
    """The baseline bolt app: ack commands; ack presses and post one message."""
    app = AsyncApp(client=AsyncWebClient(token=token, base_url=api_url), signing_secret=signing_secret,
                   process_before_response=True, name="bolt-baseline")

    @app.command(re.compile(r"^/"))
    async def command(ack: Any) -> None:
        await ack(text="ok", response_type="ephemeral")

    @app.action(re.compile(r".*"))
    async def press(ack: Any, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        action = (body.get("actions") or [{}])[0]
        await client.chat_postMessage(channel="D" + str(body["user"]["id"]),
                                      text=f"baseline delivery for {action.get('value', '')}")

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--api-url", required=True)
    args = parser.parse_args()
    app = build(args.api_url, os.environ["SLACK_BOT_TOKEN"], os.environ["SLACK_SIGNING_SECRET"])
    web.run_app(app.web_app(path="/slack/events", port=args.port), host="127.0.0.1", port=args.port,
                print=None, access_log=None)


if __name__ == "__main__":
    main()
