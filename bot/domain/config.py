"""Settings from the environment (12-factor, `.env` read when present) and policy file loading."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.domain.errors import InputError, PolicyError
from bot.domain.policy import (
    AuditPolicy,
    Limits,
    Members,
    OnePasswordPolicy,
    OnePasswordVault,
    Policy,
    RateLimit,
    RateLimits,
    Retention,
    VaultPolicy,
    WorkingHours,
)
from bot.domain.request_text import parse_duration

__all__ = ["HOME_POLICY", "Settings", "default_home", "load_dotenv", "load_policy", "parse_bool", "parse_policy"]

# In the home directory: the store, the key ring and (when present) the policy. Each has its own variable too.
HOME_STORE = "jitpass.db"
HOME_KEY = "jitpass.key"
HOME_POLICY = "policy.toml"

PLATFORMS = ("slack", "teams")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def parse_bool(name: str, value: str | None, default: bool = False) -> bool:
    """Security booleans are parsed explicitly: "false" is false, and a typo is an error."""
    if value is None:
        return default
    text = value.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise InputError(f"{name}={value!r} is not a boolean; use true or false")


def default_home(environ: Mapping[str, str]) -> Path:
    """$XDG_DATA_HOME/jitpass, else ~/.local/share/jitpass: the same wherever a command runs."""
    base = environ.get("XDG_DATA_HOME") or str(Path(environ.get("HOME") or Path.home()) / ".local" / "share")
    return Path(base).expanduser().absolute() / "jitpass"


def load_dotenv(path: Path, environ: dict[str, str]) -> None:
    """Read KEY=VALUE lines into `environ` without overriding what is already set."""
    if not path.is_file():
        return
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        environ.setdefault(key.strip(), value)


@dataclass(frozen=True)
class Settings:
    """Everything the process reads from its environment. Secrets here are tokens, never shown."""

    store_url: str = "sqlite:///jitpass.db"
    mongodb_allow_standalone: bool = False  # development only: MongoDB without transactions
    master_key: str | None = field(default=None, repr=False)
    master_key_file: Path = Path("jitpass.key")
    policy_path: Path | None = None
    host: str = "127.0.0.1"
    port: int = 3978
    slack_bot_token: str | None = field(default=None, repr=False)
    slack_signing_secret: str | None = field(default=None, repr=False)
    slack_app_token: str | None = field(default=None, repr=False)
    slack_api_url: str | None = None
    teams_app_id: str | None = None
    teams_app_password: str | None = field(default=None, repr=False)
    teams_tenant_id: str | None = None
    teams_service_url_validation: bool = True
    # Where people's browsers reach this server (report download links); None: http://localhost:{port}.
    public_url: str | None = None
    # 1Password (the names 1Password's own tools read): Connect for items, the Events API for direct use.
    op_connect_host: str | None = None
    op_connect_token: str | None = field(default=None, repr=False)
    op_events_url: str = "https://events.1password.com"
    op_events_token: str | None = field(default=None, repr=False)
    # Every outbound chat call gives up after this many seconds (JITPASS_CALL_TIMEOUT).
    call_timeout: float = 10.0
    # A Retry-After longer than this is cut to it (JITPASS_RETRY_AFTER_MAX); it delays only that effect.
    retry_after_max: float = 30.0
    # JITPASS_TEAMS_ANONYMOUS=insecure-allow: an anonymous /api/messages even on a non-loopback bind.
    teams_anonymous_allowed: bool = False
    # JITPASS_TEAMS_ENABLED=false: no Teams endpoint at all (a Slack-only deployment).
    teams_enabled: bool = True
    # Seconds /healthz waits for a store write before it answers `degraded` (JITPASS_HEALTH_TIMEOUT).
    health_timeout: float = 2.0
    # A dead replica's effects are taken over this many seconds after its last lease renewal (JITPASS_EFFECT_LEASE).
    effect_lease: float = 10.0
    # Admission control per chat endpoint: requests doing core work at once (JITPASS_MAX_RUNNING), requests
    # waiting for a turn (JITPASS_MAX_QUEUED; beyond both: "busy, nothing was recorded"), and the seconds an
    # acknowledgement may wait for the outcome, counted from arrival (JITPASS_ACK_BUDGET).
    max_running: int = 16
    max_queued: int = 256
    ack_budget: float = 2.0
    # /metrics (Prometheus): on the main port only with this bearer token (JITPASS_METRICS_TOKEN), and/or on
    # a listener of its own (JITPASS_METRICS_PORT, bound to JITPASS_METRICS_HOST, loopback by default).
    metrics_token: str | None = field(default=None, repr=False)
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    environ: Mapping[str, str] = field(default_factory=dict, repr=False)
    # Where jitpass lives (JITPASS_HOME, default ~/.local/share/jitpass): one answer for `serve` and
    # every CLI command, whatever the working directory. `home_source` says how it was chosen.
    home: Path = Path("jitpass-home")
    home_source: str = "built-in default"

    @property
    def metrics_enabled(self) -> bool:
        """/metrics is served (and counted) only when a token or a metrics port is set."""
        return bool(self.metrics_token or self.metrics_port)

    def where(self) -> str:
        """One line saying where the store, key and policy were looked for, and why there."""
        store = self.store_url if self.store_url.startswith("sqlite") or "://" not in self.store_url \
            else self.store_url.split("://", 1)[0] + "://…"
        key = "JITPASS_MASTER_KEY" if self.master_key else str(self.master_key_file)
        policy = str(self.policy_path) if self.policy_path else "none (built-in defaults)"
        return f"jitpass home {self.home} ({self.home_source}); store {store}; key {key}; policy {policy}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read JITPASS_*, PORT, SLACK_* and Teams connection settings."""
        env = dict(os.environ if environ is None else environ)
        load_dotenv(Path(env.get("JITPASS_DOTENV", ".env")), env)
        port_text = env.get("PORT", "3978")
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise InputError(f"PORT={port_text!r} is not a TCP port number")
        public_url = (env.get("JITPASS_PUBLIC_URL") or "").strip().rstrip("/")
        if public_url and not re.match(r"^https?://[^/?#\s]+(/[^?#\s]*)?$", public_url):
            raise InputError(f"JITPASS_PUBLIC_URL={public_url!r} is not an http(s) URL such as "
                             "https://jitpass.example.com")
        teams_id = env.get("CONNECTIONS__SERVICE_CONNECTION__SETTINGS__CLIENTID") or env.get("MICROSOFT_APP_ID")
        teams_secret = env.get("CONNECTIONS__SERVICE_CONNECTION__SETTINGS__CLIENTSECRET") or env.get(
            "MICROSOFT_APP_PASSWORD"
        )
        teams_tenant = env.get("CONNECTIONS__SERVICE_CONNECTION__SETTINGS__TENANTID") or env.get(
            "MICROSOFT_APP_TENANT_ID"
        )
        op_host = (env.get("OP_CONNECT_HOST") or "").strip().rstrip("/")
        op_token = (env.get("OP_CONNECT_TOKEN") or "").strip()
        if bool(op_host) != bool(op_token):
            missing = "OP_CONNECT_TOKEN" if op_host else "OP_CONNECT_HOST"
            raise InputError(f"1Password Connect needs both OP_CONNECT_HOST and OP_CONNECT_TOKEN; {missing} is not set")
        events_url = (env.get("OP_EVENTS_URL") or "https://events.1password.com").strip().rstrip("/")
        for name, url in (("OP_CONNECT_HOST", op_host), ("OP_EVENTS_URL", events_url)):
            if url and not re.match(r"^https?://[^/?#\s]+(/[^?#\s]*)?$", url):
                raise InputError(f"{name}={url!r} is not an http(s) URL such as http://op-connect:8080")
        if env.get("JITPASS_HOME"):
            home, home_source = Path(env["JITPASS_HOME"]).expanduser().absolute(), "JITPASS_HOME"
        else:
            home, home_source = default_home(env), "default; set JITPASS_HOME to choose"
        home_policy = home / HOME_POLICY
        metrics_token = (env.get("JITPASS_METRICS_TOKEN") or "").strip()
        if metrics_token and len(metrics_token) < MIN_METRICS_TOKEN:
            raise InputError(f"JITPASS_METRICS_TOKEN is {len(metrics_token)} characters long; use at least "
                             f"{MIN_METRICS_TOKEN} random ones (for example `openssl rand -hex 24`)")
        metrics_port = (env.get("JITPASS_METRICS_PORT") or "").strip()
        if metrics_port and (not metrics_port.isdigit() or not 0 < int(metrics_port) < 65536):
            raise InputError(f"JITPASS_METRICS_PORT={metrics_port!r} is not a TCP port number")
        return cls(
            store_url=env.get("JITPASS_STORE") or f"sqlite:///{home / HOME_STORE}",
            mongodb_allow_standalone=parse_bool(
                "JITPASS_MONGODB_ALLOW_STANDALONE", env.get("JITPASS_MONGODB_ALLOW_STANDALONE"), False
            ),
            master_key=env.get("JITPASS_MASTER_KEY") or None,
            master_key_file=Path(env.get("JITPASS_MASTER_KEY_FILE") or home / HOME_KEY),
            policy_path=Path(env["JITPASS_POLICY"]) if env.get("JITPASS_POLICY") else (
                home_policy if home_policy.is_file() else None),
            home=home,
            home_source=home_source,
            host=env.get("JITPASS_HOST") or ("0.0.0.0" if "DYNO" in env else "127.0.0.1"),
            port=int(port_text),
            slack_bot_token=env.get("SLACK_BOT_TOKEN") or None,
            slack_signing_secret=env.get("SLACK_SIGNING_SECRET") or None,
            slack_app_token=env.get("SLACK_APP_TOKEN") or None,
            slack_api_url=env.get("SLACK_API_URL") or None,
            teams_app_id=teams_id or None,
            teams_app_password=teams_secret or None,
            teams_tenant_id=teams_tenant or None,
            teams_service_url_validation=parse_bool(
                "JITPASS_TEAMS_VALIDATE_SERVICE_URL", env.get("JITPASS_TEAMS_VALIDATE_SERVICE_URL"), True
            ),
            public_url=public_url or None,
            op_connect_host=op_host or None,
            op_connect_token=op_token or None,
            op_events_url=events_url,
            op_events_token=(env.get("OP_EVENTS_TOKEN") or "").strip() or None,
            call_timeout=_seconds(env, "JITPASS_CALL_TIMEOUT", 10.0),
            retry_after_max=_seconds(env, "JITPASS_RETRY_AFTER_MAX", 30.0),
            teams_anonymous_allowed=_insecure_allow("JITPASS_TEAMS_ANONYMOUS", env.get("JITPASS_TEAMS_ANONYMOUS")),
            teams_enabled=parse_bool("JITPASS_TEAMS_ENABLED", env.get("JITPASS_TEAMS_ENABLED"), True),
            health_timeout=_seconds(env, "JITPASS_HEALTH_TIMEOUT", 2.0),
            effect_lease=_seconds(env, "JITPASS_EFFECT_LEASE", 10.0),
            max_running=_count(env, "JITPASS_MAX_RUNNING", 16, low=1),
            max_queued=_count(env, "JITPASS_MAX_QUEUED", 256, low=0),
            ack_budget=_seconds(env, "JITPASS_ACK_BUDGET", 2.0, most=2.5, zero=True),
            metrics_token=metrics_token or None,
            metrics_port=int(metrics_port) if metrics_port else None,
            metrics_host=(env.get("JITPASS_METRICS_HOST") or "127.0.0.1").strip(),
            environ=env,
        )


