"""SIEM sinks behind `bot.ports.SiemSink`: a signed HTTPS webhook, Splunk HEC, and syslog (RFC 5424 over TCP/TLS)."""

from adapters.siem.config import sinks_from_env
from adapters.siem.splunk import SplunkHecSink
from adapters.siem.syslog import SyslogSink
from adapters.siem.webhook import WebhookSink

__all__ = ["SplunkHecSink", "SyslogSink", "WebhookSink", "sinks_from_env"]
