"""The SQLite schema: every migration step, in order (the store applies the missing ones at open).

Released steps never change; a new column, table or index is a new step at the end.
"""

from __future__ import annotations

__all__ = ["FACTS_CREATED_V3", "FACTS_FROM_EVENTS_V3", "MIGRATIONS", "SCHEMA_VERSION"]

# Request audit event types: the ones that carry a request id and feed `request_facts`.
_FACT_TYPES_V3 = (
    "'request.created', 'request.approval_added', 'request.approved', 'request.declined', 'request.cancelled', "
    "'request.timed_out', 'grant.activated', 'grant.revealed', 'grant.code_shown', 'grant.expired', 'grant.revoked'"
)
_FIRST_CREATED = "excluded.created_seq IS NOT NULL AND coalesce(created_seq > excluded.created_seq, 1)"
# request_facts rows recomputed from the events table (migration 3, and after a purge: `only` narrows it).
# Part of a released migration: change these only together with a new migration step.
FACTS_FROM_EVENTS_V3 = f"""
    SELECT request_id, item, vault, min(seq), max(seq), min(at), max(at),
           min(iif(type = 'request.created', seq, NULL)), NULL, NULL,
           min(iif(type = 'request.approved', at, NULL)),
           max(iif(type IN ('request.approved', 'request.declined'), actor_platform || ':' || actor_user_id, NULL)),
           max(iif(type IN ('request.approved', 'request.declined'), seq, NULL)),
           min(iif(type = 'grant.activated', at, NULL)),
           sum(type = 'request.created'), sum(type = 'request.approved'), sum(type = 'request.declined'),
           sum(type = 'request.cancelled'), sum(type = 'request.timed_out'),
           sum(type IN ('grant.expired', 'grant.revoked')), sum(type = 'grant.revealed'),
           sum(type = 'grant.code_shown')
    FROM events WHERE type IN ({_FACT_TYPES_V3}) AND request_id IS NOT NULL{{only}}
    GROUP BY request_id"""
FACTS_CREATED_V3 = """
    UPDATE request_facts SET (created_at, requester) = (
        SELECT at, actor_platform || ':' || actor_user_id FROM events WHERE seq = request_facts.created_seq)
    WHERE created_seq IS NOT NULL AND created_at IS NULL"""

