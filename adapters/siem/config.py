"""SIEM sinks from the environment (README, "Streaming to a SIEM")."""

from __future__ import annotations

import ssl
from collections.abc import Mapping

from adapters.siem.splunk import SplunkHecSink
from adapters.siem.syslog import SyslogSink
from adapters.siem.webhook import WebhookSink
from bot.domain.config import parse_bool
from bot.domain.errors import InputError
from bot.ports import SiemSink

__all__ = ["sinks_from_env"]


def _pair(env: Mapping[str, str], first: str, second: str) -> tuple[str, str] | None:
    a, b = env.get(first) or "", env.get(second) or ""
    if bool(a) != bool(b):
        raise InputError(f"{first if not a else second} is not set: {first} and {second} go together")
    return (a, b) if a else None


def sinks_from_env(env: Mapping[str, str], deployment: str) -> list[SiemSink]:
    """The configured sinks; a half-configured one is an error at start, never silently off."""
    batch_text = env.get("JITPASS_SIEM_BATCH") or "100"
    if not batch_text.isdigit() or not 1 <= int(batch_text) <= 1000:
        raise InputError(f"JITPASS_SIEM_BATCH={batch_text!r} must be a whole number from 1 to 1000")
    batch = int(batch_text)
    sinks: list[SiemSink] = []
    try:
        webhook = _pair(env, "JITPASS_SIEM_WEBHOOK_URL", "JITPASS_SIEM_WEBHOOK_SECRET")
        if webhook:
            sinks.append(WebhookSink(webhook[0], webhook[1], deployment, batch_size=batch))
        splunk = _pair(env, "JITPASS_SPLUNK_HEC_URL", "JITPASS_SPLUNK_HEC_TOKEN")
        if splunk:
            sinks.append(SplunkHecSink(splunk[0], splunk[1], batch_size=batch,
                                       ack=parse_bool("JITPASS_SPLUNK_HEC_ACK", env.get("JITPASS_SPLUNK_HEC_ACK")),
                                       index=env.get("JITPASS_SPLUNK_HEC_INDEX") or None))
    except ValueError as exc:
        raise InputError(str(exc)) from None
    address = env.get("JITPASS_SYSLOG_ADDRESS") or ""
    if address:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise InputError(f"JITPASS_SYSLOG_ADDRESS={address!r} is not host:port (e.g. siem.example.com:6514)")
        tls = None
        if parse_bool("JITPASS_SYSLOG_TLS", env.get("JITPASS_SYSLOG_TLS")):
            ca_file = env.get("JITPASS_SYSLOG_CA_FILE") or None
            try:
                tls = ssl.create_default_context(cafile=ca_file)
            except (OSError, ssl.SSLError) as exc:  # missing, unreadable, or not PEM certificates
                raise InputError(f"JITPASS_SYSLOG_CA_FILE={ca_file!r} cannot be used as CA certificates "
                                 f"({exc.__class__.__name__})") from None
        sinks.append(SyslogSink(host.strip("[]"), int(port), tls=tls, batch_size=batch))
    return sinks