INSECURE_ALLOW = "insecure-allow"
MIN_METRICS_TOKEN = 16


def _insecure_allow(name: str, value: str | None) -> bool:
    """An unsafe mode is allowed only by its one explicit word: `true`, `1` or a typo are errors."""
    if value is None or not value.strip():
        return False
    if value.strip() == INSECURE_ALLOW:
        return True
    raise InputError(f"{name}={value!r} is not understood: the only value is {INSECURE_ALLOW} (or leave it unset)")


def _seconds(env: Mapping[str, str], name: str, default: float, *, most: float = 3600, zero: bool = False) -> float:
    """A positive number of seconds (up to `most`; 0 too when `zero`) from the environment, or `default`."""
    text = (env.get(name) or "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value < 0 or (value == 0 and not zero) or value > most:
        raise InputError(f"{name}={text!r} is not a number of seconds between 0 and {most:g} (for example "
                         f"{default:g})")
    return value


def _count(env: Mapping[str, str], name: str, default: int, *, low: int) -> int:
    """A whole number from `low` to 100,000 from the environment, or `default` when unset."""
    text = (env.get(name) or "").strip()
    if not text:
        return default
    if not text.isdigit() or not low <= int(text) <= 100_000:
        raise InputError(f"{name}={text!r} is not a whole number between {low} and 100000 (for example {default})")
    return int(text)


# -- policy file --------------------------------------------------------------------------------


class _Locator:
    """Finds the line of `key` inside `[table]` of a TOML text, so errors can name it."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()

    def line_of(self, table: str, key: str | None = None) -> int | None:
        current = ""
        header_line: int | None = None
        for number, raw in enumerate(self.lines, start=1):
            line = raw.strip()
            header = re.match(r"^\[\[?\s*([^\]]+?)\s*\]\]?", line)
            if header:
                current = header.group(1).replace('"', "").replace(" ", "")
                if current == table:
                    header_line = number
                continue
            if key is None:
                continue
            match = re.match(r"^([A-Za-z0-9_.\"-]+)\s*=", line)
            if not match:
                continue
            dotted = match.group(1).replace('"', "")
            full = f"{current}.{dotted}" if current else dotted
            if full == (f"{table}.{key}" if table else key):
                return number
        return header_line


class _PolicyReader:
    def __init__(self, text: str, source: str) -> None:
        self.source = source
        self.locate = _Locator(text)

    def fail(self, table: str, key: str | None, message: str) -> PolicyError:
        line = self.locate.line_of(table, key)
        where = ".".join(p for p in (table, key) if p) or "(top level)"
        at = f" (line {line})" if line else ""
        return PolicyError(f"{self.source}: {where}{at}: {message}")

    def table(self, data: Mapping[str, Any], table: str, key: str) -> Mapping[str, Any]:
        value = data.get(key, {})
        if not isinstance(value, dict):
            raise self.fail(table, key, "must be a table")
        return value

    def duration(self, data: Mapping[str, Any], table: str, key: str, default: timedelta) -> timedelta:
        if key not in data:
            return default
        value = data[key]
        if not isinstance(value, str):
            raise self.fail(table, key, f'must be a duration string like "1h30m", not {value!r}')
        try:
            return parse_duration(value)
        except InputError as exc:
            raise self.fail(table, key, exc.message) from None

    def integer(self, data: Mapping[str, Any], table: str, key: str, default: int, minimum: int) -> int:
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.fail(table, key, f"must be a whole number >= {minimum}, not {value!r}")
        return value

    def boolean(self, data: Mapping[str, Any], table: str, key: str, default: bool) -> bool:
        value = data.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(table, key, f"must be true or false, not {value!r}")
        return value

    def strings(self, data: Mapping[str, Any], table: str, key: str) -> frozenset[str]:
        value = data.get(key, [])
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise self.fail(table, key, "must be a list of non-empty strings")
        return frozenset(v.strip() for v in value)

    def clock_time(self, data: Mapping[str, Any], table: str, key: str, default: time) -> time:
        value = data.get(key)
        if value is None:
            return default
        if isinstance(value, time):
            return value
        if isinstance(value, str) and re.fullmatch(r"\d{1,2}:\d{2}", value):
            hours, minutes = map(int, value.split(":"))
            if hours < 24 and minutes < 60:
                return time(hours, minutes)
        raise self.fail(table, key, f'must be a time like "08:30", not {value!r}')

    def members(self, data: Mapping[str, Any], table: str) -> Members:
        allowed = {*PLATFORMS, *(f"{p}_groups" for p in PLATFORMS)}
        for key in data:
            if key not in allowed:
                raise self.fail(table, key, f"unknown key; expected one of {', '.join(sorted(allowed))}")
        return Members(
            users={p: self.strings(data, table, p) for p in PLATFORMS if p in data},
            groups={p: self.strings(data, table, f"{p}_groups") for p in PLATFORMS if f"{p}_groups" in data},
        )

    def channels(self, data: Mapping[str, Any], table: str) -> dict[str, str]:
        result: dict[str, str] = {}
        for key, value in data.items():
            if key not in PLATFORMS:
                raise self.fail(table, key, f"unknown platform; expected one of {', '.join(PLATFORMS)}")
            if not isinstance(value, str) or not value.strip():
                raise self.fail(table, key, "must be a channel id string")
            result[key] = value.strip()
        return result

    def limits(self, data: Mapping[str, Any], table: str, base: Limits) -> Limits:
        limits = Limits(
            default_duration=self.duration(data, table, "default_duration", base.default_duration),
            min_duration=self.duration(data, table, "min_duration", base.min_duration),
            max_duration=self.duration(data, table, "max_duration", base.max_duration),
            request_timeout=self.duration(data, table, "request_timeout", base.request_timeout),
            approvals_required=self.integer(data, table, "approvals_required", base.approvals_required, 1),
            min_reason_length=self.integer(data, table, "min_reason_length", base.min_reason_length, 1),
            exclusive=self.boolean(data, table, "exclusive", base.exclusive),
        )
        if limits.min_duration > limits.max_duration:
            raise self.fail(table, "min_duration", "is longer than max_duration")
        if not limits.min_duration <= limits.default_duration <= limits.max_duration:
            raise self.fail(table, "default_duration", "must lie between min_duration and max_duration")
        return limits


_VAULT_KEYS = {
    "description", "approvers", "leads_channel", "exclusive_items", "default_duration", "min_duration",
    "max_duration", "request_timeout", "approvals_required", "min_reason_length", "exclusive",
}
_TOP_KEYS = {"timezone", "defaults", "working_hours", "admins", "approvers", "leads_channel", "retention", "vaults",
             "onepassword", "audit", "people", "rate_limits"}
_AUDIT_KEYS = {"checkpoint_every_events", "checkpoint_every", "witness_channel"}
_ONEPASSWORD_KEYS = {"vaults", "sync_every", "events_every", "people", "notify_leads"}
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def _parse_onepassword(reader: _PolicyReader, data: Mapping[str, Any]) -> OnePasswordPolicy:
    """`[onepassword]`: served vaults (`[onepassword.vaults."<1Password vault>"] vault = "acme"`), people."""
    table = reader.table(data, "", "onepassword")
    for key in table:
        if key not in _ONEPASSWORD_KEYS:
            expected = ", ".join(sorted(_ONEPASSWORD_KEYS))
            raise reader.fail("onepassword", key, f"unknown key; expected one of {expected}")
    vaults = []
    for key, entry in reader.table(table, "onepassword", "vaults").items():
        where = f"onepassword.vaults.{key}"
        if not isinstance(entry, dict):
            raise reader.fail("onepassword.vaults", key, 'must be a table like { vault = "acme" }')
        for name in entry:
            if name not in {"vault", "prefix"}:
                raise reader.fail(where, name, "unknown key; expected vault or prefix")
        vault, prefix = entry.get("vault"), entry.get("prefix", "")
        if not isinstance(vault, str) or not _NAME.match(vault):
            raise reader.fail(where, "vault", "must name the jitpass vault (lower-case letters, digits, . _ -)")
        if not isinstance(prefix, str) or (prefix and not re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,30}", prefix)):
            raise reader.fail(where, "prefix", "must be lower-case letters, digits, . _ - (like \"acme-\")")
        vaults.append(OnePasswordVault(key=key, vault=vault, prefix=prefix))
    people: dict[str, frozenset[str]] = {}
    for email, ids in reader.table(table, "onepassword", "people").items():
        if "@" not in email:
            raise reader.fail("onepassword.people", email, "must be a 1Password account e-mail address")
        keys = reader.strings({"ids": ids}, "onepassword.people", "ids")
        bad = sorted(k for k in keys if k.split(":", 1)[0] not in PLATFORMS or ":" not in k)
        if bad:
            raise reader.fail("onepassword.people", email, f"{bad[0]!r} is not 'slack:<user id>' or 'teams:<id>'")
        people[email.lower()] = keys
    return OnePasswordPolicy(
        vaults=tuple(vaults),
        sync_every=reader.duration(table, "onepassword", "sync_every", timedelta(minutes=5)),
        events_every=reader.duration(table, "onepassword", "events_every", timedelta(minutes=1)),
        people=people,
        notify_leads=reader.boolean(table, "onepassword", "notify_leads", True),
    )


def parse_policy(text: str, source: str = "policy") -> Policy:
    """Validate a TOML policy; every error names the key and its line."""
    reader = _PolicyReader(text, source)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{source}: not valid TOML: {exc}") from None
    for key in data:
        if key not in _TOP_KEYS:
            raise reader.fail("", key, f"unknown key; expected one of {', '.join(sorted(_TOP_KEYS))}")
    tz_name = data.get("timezone", "UTC")
    try:
        tz = ZoneInfo(str(tz_name))
    except (ZoneInfoNotFoundError, ValueError):
        raise reader.fail("", "timezone", f"unknown time zone {tz_name!r} (use e.g. Europe/Amsterdam)") from None

    defaults_data = reader.table(data, "", "defaults")
    for key in defaults_data:
        if key not in _VAULT_KEYS - {"description", "approvers", "leads_channel", "exclusive_items"}:
            raise reader.fail("defaults", key, "unknown key")
    default_limits = reader.limits(defaults_data, "defaults", Limits())
    defaults = VaultPolicy(
        name="*",
        approvers=reader.members(reader.table(data, "", "approvers"), "approvers"),
        leads_channels=reader.channels(reader.table(data, "", "leads_channel"), "leads_channel"),
        limits=default_limits,
    )

    vaults: dict[str, VaultPolicy] = {}
    for name, vault_data in reader.table(data, "", "vaults").items():
        table = f"vaults.{name}"
        if not isinstance(vault_data, dict):
            raise reader.fail("vaults", name, "must be a table")
        for key in vault_data:
            if key not in _VAULT_KEYS:
                raise reader.fail(table, key, f"unknown key; expected one of {', '.join(sorted(_VAULT_KEYS))}")
        approvers_data = vault_data.get("approvers")
        approvers = (
            reader.members(reader.table(vault_data, table, "approvers"), f"{table}.approvers")
            if approvers_data is not None
            else defaults.approvers
        )
        channels = reader.channels(reader.table(vault_data, table, "leads_channel"), f"{table}.leads_channel")
        description = vault_data.get("description", "")
        if not isinstance(description, str):
            raise reader.fail(table, "description", "must be a string")
        vaults[name] = VaultPolicy(
            name=name,
            description=description,
            approvers=approvers,
            leads_channels={**defaults.leads_channels, **channels},
            limits=reader.limits(vault_data, table, default_limits),
            exclusive_items=reader.strings(vault_data, table, "exclusive_items"),
        )

    hours_data = reader.table(data, "", "working_hours")
    day_names = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    days_raw = reader.strings(hours_data, "working_hours", "days") if "days" in hours_data else None
    if days_raw is not None:
        bad = sorted(d for d in days_raw if d[:3].lower() not in day_names)
        if bad:
            raise reader.fail("working_hours", "days", f"unknown day(s) {', '.join(bad)}; use mon..sun")
    hours = WorkingHours(
        start=reader.clock_time(hours_data, "working_hours", "start", time(8, 0)),
        end=reader.clock_time(hours_data, "working_hours", "end", time(18, 0)),
        days=frozenset(day_names.index(d[:3].lower()) for d in days_raw) if days_raw else frozenset(range(5)),
    )
    if hours.end <= hours.start:
        raise reader.fail("working_hours", "end", "must be later than start")

    retention_data = reader.table(data, "", "retention")
    keep = retention_data.get("keep_days")
    if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
        raise reader.fail("retention", "keep_days", f"must be a whole number of days >= 1, not {keep!r}")
    retention = Retention(
        keep_days=keep,
        legal_hold=reader.boolean(retention_data, "retention", "legal_hold", False),
        purge_at=reader.clock_time(retention_data, "retention", "purge_at", time(3, 30)),
    )
    audit_data = reader.table(data, "", "audit")
    for key in audit_data:
        if key not in _AUDIT_KEYS:
            raise reader.fail("audit", key, f"unknown key; expected one of {', '.join(sorted(_AUDIT_KEYS))}")
    audit = AuditPolicy(
        checkpoint_every_events=reader.integer(audit_data, "audit", "checkpoint_every_events", 100, 1),
        checkpoint_every=reader.duration(audit_data, "audit", "checkpoint_every", timedelta(minutes=10)),
        witness_channels=reader.channels(reader.table(audit_data, "audit", "witness_channel"),
                                         "audit.witness_channel"),
    )
    onepassword = _parse_onepassword(reader, data)
    return Policy(
        audit=audit,
        timezone=tz,
        defaults=defaults,
        vaults=vaults,
        admins=reader.members(reader.table(data, "", "admins"), "admins"),
        working_hours=hours,
        retention=retention,
        onepassword=onepassword,
        people=_parse_people(reader, data, onepassword),
        rate_limits=_parse_rate_limits(reader, data),
    )


def _parse_rate_limits(reader: _PolicyReader, data: Mapping[str, Any]) -> RateLimits:
    """`[rate_limits] requests = "10/1h"`, `codes = "30/10m"`, `reports = "10/1h"` (per person)."""
    table = reader.table(data, "", "rate_limits")
    defaults = RateLimits()
    values: dict[str, RateLimit] = {}
    for key, value in table.items():
        if key not in {"requests", "codes", "reports"}:
            raise reader.fail("rate_limits", key, "unknown key; expected codes, reports or requests")
        count, _, per = str(value).partition("/")
        try:
            limit = RateLimit(int(count), parse_duration(per))
        except (ValueError, InputError):
            limit = RateLimit(0, timedelta(0))
        if not isinstance(value, str) or limit.count < 1 or limit.per <= timedelta(0):
            raise reader.fail("rate_limits", key, f'must be "<count>/<duration>" like "10/1h", not {value!r}')
        values[key] = limit
    return RateLimits(**{k: values.get(k, defaults.of(k)) for k in ("requests", "codes", "reports")})


def _parse_people(reader: _PolicyReader, data: Mapping[str, Any], onepassword: OnePasswordPolicy) -> dict[str, str]:
    """`[people.<name>]` links a person's accounts: `slack = "U…"`, `teams = "<Entra object id>"`, `email`.

    Accounts listed under one e-mail in `[onepassword] people` are one person too: the `[people]` entry
    with that `email`, else a person named by the e-mail."""
    links: dict[str, str] = {}

    def link(key: str, name: str, table: str, field: str) -> None:
        if links.setdefault(key, name) != name:
            raise reader.fail(table, field, f"{key} is linked to two people ({links[key]} and {name})")

    by_email: dict[str, str] = {}
    for name, entry in reader.table(data, "", "people").items():
        table = f"people.{name}"
        if not isinstance(entry, dict):
            raise reader.fail("people", name, "must be a table with slack / teams / email")
        for key in entry:
            if key not in {*PLATFORMS, "email"}:
                raise reader.fail(table, key, f"unknown key; expected one of {', '.join((*PLATFORMS, 'email'))}")
        for platform in sorted(PLATFORMS):
            for user_id in sorted(reader.strings(entry, table, platform)):
                link(f"{platform}:{user_id}", name, table, platform)
        email = entry.get("email")
        if email is not None:
            if not isinstance(email, str) or "@" not in email:
                raise reader.fail(table, "email", "must be an e-mail address")
            by_email[email.lower()] = name
    for email, accounts in sorted(onepassword.people.items()):
        name = by_email.get(email, email)
        for key in sorted(accounts):
            link(key, name, "onepassword.people", email)
    return links


def load_policy(path: Path | None) -> Policy:
    """Load and validate the policy file; with no file, the built-in defaults."""
    if path is None:
        return Policy()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PolicyError(f"policy file {path} does not exist (JITPASS_POLICY)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"policy file {path} cannot be read: {exc.__class__.__name__}") from None
    return parse_policy(text, str(path))
