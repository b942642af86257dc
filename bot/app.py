"""The server's composition root: the only module that imports adapters.*.

`create_app(settings)` returns the aiohttp application serving `/healthz`, `/slack/events`
and `/api/messages`; its start-up opens the store, loads the key ring and policy, registers
the chat adapters and starts the scheduler.
"""

from __future__ import annotations

import asyncio
import errno
import hmac
import ipaddress
import logging
import os
import signal
import socket
import stat
import sys
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import replace
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from adapters.siem import sinks_from_env
from adapters.slack import SlackAdapter
from adapters.slack.witness import SlackWitness
from adapters.teams import TeamsAdapter
from adapters.teams.witness import TeamsWitness
from bot.bootstrap import Runtime, open_runtime
from bot.demo import DEMO_POLICY, seed_demo
from bot.domain.admission import ARRIVED
from bot.domain.config import Settings, parse_policy
from bot.domain.errors import JitpassError, StartupError, StoreError, new_error_id
from bot.domain.limits import MAX_BODY_BYTES, MAX_JSON_DEPTH, json_depth
from bot.domain.model import Identity
from bot.domain.policy import Policy
from bot.domain.report_data import ChatReport
from bot.ports import ChatAdapter, ChatCore, Clock, Witness
from bot.reports.chat import chat_report
from bot.services.metrics import CONTENT_TYPE, Metrics
from bot.services.retention import install_retention
from bot.services.siem import SiemStreamer

__all__ = ["RUNTIME", "bind", "check_safe_start", "create_app", "is_loopback", "serve", "store_health"]

log = logging.getLogger("jitpass.app")

RUNTIME = web.AppKey("runtime", Runtime)
SIEM = web.AppKey("siem", SiemStreamer)
VERSION = "0.1.0"


def install_onepassword(runtime: Runtime) -> None:
    """Periodic 1Password catalogue sync and item-usage reading (first run at start)."""
    sync, shadow, config = runtime.onepassword_sync, runtime.shadow, runtime.policy.onepassword
    if sync is not None:
        async def sync_job() -> None:
            try:
                await sync.run()
            except JitpassError as exc:  # the next run retries; nothing changed in a failed run
                log.error("event=onepassword_sync_failed error=%s", exc.message)
            except Exception:
                log.exception("event=onepassword_sync_failed")

        runtime.scheduler.add_interval("onepassword-sync", sync_job, config.sync_every)
    if shadow is not None:
        async def events_job() -> None:
            try:
                await shadow.run(runtime.service)
            except JitpassError as exc:
                log.error("event=onepassword_events_failed error=%s", exc.message)
            except Exception:
                log.exception("event=onepassword_events_failed")

        runtime.scheduler.add_interval("onepassword-events", events_job, config.events_every)


def chat_core(runtime: Runtime) -> ChatCore:
    """What the chat adapters get from the runtime: the use cases through ports, never the runtime."""
    service = runtime.service

    async def reports(actor: Identity, args_text: str) -> ChatReport:
        return await chat_report(service, actor, args_text, trust=runtime.audit_trust)

    core = ChatCore(access=service, reports=reports, policy=runtime.policy, clock=runtime.clock,
                    store=runtime.store)
    return core if runtime.metrics is None else replace(core, metrics=runtime.metrics)


def chat_adapters(settings: Settings) -> list[ChatAdapter]:
    """Slack when its tokens are set; Teams always (anonymous only for local development)."""
    adapters: list[ChatAdapter] = []
    if settings.slack_bot_token or settings.slack_signing_secret or settings.slack_app_token:
        adapters.append(SlackAdapter(settings))
    if settings.teams_enabled:
        adapters.append(TeamsAdapter(settings))
    return adapters