# Each step runs once, in order, inside the transaction that records its number in schema_version.
# Never edit a released step: append a new one.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        """CREATE TABLE items (
            name TEXT PRIMARY KEY,
            vault TEXT NOT NULL,
            username TEXT NOT NULL DEFAULT '',
            url TEXT NOT NULL DEFAULT '',
            notes TEXT NOT NULL DEFAULT '',
            tags TEXT NOT NULL DEFAULT '[]',
            has_password INTEGER NOT NULL,
            has_totp INTEGER NOT NULL,
            created_at TEXT,
            updated_at TEXT,
            password_rotated_at TEXT,
            rotation_due TEXT,
            key_id TEXT NOT NULL,
            wrapped_key BLOB NOT NULL,
            nonce BLOB NOT NULL,
            ciphertext BLOB NOT NULL
        )""",
        "CREATE INDEX items_vault ON items (vault)",
        """CREATE TABLE requests (
            id TEXT PRIMARY KEY,
            status TEXT NOT NULL,
            item TEXT NOT NULL,
            vault TEXT NOT NULL,
            requester_key TEXT NOT NULL,
            kind TEXT NOT NULL,
            parent_id TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            timeout_at TEXT,
            starts_at TEXT,
            ends_at TEXT,
            version INTEGER NOT NULL,
            refs_version INTEGER NOT NULL,
            refs TEXT NOT NULL,
            created_seq INTEGER NOT NULL,
            data TEXT NOT NULL
        )""",
        "CREATE INDEX requests_timeout ON requests (status, timeout_at)",
        "CREATE INDEX requests_starts ON requests (status, starts_at)",
        "CREATE INDEX requests_ends ON requests (status, ends_at)",
        "CREATE INDEX requests_requester ON requests (requester_key, created_at)",
        "CREATE INDEX requests_item ON requests (item, status)",
        "CREATE INDEX requests_parent ON requests (parent_id)",
        "CREATE INDEX requests_created ON requests (created_at, created_seq)",
        """CREATE TABLE events (
            seq INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            at TEXT NOT NULL,
            type TEXT NOT NULL,
            actor_platform TEXT,
            actor_user_id TEXT,
            actor TEXT,
            request_id TEXT,
            item TEXT,
            vault TEXT,
            reason TEXT NOT NULL,
            details TEXT NOT NULL,
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL
        )""",
        "CREATE INDEX events_at ON events (at)",
        "CREATE INDEX events_type ON events (type, seq)",
        "CREATE INDEX events_item ON events (item, seq)",
        "CREATE INDEX events_request ON events (request_id, seq)",
        "CREATE INDEX events_actor ON events (actor_platform, actor_user_id, seq)",
    ),
    (
        # Reports: every per-type range scan is answered from this index alone.
        "CREATE INDEX IF NOT EXISTS events_report "
        "ON events (type, at, request_id, vault, item, actor_platform, actor_user_id)",
    ),
    (
        # Reports: one row per request, kept by a trigger in the transaction of every event append (any
        # writer, any process), so a report aggregates ~1 row per request instead of ~5 events. Purges
        # rebuild the rows of the requests whose events they delete (SqliteStore.purge_events).
        """CREATE TABLE request_facts (
            request_id TEXT PRIMARY KEY,
            item TEXT,
            vault TEXT,
            first_seq INTEGER NOT NULL,
            last_seq INTEGER NOT NULL,
            first_at TEXT NOT NULL,
            last_at TEXT NOT NULL,
            created_seq INTEGER,
            created_at TEXT,
            requester TEXT,
            approved_at TEXT,
            decider TEXT,
            decided_seq INTEGER,
            activated_at TEXT,
            n_created INTEGER NOT NULL,
            n_approved INTEGER NOT NULL,
            n_declined INTEGER NOT NULL,
            n_cancelled INTEGER NOT NULL,
            n_timed_out INTEGER NOT NULL,
            n_ended INTEGER NOT NULL,
            n_reveals INTEGER NOT NULL,
            n_codes INTEGER NOT NULL
        ) WITHOUT ROWID""",
        f"""CREATE TRIGGER request_facts_append AFTER INSERT ON events
        WHEN new.request_id IS NOT NULL AND new.type IN ({_FACT_TYPES_V3})
        BEGIN
            INSERT INTO request_facts VALUES (
                new.request_id, new.item, new.vault, new.seq, new.seq, new.at, new.at,
                iif(new.type = 'request.created', new.seq, NULL), iif(new.type = 'request.created', new.at, NULL),
                iif(new.type = 'request.created', new.actor_platform || ':' || new.actor_user_id, NULL),
                iif(new.type = 'request.approved', new.at, NULL),
                iif(new.type IN ('request.approved', 'request.declined'),
                    new.actor_platform || ':' || new.actor_user_id, NULL),
                iif(new.type IN ('request.approved', 'request.declined'), new.seq, NULL),
                iif(new.type = 'grant.activated', new.at, NULL),
                new.type = 'request.created', new.type = 'request.approved', new.type = 'request.declined',
                new.type = 'request.cancelled', new.type = 'request.timed_out',
                new.type IN ('grant.expired', 'grant.revoked'), new.type = 'grant.revealed',
                new.type = 'grant.code_shown')
            ON CONFLICT (request_id) DO UPDATE SET
                first_seq = min(first_seq, excluded.first_seq), last_seq = max(last_seq, excluded.last_seq),
                first_at = min(first_at, excluded.first_at), last_at = max(last_at, excluded.last_at),
                created_seq = iif({_FIRST_CREATED}, excluded.created_seq, created_seq),
                created_at = iif({_FIRST_CREATED}, excluded.created_at, created_at),
                requester = iif({_FIRST_CREATED}, excluded.requester, requester),
                approved_at = coalesce(min(approved_at, excluded.approved_at), approved_at, excluded.approved_at),
                decider = coalesce(max(decider, excluded.decider), decider, excluded.decider),
                decided_seq = coalesce(max(decided_seq, excluded.decided_seq), decided_seq, excluded.decided_seq),
                activated_at = coalesce(min(activated_at, excluded.activated_at), activated_at,
                                        excluded.activated_at),
                n_created = n_created + excluded.n_created, n_approved = n_approved + excluded.n_approved,
                n_declined = n_declined + excluded.n_declined, n_cancelled = n_cancelled + excluded.n_cancelled,
                n_timed_out = n_timed_out + excluded.n_timed_out, n_ended = n_ended + excluded.n_ended,
                n_reveals = n_reveals + excluded.n_reveals, n_codes = n_codes + excluded.n_codes;
        END""",
        # Existing trails: one aggregate pass (then the creating event's time and person by seq).
        f"INSERT INTO request_facts {FACTS_FROM_EVENTS_V3.format(only='')}",
        FACTS_CREATED_V3,
    ),
    (
        # Items read from 1Password: where they live (ids, version, password fingerprint), never a secret.
        "ALTER TABLE items ADD COLUMN source TEXT NOT NULL DEFAULT 'builtin'",
        "ALTER TABLE items ADD COLUMN category TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE items ADD COLUMN external TEXT",
    ),
    (
        # Durable chat effects: written in the transaction of the state change that causes them,
        # leased by one worker at a time, retried until done, failed (budget spent) or dropped.
        """CREATE TABLE effects (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            request_id TEXT NOT NULL,
            platform TEXT NOT NULL,
            kind TEXT NOT NULL,
            lane TEXT NOT NULL,
            payload TEXT NOT NULL,
            status TEXT NOT NULL,
            attempts INTEGER NOT NULL,
            due_at TEXT NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            error TEXT NOT NULL,
            lease_owner TEXT,
            lease_until TEXT
        )""",
        "CREATE INDEX effects_due ON effects (status, due_at)",
        "CREATE INDEX effects_lane ON effects (request_id, lane, status, seq)",
    ),
    (
        # Invariants held by the store, not by a read before the write (storage/codec.py `claims`).
        "ALTER TABLE requests ADD COLUMN open_claim TEXT",
        "ALTER TABLE requests ADD COLUMN hold_claim TEXT",
        "UPDATE requests SET open_claim = 'free:' || id, hold_claim = 'free:' || id",
        # Existing open requests claim their place, the first one per person and item only. Their
        # exclusivity was not recorded: existing active grants hold nothing until they end.
        """UPDATE requests SET open_claim = 'open:' || requester_key || '|' || item
           WHERE kind = 'access' AND status IN ('pending', 'approved', 'active') AND created_seq = (
               SELECT min(r.created_seq) FROM requests r
               WHERE r.requester_key = requests.requester_key AND r.item = requests.item
                 AND r.kind = 'access' AND r.status IN ('pending', 'approved', 'active'))""",
        "CREATE UNIQUE INDEX requests_open_claim ON requests (open_claim)",
        "CREATE UNIQUE INDEX requests_hold_claim ON requests (hold_claim)",
    ),
    (
        # Rate limits held by the store, one budget for every process on the file (storage/sqlite/rate_limits.py).
        # `until`: a JSON list of when each attempt granted in the window leaves it, oldest first (at most
        # the limit's count); `expires_at`: when the last one does, after which the row counts nothing and
        # is deleted unless a burst of refusals is still open (`refused` > 0, from `first_refused_at` to
        # `last_refused_at`, first by `actor`, the key free again at `retry_at`).
        """CREATE TABLE rate_windows (
            key TEXT PRIMARY KEY,
            until TEXT NOT NULL,
            expires_at TEXT NOT NULL,
            refused INTEGER NOT NULL,
            first_refused_at TEXT,
            last_refused_at TEXT,
            retry_at TEXT,
            actor TEXT
        ) WITHOUT ROWID""",
        "CREATE INDEX rate_windows_expires ON rate_windows (expires_at)",
        "CREATE INDEX rate_windows_bursts ON rate_windows (retry_at) WHERE refused > 0",
    ),
    (
        # Migration 8. Who has opened the app's home tab (Slack App Home), first time only: a change is
        # published to the tabs of these people (storage/sqlite/home_tabs.py, adapters/slack/home.py).
        """CREATE TABLE home_tabs (
            platform TEXT NOT NULL,
            user_id TEXT NOT NULL,
            opened_at TEXT NOT NULL,
            PRIMARY KEY (platform, user_id)
        ) WITHOUT ROWID""",
        "CREATE INDEX home_tabs_opened ON home_tabs (platform, opened_at)",
    ),
    (
        # Migration 9. The secret lane (deliveries, wipes) is claimed before the other effects: under a
        # backlog (a restart after downtime) a password leaves chat before cards and messages are tidied.
        # The claim's first pass walks only these (storage/sqlite/store.py `_CLAIM_SECRET`).
        "CREATE INDEX effects_secret_due ON effects (due_at) WHERE status = 'pending' AND lane = 'secret'",
    ),
    (
        # Migration 10. The scheduler's indexes hold only the rows each one serves (a pending request its
        # timeout, an approved one its start, an active grant its end) and the parent index only
        # extensions: a new request is written to 3 of the requests table's indexes fewer, and a status
        # change moves a row between two of them instead of rewriting three. Every query on them names
        # the status (`DUE_RULES`) or the parent, so each still finds its index.
        "DROP INDEX requests_timeout",
        "DROP INDEX requests_starts",
        "DROP INDEX requests_ends",
        "DROP INDEX requests_parent",
        "CREATE INDEX requests_timeout ON requests (timeout_at) WHERE status = 'pending'",
        "CREATE INDEX requests_starts ON requests (starts_at) WHERE status = 'approved'",
        "CREATE INDEX requests_ends ON requests (ends_at) WHERE status = 'active'",
        "CREATE INDEX requests_parent ON requests (parent_id) WHERE parent_id IS NOT NULL",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)
