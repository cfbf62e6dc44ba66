-- runstore-postgres schema version 1: runs and their index, streams, artifacts.
-- Applied by runstore_postgres._migrate in one transaction, in the store's schema
-- (search_path), then recorded in runstore_schema_version.

-- One row a run. manifest, state, summary and record are the documents exactly as
-- runstore writes them (JSON bytes); the columns beside them are what queries use.
CREATE TABLE runs (
    run_id         text COLLATE "C" PRIMARY KEY,
    status         text COLLATE "C" NOT NULL,
    sut_name       text COLLATE "C",
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    finished_at    timestamptz,
    instance_count bigint,
    pass_count     bigint,
    fail_count     bigint,
    error_count    bigint,
    skip_count     bigint,
    pass_rate      double precision,
    duration_ms    bigint,
    tags           text[] COLLATE "C" NOT NULL,
    metadata       jsonb NOT NULL,
    metrics        jsonb NOT NULL,
    -- a value PostgreSQL cannot hold exactly (a NUL character, an integer outside
    -- 64 bits): while any run is marked, queries are answered by the reference
    inexact        boolean NOT NULL,
    revision       bigint NOT NULL,
    manifest       bytea NOT NULL,
    state          bytea NOT NULL,
    summary        bytea,
    record         bytea NOT NULL
);
CREATE INDEX runs_created ON runs (created_at DESC, run_id DESC);
CREATE INDEX runs_status ON runs (status, created_at DESC);
CREATE INDEX runs_sut ON runs (sut_name, created_at DESC);
CREATE INDEX runs_metadata ON runs USING gin (metadata jsonb_path_ops);
CREATE INDEX runs_tags ON runs USING gin (tags);
CREATE INDEX runs_inexact ON runs (run_id) WHERE inexact;

-- Highest N per generated-id prefix (run_20240115_ for run_20240115_042), kept by a
-- trigger, so generating a run id is one lookup however many runs exist. It
-- remembers the ids of deleted runs too.
CREATE TABLE run_id_counters (
    prefix  text COLLATE "C" PRIMARY KEY,
    highest bigint NOT NULL
);
CREATE FUNCTION runstore_count_run_id() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    digits text := substring(NEW.run_id FROM '[0-9]+$');
BEGIN
    IF digits IS NOT NULL AND length(digits) < length(NEW.run_id) AND length(digits) <= 18 THEN
        INSERT INTO run_id_counters AS c (prefix, highest)
        VALUES (left(NEW.run_id, length(NEW.run_id) - length(digits)), digits::bigint)
        ON CONFLICT (prefix) DO UPDATE SET highest = greatest(c.highest, excluded.highest);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER runs_count_run_id AFTER INSERT ON runs
    FOR EACH ROW EXECUTE FUNCTION runstore_count_run_id();

-- One row a stream of a run: its size in bytes, its record count, and the epoch of
-- the writer that owns it (a fencing token: opening a writer bumps it, and a
-- writer's append lands only while the epoch is still its own).
CREATE TABLE streams (
    stream_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id    text COLLATE "C" NOT NULL,
    name      text COLLATE "C" NOT NULL,
    size      bigint NOT NULL DEFAULT 0,
    records   bigint NOT NULL DEFAULT 0,
    epoch     bigint NOT NULL DEFAULT 1,
    UNIQUE (run_id, name)
);

-- One row a record: seq counts 0, 1, 2 ... per stream without gaps; end_pos is the
-- byte offset just past the line in the stream's JSONL form (line ends in \n).
CREATE TABLE stream_records (
    stream_id bigint NOT NULL REFERENCES streams ON DELETE CASCADE,
    seq       bigint NOT NULL,
    end_pos   bigint NOT NULL,
    line      bytea NOT NULL,
    PRIMARY KEY (stream_id, seq)
);
CREATE UNIQUE INDEX stream_records_end ON stream_records (stream_id, end_pos);

-- Artifacts: write-once, content in chunks of at most 1 MiB.
CREATE TABLE artifacts (
    artifact_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id      text COLLATE "C" NOT NULL,
    name        text COLLATE "C" NOT NULL,
    sha256      text NOT NULL,
    size        bigint NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (run_id, name)
);
CREATE TABLE artifact_chunks (
    artifact_id bigint NOT NULL REFERENCES artifacts ON DELETE CASCADE,
    n           integer NOT NULL,
    data        bytea NOT NULL,
    PRIMARY KEY (artifact_id, n)
);