async def store_health(runtime: Runtime, chat: Sequence[ChatAdapter], timeout: float) -> tuple[dict[str, Any], int]:
    """`ok` (200) only when the store took a write within `timeout`; else `degraded` (503)."""
    store: dict[str, Any] = {"kind": runtime.store.kind}
    try:
        await runtime.store.check_write(timeout)
    except StoreError as exc:
        log.warning("event=health_degraded error=%s", exc.message)
        store |= {"writable": False, "error": exc.message}
    else:
        # Facts read through the store's own connection are extras: never wait long for them.
        with suppress(TimeoutError, StoreError):
            store = await asyncio.wait_for(runtime.store.describe(), timeout)
        store["writable"] = True
    body: dict[str, Any] = {"status": "ok" if store["writable"] else "degraded", "version": VERSION,
                            "store": store, "platforms": {a.platform: a.describe() for a in chat}}
    return body, 200 if store["writable"] else 503


def health_alerts(counts: Mapping[str, int]) -> list[str]:
    """What /healthz asks an operator to look at: wipes and deliveries that failed for good, wipes being retried."""
    alerts: list[str] = []
    if counts.get("failed_wipes"):
        alerts.append(f"{counts['failed_wipes']} delivered secret(s) could not be wiped from chat; "
                      "see alert.wipe_exhausted in the audit trail")
    if counts.get("failed_deliveries"):
        alerts.append(f"{counts['failed_deliveries']} approved grant(s) could not be delivered; "
                      "see grant.delivery_failed (final) in the audit trail")
    if counts.get("retrying_wipes"):
        alerts.append(f"{counts['retrying_wipes']} wipe(s) failed and are being retried: a secret may still be "
                      "on screen after its access ended; see grant.wipe_failed in the audit trail")
    return alerts


def add_chat_witnesses(runtime: Runtime, chat: Sequence[ChatAdapter]) -> None:
    """`[audit.witness_channel]`: post each checkpoint to the Slack and the Teams channel named there."""
    checkpointer, channels = runtime.checkpointer, runtime.policy.audit.witness_channels
    if checkpointer is None:
        return
    witnesses: list[Witness] = []
    for adapter in chat:
        if isinstance(adapter, SlackAdapter) and adapter.api is not None and channels.get("slack"):
            witnesses.append(SlackWitness(adapter.api, channels["slack"]))
        if isinstance(adapter, TeamsAdapter) and adapter.service_urls is not None and channels.get("teams"):
            witnesses.append(TeamsWitness(adapter.connector, adapter.service_urls, channels["teams"],
                                          timeout=runtime.settings.call_timeout))
    for platform in sorted(set(channels) - {w.name for w in witnesses}):
        log.warning("event=audit_witness_channel_unused platform=%s note=\"audit.witness_channel.%s is set but "
                    "%s is not configured on this server: no checkpoint is posted there\"", platform, platform,
                    platform)
    checkpointer.witnesses = [*checkpointer.witnesses, *witnesses]


CHAT_PATHS = frozenset({"/slack/events", "/api/messages"})
METRICS = web.AppKey("metrics", Metrics)
PARENT = web.AppKey("parent", web.Application)  # the metrics listener's: the app whose metrics it serves


def metrics_handler(settings: Settings, *, token_required: bool) -> Handler:
    """GET /metrics: 404 when not served here, 401 without the right bearer token, else the scrape."""

    async def scrape(request: web.Request) -> web.StreamResponse:
        app = request.app.get(PARENT, request.app)
        metrics, runtime = app.get(METRICS), app.get(RUNTIME)
        if metrics is None or runtime is None or (token_required and not settings.metrics_token):
            return web.json_response({"error": "metrics are not served here (see JITPASS_METRICS_TOKEN and "
                                               "JITPASS_METRICS_PORT)"}, status=404)
        if settings.metrics_token and not _bearer_ok(request, settings.metrics_token):
            return web.json_response({"error": "a valid bearer token is required"}, status=401,
                                     headers={"WWW-Authenticate": 'Bearer realm="jitpass metrics"'})
        await metrics.refresh(runtime.store, settings.health_timeout)
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    return scrape


def _bearer_ok(request: web.Request, token: str) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    # Constant-time: how much of a guess matched must not show in the answer's timing.
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


