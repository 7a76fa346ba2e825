"""The database schema as an ordered, append-only list of migrations.

Migration N (1-based) takes a database at ``PRAGMA user_version`` N-1 to N. Never edit or reorder
a released migration: append a new one.
"""

from __future__ import annotations

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: the outbox and a small key-value table.
    (
        """CREATE TABLE outbox (
            id          INTEGER PRIMARY KEY,
            event_key   TEXT    NOT NULL UNIQUE,   -- platform:event; one row per chat event
            user_key    TEXT    NOT NULL,
            room        TEXT    NOT NULL,
            is_direct   INTEGER NOT NULL,
            recipients  TEXT    NOT NULL,          -- JSON: {"to": [..], "cc": [..], "bcc": [..]}
            subject     TEXT    NOT NULL,
            raw         BLOB,                      -- encrypted message; dropped once sent
            state       TEXT    NOT NULL
                CHECK (state IN ('queued', 'sending', 'sent', 'failed', 'unknown')),
            detail      TEXT,                      -- Gmail message id, or the reason it failed
            created_at  REAL    NOT NULL,
            updated_at  REAL    NOT NULL
        )""",
        "CREATE INDEX outbox_user_created ON outbox (user_key, created_at)",
        "CREATE INDEX outbox_state ON outbox (state)",
        "CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    ),
    # 2: linked Google accounts and pending logins.
    (
        """CREATE TABLE accounts (
            user_key       TEXT PRIMARY KEY,
            address        TEXT NOT NULL,
            refresh_token  BLOB NOT NULL,             -- encrypted
            scopes         TEXT NOT NULL,
            connected_at   REAL NOT NULL
        )""",
        """CREATE TABLE pending_logins (
            state         TEXT PRIMARY KEY,           -- 256-bit random, single use
            user_key      TEXT NOT NULL,
            display_name  TEXT NOT NULL,
            room          TEXT NOT NULL,
            verifier      BLOB NOT NULL,              -- encrypted PKCE verifier
            expires_at    REAL NOT NULL,
            used          INTEGER NOT NULL DEFAULT 0
        )""",
    ),
    # 3: where each user's direct chat with the bot is, so links never go to a group.
    ("CREATE TABLE direct_rooms (user_key TEXT PRIMARY KEY, room TEXT NOT NULL)",),
    # 4: chat events already handled, so a redelivered update or event is not handled twice.
    (
        "CREATE TABLE seen_events (event_key TEXT PRIMARY KEY, seen_at REAL NOT NULL)",
        "CREATE INDEX seen_events_at ON seen_events (seen_at)",
    ),
    # 5: previews (held), the undo window (due_at), cancelled mail; aliases; known recipients.
    (
        """CREATE TABLE outbox_new (
            id          INTEGER PRIMARY KEY,
            event_key   TEXT    NOT NULL UNIQUE,
            user_key    TEXT    NOT NULL,
            room        TEXT    NOT NULL,
            is_direct   INTEGER NOT NULL,
            recipients  TEXT    NOT NULL,
            subject     TEXT    NOT NULL,
            raw         BLOB,
            state       TEXT    NOT NULL CHECK (state IN
                ('held', 'queued', 'sending', 'sent', 'failed', 'unknown', 'cancelled')),
            detail      TEXT,
            created_at  REAL    NOT NULL,
            updated_at  REAL    NOT NULL,
            due_at      REAL    NOT NULL DEFAULT 0,   -- not sent before this time (undo window)
            author      TEXT    NOT NULL DEFAULT '',  -- display name, for minimal confirmations
            told        INTEGER NOT NULL DEFAULT 0    -- its owner has heard the outcome
        )""",
        """INSERT INTO outbox_new (id, event_key, user_key, room, is_direct, recipients, subject,
            raw, state, detail, created_at, updated_at, told)
           SELECT id, event_key, user_key, room, is_direct, recipients, subject, raw, state,
            detail, created_at, updated_at, 1 FROM outbox""",
        "DROP TABLE outbox",
        "ALTER TABLE outbox_new RENAME TO outbox",
        "CREATE INDEX outbox_user_created ON outbox (user_key, created_at)",
        "CREATE INDEX outbox_state ON outbox (state)",
        """CREATE TABLE aliases (
            user_key  TEXT NOT NULL,
            name      TEXT NOT NULL,
            address   TEXT NOT NULL,
            PRIMARY KEY (user_key, name)
        )""",
        """CREATE TABLE known_recipients (
            user_key  TEXT NOT NULL,
            address   TEXT NOT NULL,
            PRIMARY KEY (user_key, address)
        )""",
    ),
    # 6: chat events are claimed when received (state 'claimed', by a process run), so a
    # redelivery during handling is handled by nobody else; rows from before were handled.
    (
        "ALTER TABLE seen_events ADD COLUMN state TEXT NOT NULL DEFAULT 'done'"
        " CHECK (state IN ('claimed', 'done'))",
        "ALTER TABLE seen_events ADD COLUMN run TEXT NOT NULL DEFAULT ''",
    ),
    # 7: one person across networks: chat accounts joined into one (the person key is the
    # first account's own key, so its data stays where it is), the codes that join them, and
    # which person each mail was sent for (histories and send limits are the person's).
    (
        "CREATE TABLE people (user_key TEXT PRIMARY KEY, person TEXT NOT NULL)",
        "CREATE INDEX people_person ON people (person)",
        """CREATE TABLE link_codes (
            code_hash     TEXT PRIMARY KEY,           -- SHA-256 of the code, never the code
            user_key      TEXT NOT NULL,              -- who asked for it (/link)
            display_name  TEXT NOT NULL,
            expires_at    REAL NOT NULL,
            claimed_by    TEXT NOT NULL DEFAULT '',   -- who typed it (single use)
            claimer_name  TEXT NOT NULL DEFAULT ''
        )""",
        "CREATE TABLE link_tries (user_key TEXT NOT NULL, at REAL NOT NULL)",
        "CREATE INDEX link_tries_user ON link_tries (user_key, at)",
        "ALTER TABLE outbox ADD COLUMN person TEXT NOT NULL DEFAULT ''",
        "UPDATE outbox SET person = user_key",
        "CREATE INDEX outbox_person_created ON outbox (person, created_at)",
        # The chat account that made a Gmail link held by a person ('': the person's own).
        "ALTER TABLE accounts ADD COLUMN made_by TEXT NOT NULL DEFAULT ''",
    ),
    # 8: each person's settings (time zone, signature), and the scheduler's look for the next
    # queued mail by its due time.
    (
        """CREATE TABLE user_settings (
            user_key  TEXT NOT NULL,                  -- the person (bot.store.people)
            name      TEXT NOT NULL,
            value     TEXT NOT NULL,
            PRIMARY KEY (user_key, name)
        )""",
        "CREATE INDEX outbox_state_due ON outbox (state, due_at)",
    ),
    # 9: link health: when Google last accepted each link, when it ends, whether its owner
    # was warned; links Google ended, until their owners were told.
    (
        """CREATE TABLE link_health (
            user_key      TEXT PRIMARY KEY,
            connected_at  REAL NOT NULL,      -- the link this is about (accounts.connected_at)
            confirmed_at  REAL,               -- Google last accepted its refresh token
            expires_at    REAL,               -- when Google ends it, if Google said
            warned        INTEGER NOT NULL DEFAULT 0   -- its owner was warned of its end
        )""",
        """CREATE TABLE ended_links (
            user_key  TEXT PRIMARY KEY,           -- the person whose link it was
            tell      TEXT NOT NULL,              -- the chat account to tell (that made it)
            address   TEXT NOT NULL,
            ended_at  REAL NOT NULL,
            told      INTEGER NOT NULL DEFAULT 0   -- its owner was told (once)
        )""",
    ),
    # 10: guided drafts (/mail with no arguments), one per user, its answers sealed.
    (
        """CREATE TABLE drafts (
            user_key    TEXT PRIMARY KEY,
            room        TEXT NOT NULL,
            step        TEXT NOT NULL CHECK (step IN ('to', 'subject', 'body')),
            sealed      BLOB NOT NULL,   -- JSON {to, subject, body, answered}, sealed like mail
            updated_at  REAL NOT NULL    -- the last answer: the draft expires from then
        )""",
    ),
    # 11: several instances on one database: each process run's heartbeat, the leases of the
    # jobs that must run once (held with an epoch), and which run claimed or tells a mail.
    (
        """CREATE TABLE instances (
            run         TEXT PRIMARY KEY,   -- one process run (bot.store.instances)
            host        TEXT NOT NULL,
            pid         INTEGER NOT NULL,
            started_at  REAL NOT NULL,
            beat_at     REAL NOT NULL       -- its last heartbeat
        )""",
        """CREATE TABLE leases (
            name        TEXT PRIMARY KEY,   -- a job that must run once (bot.leader)
            holder      TEXT NOT NULL,      -- the run holding it
            epoch       INTEGER NOT NULL,   -- counts holders: an old one's writes are refused
            expires_at  REAL NOT NULL
        )""",
        "ALTER TABLE outbox ADD COLUMN run TEXT NOT NULL DEFAULT ''",
    ),
    # 12: replies an instance could not send itself on a network only the leader of its
    # intake speaks on (a Matrix device's E2EE store has one user), until the leader sends them.
    (
        """CREATE TABLE relayed (
            id         INTEGER PRIMARY KEY,
            platform   TEXT NOT NULL,
            room       TEXT NOT NULL,
            sealed     BLOB NOT NULL,   -- the reply as JSON, sealed like mail (it names it)
            queued_at  REAL NOT NULL
        )""",
    ),
    # 13: each chat's next send slot, shared by the instances of one bot account (its limits
    # are the account's, not a process's).
    (
        """CREATE TABLE send_slots (
            chat     TEXT PRIMARY KEY,   -- platform:room
            next_at  REAL NOT NULL       -- wall-clock time the chat's next message may go
        )""",
    ),
    # 14: outbox_state_due (state, due_at) serves every lookup by state, so the index on state
    # alone only cost each accept and each change of state another B-tree to write.
    ("DROP INDEX IF EXISTS outbox_state",),
)
