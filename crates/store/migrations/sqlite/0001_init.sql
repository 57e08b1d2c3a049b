-- Switchboard store schema, version 1.
--
-- The same shape is meant to be portable to PostgreSQL: every stream is a
-- table keyed by (stream name, offset). Offsets are called `*_offset`
-- because OFFSET is a reserved word in both SQLite and PostgreSQL.

-- One row per channel stream: the offset of the newest publication and the
-- epoch (incarnation) of the stream.
CREATE TABLE streams (
    channel     TEXT    NOT NULL PRIMARY KEY,
    top_offset  INTEGER NOT NULL,
    epoch       TEXT    NOT NULL
);

-- Channel history: the retained publications of each channel stream.
CREATE TABLE publications (
    channel     TEXT    NOT NULL,
    pub_offset  INTEGER NOT NULL,
    time_ms     INTEGER NOT NULL,
    data        BLOB    NOT NULL,
    -- 1 when publisher info is present, then the four info_* columns hold it.
    has_info    INTEGER NOT NULL DEFAULT 0,
    info_user   TEXT,
    info_client TEXT,
    info_conn   BLOB,
    info_chan   BLOB,
    -- Tags as a JSON object, NULL when there are none.
    tags        TEXT,
    PRIMARY KEY (channel, pub_offset)
);

-- Idempotency keys of recent publishes, expired lazily.
CREATE TABLE idempotency (
    channel     TEXT    NOT NULL,
    idem_key    TEXT    NOT NULL,
    pub_offset  INTEGER NOT NULL,
    time_ms     INTEGER NOT NULL,
    expires_ms  INTEGER NOT NULL,
    PRIMARY KEY (channel, idem_key)
);
CREATE INDEX idempotency_expires ON idempotency (expires_ms);

-- Domain event streams (audit, rooms, calls, ...).
CREATE TABLE events (
    stream       TEXT    NOT NULL,
    event_offset INTEGER NOT NULL,
    kind         TEXT    NOT NULL,
    payload      TEXT    NOT NULL,
    time_ms      INTEGER NOT NULL,
    PRIMARY KEY (stream, event_offset)
);
