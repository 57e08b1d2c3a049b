-- Switchboard store schema for PostgreSQL, version 1.
--
-- Same shape as the SQLite schema. Several nodes write concurrently: the
-- row of a stream in `streams` / `event_streams` is the lock that orders
-- appends to that stream (a writer locks it, assigns the next offsets,
-- inserts, and commits), so offsets stay strictly increasing without gaps
-- across nodes. Writers lock stream rows in a fixed order (channels sorted,
-- then event streams sorted) so concurrent batches cannot deadlock.

-- One row per channel stream: the offset of the newest publication and the
-- epoch (incarnation) of the stream.
CREATE TABLE streams (
    channel     TEXT    NOT NULL PRIMARY KEY,
    top_offset  BIGINT  NOT NULL,
    epoch       TEXT    NOT NULL
);

-- Channel history: the retained publications of each channel stream.
CREATE TABLE publications (
    channel     TEXT    NOT NULL,
    pub_offset  BIGINT  NOT NULL,
    time_ms     BIGINT  NOT NULL,
    data        BYTEA   NOT NULL,
    -- True when publisher info is present, then the four info_* columns hold it.
    has_info    BOOLEAN NOT NULL DEFAULT FALSE,
    info_user   TEXT,
    info_client TEXT,
    info_conn   BYTEA,
    info_chan   BYTEA,
    -- Tags as a JSON object (text, so it round-trips exactly), NULL when none.
    tags        TEXT,
    PRIMARY KEY (channel, pub_offset)
);

-- Idempotency keys of recent publishes, expired lazily.
CREATE TABLE idempotency (
    channel     TEXT    NOT NULL,
    idem_key    TEXT    NOT NULL,
    pub_offset  BIGINT  NOT NULL,
    time_ms     BIGINT  NOT NULL,
    expires_ms  BIGINT  NOT NULL,
    PRIMARY KEY (channel, idem_key)
);
CREATE INDEX idempotency_expires ON idempotency (expires_ms);

-- Top offset of each domain event stream (the lock row of the stream).
CREATE TABLE event_streams (
    stream      TEXT    NOT NULL PRIMARY KEY,
    top_offset  BIGINT  NOT NULL
);

-- Domain event streams (audit, rooms, calls, ...). The payload is JSON
-- text (jsonb would reject \u0000 and reorder keys).
CREATE TABLE events (
    stream       TEXT    NOT NULL,
    event_offset BIGINT  NOT NULL,
    kind         TEXT    NOT NULL,
    payload      TEXT    NOT NULL,
    time_ms      BIGINT  NOT NULL,
    PRIMARY KEY (stream, event_offset)
);