async def start_metrics_listener(app: web.Application, settings: Settings, sock: socket.socket) -> web.AppRunner:
    """JITPASS_METRICS_PORT: /metrics alone on a listener of its own (the token too, when one is set)."""
    listener = web.Application()
    listener[PARENT] = app
    listener.router.add_get("/metrics", metrics_handler(settings, token_required=False))
    runner = web.AppRunner(listener, access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    log.info("event=metrics_listening host=%s port=%s token=%s", settings.metrics_host, sock.getsockname()[1],
             "required" if settings.metrics_token else "none (loopback)")
    return runner


def _refused(request: web.Request, status: int, reason: str) -> web.Response:
    # INFO: the sender's problem, not ours (like the adapters' own refusals); one line per refused body.
    log.info("event=chat_request_refused path=%s status=%d reason=%r", request.path, status, reason)
    return web.json_response({"error": f"malformed request: {reason}"}, status=status)


@web.middleware
async def guard_chat_bodies(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Both chat endpoints: a size and a JSON depth limit before any parser runs, and an unexpected
    failure as one log line (the traceback only at debug level), never a stack trace to the caller."""
    if request.method != "POST" or request.path not in CHAT_PATHS:
        return await handler(request)
    # The acknowledgement budget counts from here, before the body is read (admission control).
    stamp = ARRIVED.set(asyncio.get_running_loop().time())
    try:
        return await _guarded(request, handler)
    finally:
        ARRIVED.reset(stamp)


async def _guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        return _refused(request, 413, f"the body is larger than {MAX_BODY_BYTES} bytes")
    try:
        raw = await request.read()  # aiohttp keeps it: the handler's own read() gets the same bytes
    except web.HTTPRequestEntityTooLarge:
        return _refused(request, 413, f"the body is larger than {MAX_BODY_BYTES} bytes")
    if raw.lstrip()[:1] in (b"{", b"[") and json_depth(raw) > MAX_JSON_DEPTH:
        return _refused(request, 400, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception as exc:
        error_id = new_error_id()  # the one error-id format (E-xxxxxx) of the CLI, Slack and Teams
        log.error("event=chat_request_failed path=%s error_id=%s error=%s", request.path, error_id,
                  type(exc).__name__)
        log.debug("event=chat_request_failed_detail error_id=%s", error_id, exc_info=exc)
        return web.json_response({"error": "internal error", "error_id": error_id}, status=500)


def create_app(settings: Settings, *, clock: Clock | None = None, policy: Policy | None = None,
               demo: bool = False, adapters: Sequence[ChatAdapter] | None = None) -> web.Application:
    """The aiohttp application; the runtime is opened at start-up and closed at clean-up."""
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[guard_chat_bodies])
    chat = list(adapters) if adapters is not None else chat_adapters(settings)
    metrics = Metrics() if settings.metrics_enabled else None  # a registry per app: apps never share one
    if metrics is not None:
        app[METRICS] = metrics
    listeners: list[web.AppRunner] = []  # the JITPASS_METRICS_PORT listener, while it runs

    async def healthz(request: web.Request) -> web.Response:
        runtime = request.app[RUNTIME]
        body, status = await store_health(runtime, chat, settings.health_timeout)
        if settings.worker_of is not None:  # one of `serve --workers N`'s processes: which one answered
            body["worker"] = {"index": settings.worker_of, "pid": os.getpid()}
        body["audit"] = runtime.checkpointer.describe() if runtime.checkpointer else None
        # A wipe that spent its retry budget: a password may still be on someone's screen.
        with suppress(TimeoutError, StoreError):  # extras: never wait long for them
            counts = await asyncio.wait_for(runtime.store.effect_counts(), settings.health_timeout)
            body["effects"] = counts
            alerts = health_alerts(counts)
            if alerts:
                body["alerts"] = alerts
        if SIEM in request.app:
            body["siem"] = request.app[SIEM].describe()
        if runtime.onepassword_sync is not None:
            body["onepassword"] = {"connect": runtime.settings.op_connect_host, **runtime.onepassword_sync.describe(),
                                   "events": runtime.shadow is not None}
        return web.json_response(body, status=status)

    async def not_configured(request: web.Request) -> web.Response:
        return web.json_response({"error": "the Slack adapter is not configured: set SLACK_SIGNING_SECRET and "
                                           "SLACK_BOT_TOKEN (or SLACK_APP_TOKEN for Socket Mode)"}, status=501)

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_handler(settings, token_required=True))
    for adapter in chat:
        adapter.add_routes(app)
    if not any(a.platform == "slack" for a in chat):
        app.router.add_post("/slack/events", not_configured)
    if not any(a.platform == "teams" for a in chat):
        async def teams_off(request: web.Request) -> web.Response:
            return web.json_response({"error": "Teams is turned off (JITPASS_TEAMS_ENABLED=false)"}, status=501)

        app.router.add_post("/api/messages", teams_off)

    async def start(app: web.Application) -> None:
        metrics_sock = metrics_socket(settings)  # before anything opens: a busy port changes nothing
        try:
            runtime = await open_runtime(settings, clock=clock, policy=policy, mark_demo=demo, metrics=metrics,
                                         demo_policy=parse_policy(DEMO_POLICY, "built-in demo policy"))
        except BaseException:
            if metrics_sock is not None:
                metrics_sock.close()
            raise
        app[RUNTIME] = runtime
        log.info("event=home path=\"%s\" store=%s demo_store=%s", settings.home, runtime.store.kind,
                 str(runtime.demo).lower())
        try:
            if runtime.demo:
                await seed_demo(runtime.store, runtime.catalog)
            elif demo:
                log.warning("event=demo_ignored note=\"--demo applies only to a store it creates; this store was "
                            "not created with --demo, so no demo item and no demo policy (set JITPASS_HOME to "
                            "another directory for a demo)\"")
            core = chat_core(runtime)
            for adapter in chat:
                await adapter.start(core)
            runtime.effects.start()
            # Returns at once: overdue work runs in the background, so the port opens without waiting for it.
            await runtime.scheduler.start()
            install_retention(runtime.scheduler, runtime.store, runtime.policy, runtime.clock, runtime.checkpointer)
            install_onepassword(runtime)
            if runtime.checkpointer:
                add_chat_witnesses(runtime, chat)
                runtime.checkpointer.start()
                sinks = sinks_from_env(settings.environ, runtime.checkpointer.deployment)
                if sinks:
                    streamer = SiemStreamer(runtime.store, sinks, runtime.clock)
                    await streamer.load()
                    streamer.start()
                    app[SIEM] = streamer
            if metrics_sock is not None:
                listeners.append(await start_metrics_listener(app, settings, metrics_sock))
        except BaseException:
            if metrics_sock is not None and not listeners:
                metrics_sock.close()
            # aiohttp runs no on_cleanup after a failed start-up: close what was opened here.
            await stop(app)
            raise
        log.info("event=started store=%s platforms=%s loop=%s", runtime.store.kind,
                 ",".join(a.platform for a in chat), type(asyncio.get_running_loop()).__module__.split(".")[0])

    async def stop(app: web.Application) -> None:
        while listeners:
            await listeners.pop().cleanup()
        runtime = app.get(RUNTIME)
        if runtime is None:
            return
        await runtime.scheduler.shutdown()
        await runtime.effects.stop()
        for adapter in chat:
            await adapter.stop()
        if runtime.checkpointer:
            await runtime.checkpointer.stop()  # the shutdown checkpoint, once nothing else appends
        if SIEM in app:
            await app[SIEM].stop()  # a few seconds to stream what is left, the shutdown checkpoint included
        await runtime.close()

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    return app


def is_loopback(host: str) -> bool:
    """True when only this machine can reach `host` (127.0.0.0/8, ::1, localhost)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_safe_start(settings: Settings, host: str) -> None:
    """Refuse a configuration that would accept unauthenticated chat requests on a reachable address."""
    if is_loopback(host):
        return
    teams_anonymous = settings.teams_enabled and not settings.teams_app_id
    if teams_anonymous and not settings.teams_anonymous_allowed:
        raise StartupError(
            f"refusing to start: Teams has no credentials, so /api/messages would accept anyone's activities on "
            f"{host}. Set CONNECTIONS__SERVICE_CONNECTION__SETTINGS__CLIENTID, __CLIENTSECRET and __TENANTID "
            "(or MICROSOFT_APP_ID / MICROSOFT_APP_PASSWORD / MICROSOFT_APP_TENANT_ID); or JITPASS_TEAMS_ENABLED=false "
            "for a Slack-only server; or bind 127.0.0.1 (JITPASS_HOST) for local development")
    if teams_anonymous:
        log.warning("event=insecure_teams_anonymous host=%s note=\"INSECURE: JITPASS_TEAMS_ANONYMOUS=insecure-allow: "
                    "anyone who reaches %s can act as any Teams user\"", host, host)
    slack_http = bool(settings.slack_bot_token) and not settings.slack_app_token
    if slack_http and not settings.slack_signing_secret:
        raise StartupError(
            f"refusing to start: SLACK_BOT_TOKEN is set but SLACK_SIGNING_SECRET is not, so Slack's requests on {host} "
            "could not be verified. Set SLACK_SIGNING_SECRET (HTTP mode) or SLACK_APP_TOKEN (Socket Mode)")


def metrics_socket(settings: Settings) -> socket.socket | None:
    """The JITPASS_METRICS_PORT socket (None when unset); a reachable address needs JITPASS_METRICS_TOKEN.
    Under `serve --workers N` only worker 0 listens there (the others would find the port taken)."""
    if settings.metrics_port is None or settings.worker != 0:
        return None
    if not is_loopback(settings.metrics_host) and not settings.metrics_token:
        raise StartupError(f"refusing to start: JITPASS_METRICS_HOST={settings.metrics_host} is reachable from "
                           "other machines but JITPASS_METRICS_TOKEN is not set, so anyone there could read "
                           "/metrics. Set a token, or leave JITPASS_METRICS_HOST unset (127.0.0.1)")
    return bind(settings.metrics_host, settings.metrics_port, what="JITPASS_METRICS_PORT")


def bind(host: str, port: int, *, what: str = "PORT", reuse_port: bool = False) -> socket.socket:
    """The listening socket, taken before any start-up work: a busy port must change nothing. `reuse_port`:
    one of `serve --workers N`'s processes, sharing the port with its siblings (the kernel spreads connections)."""
    try:
        return socket.create_server((host, port), backlog=128, reuse_port=reuse_port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise StartupError(f"port {port} is in use on {host}: stop the other process or set {what} "
                               "to a free port") from None
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def _stop_when_supervisor_goes(stop: asyncio.Event) -> None:
    """A worker's stdin is a pipe from its supervisor: end of file means the supervisor died (even by kill -9)."""
    loop = asyncio.get_running_loop()

    def readable() -> None:
        try:
            data = os.read(sys.stdin.fileno(), 512)
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(sys.stdin.fileno())
            log.warning("event=stopping reason=supervisor_gone")
            stop.set()

    loop.add_reader(sys.stdin.fileno(), readable)


async def serve(settings: Settings, *, host: str, port: int, policy: Policy | None = None, demo: bool = False) -> None:
    """Run the server until cancelled (Ctrl-C / SIGTERM)."""
    check_safe_start(settings, host)
    supervised = settings.worker_of is not None
    sock = bind(host, port, reuse_port=supervised)
    runner = web.AppRunner(create_app(settings, policy=policy, demo=demo))
    stop = asyncio.Event()
    # Platforms stop dynos/containers with SIGTERM: close the store and scheduler cleanly then.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    if supervised and stat.S_ISFIFO(os.fstat(sys.stdin.fileno()).st_mode):  # a pipe from `serve --workers`
        _stop_when_supervisor_goes(stop)
    try:
        await runner.setup()
        await web.SockSite(runner, sock).start()
        worker = f"worker {settings.worker}; " if supervised else ""
        print(f"jitpass listening on http://{host}:{port}  ({worker}health: /healthz, Slack: /slack/events, "
              f"Teams: /api/messages)", flush=True)
        await stop.wait()
        log.info("event=stopping reason=SIGTERM")
    finally:
        await runner.cleanup()
        sock.close()
