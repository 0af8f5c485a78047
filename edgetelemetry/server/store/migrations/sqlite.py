"""The SQLite store's migration steps.

1. The first schema (edgetelemetry 0.1, ``PRAGMA user_version`` = 1): one row per metric.
2. Compact heartbeats: one row per heartbeat, indexed by device and time, with its points
   encoded (``codec.py``), series named once per device, resend keys (``spool_streams``, a
   unique index), hourly rollups, counters on ``devices``.  Data of schema 1 is converted in
   place: every heartbeat, metric, model and deployment result is kept; heartbeats the first
   schema stored twice stay stored (without a resend key), so none is lost.  (Before its
   release, schema 2 clustered ``heartbeats`` by device and time; a file a development build
   made that way reads and writes as one of today, its write cost only grows with history.)
"""

from __future__ import annotations

from ..db import Db
from . import Step
from .convert import convert_v1

__all__ = ["STEPS", "V1_SCHEMA", "V2_SCHEMA", "schema_version"]

# The version table every step after the first keeps; created by whichever step runs first.
VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    version      INTEGER PRIMARY KEY,
    applied_at   REAL NOT NULL,
    description  TEXT NOT NULL
);
"""

# Frozen: the schema edgetelemetry 0.1 created (never edit; see the package docstring).
V1_SCHEMA = """
CREATE TABLE fleets (
    name          TEXT PRIMARY KEY,
    description   TEXT,
    created_at    REAL NOT NULL
);
CREATE TABLE devices (
    name             TEXT PRIMARY KEY,            -- device names are unique across fleets
    fleet            TEXT NOT NULL REFERENCES fleets(name),
    description      TEXT,
    registered_at    REAL NOT NULL,
    deregistered_at  REAL,                        -- NULL while registered
    auto_registered  INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX devices_by_fleet ON devices(fleet, name);

CREATE TABLE heartbeats (
    id             INTEGER PRIMARY KEY,
    device         TEXT NOT NULL REFERENCES devices(name),
    fleet          TEXT NOT NULL,
    received_at    REAL NOT NULL,                 -- server clock, epoch seconds
    agent_version  TEXT NOT NULL,
    access_key_id  TEXT                           -- the key that signed it
);
-- latest heartbeat per device: (device, received_at DESC, id DESC) LIMIT 1
CREATE INDEX heartbeats_by_device_time ON heartbeats(device, received_at);

CREATE TABLE models (                             -- current state, one row per device/model/version
    device              TEXT NOT NULL REFERENCES devices(name),
    model_name          TEXT NOT NULL,            -- '' when the heartbeat named no model
    model_version       TEXT NOT NULL,            -- '' when not reported
    first_seen          REAL NOT NULL,
    last_seen           REAL NOT NULL,            -- received_at of the last heartbeat listing it
    latest_sample_time  REAL,                     -- as last reported (device clock)
    latest_inference    REAL,
    PRIMARY KEY (device, model_name, model_version)
);

CREATE TABLE metrics (
    heartbeat_id   INTEGER NOT NULL REFERENCES heartbeats(id),
    device         TEXT NOT NULL,
    model_name     TEXT,                          -- NULL for AgentMetrics
    model_version  TEXT,
    metric_name    TEXT NOT NULL,
    dimension      TEXT NOT NULL DEFAULT '',
    value          REAL,
    ts             REAL NOT NULL                  -- EdgeMetric.Timestamp, else received_at
);
-- per-model metric over time: device, model, metric, time range
CREATE INDEX metrics_series ON metrics(device, model_name, metric_name, ts);
CREATE INDEX metrics_by_heartbeat ON metrics(heartbeat_id);

CREATE TABLE deployment_results (
    id                 INTEGER PRIMARY KEY,
    heartbeat_id       INTEGER NOT NULL REFERENCES heartbeats(id),
    device             TEXT NOT NULL,
    deployment_name    TEXT,
    deployment_status  TEXT,
    status_message     TEXT,
    start_time         REAL,
    end_time           REAL,
    models             TEXT NOT NULL              -- JSON array: DeploymentModels as sent
);
CREATE INDEX deployment_results_by_device ON deployment_results(device, id);

CREATE TABLE deployments (                        -- plans served by GetDeployments
    name        TEXT PRIMARY KEY,
    definition  TEXT NOT NULL,                    -- JSON EdgeDeployment (botocore shape)
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL
);
CREATE TABLE deployment_targets (
    kind        TEXT NOT NULL CHECK (kind IN ('fleet', 'device')),
    target      TEXT NOT NULL,
    deployment  TEXT NOT NULL REFERENCES deployments(name) ON DELETE CASCADE,
    PRIMARY KEY (kind, target, deployment)
);
"""

# Schema 2: the tables step 2 makes (fleets, deployments, deployment_targets stay as in 1).
V2_SCHEMA = """
CREATE TABLE devices (
    id               INTEGER PRIMARY KEY,
    name             TEXT NOT NULL UNIQUE,         -- unique across fleets
    fleet            TEXT NOT NULL REFERENCES fleets(name),
    description      TEXT,
    registered_at    REAL NOT NULL,
    deregistered_at  REAL,                         -- NULL while registered
    auto_registered  INTEGER NOT NULL DEFAULT 0,
    last_heartbeat   REAL,                         -- received_at of the newest heartbeat
    agent_version    TEXT,                         -- the AgentVersion it carried
    heartbeats       INTEGER NOT NULL DEFAULT 0,   -- stored so far (raw or rolled up)
    series           INTEGER NOT NULL DEFAULT 0,   -- series numbered so far
    max_span         REAL NOT NULL DEFAULT 0       -- widest spread of times in one heartbeat
);
CREATE INDEX devices_by_fleet ON devices(fleet, name);
CREATE TABLE access_keys (
    id    INTEGER PRIMARY KEY,
    name  TEXT NOT NULL UNIQUE
);
CREATE TABLE series (                              -- one per device/model/version/metric/dim
    device_id   INTEGER NOT NULL REFERENCES devices(id),
    number      INTEGER NOT NULL,                  -- 1.. within the device: points refer to it
    agent       INTEGER NOT NULL,                  -- 1: AgentMetrics, 0: ModelMetrics
    model       TEXT NOT NULL,
    version     TEXT NOT NULL,
    metric      TEXT NOT NULL,
    dimension   TEXT NOT NULL,
    last_ts     REAL,                              -- newest point (any heartbeat)
    last_value  REAL,
    PRIMARY KEY (device_id, number),
    UNIQUE (device_id, agent, model, metric, version, dimension)
) WITHOUT ROWID;
CREATE TABLE spool_streams (                       -- a spool-seq Dimension of a device
    id          INTEGER PRIMARY KEY,
    device_id   INTEGER NOT NULL REFERENCES devices(id),
    dimension   TEXT NOT NULL,                     -- <spool_id>/<part>/<parts> ('all': old agents)
    compacted   REAL,                              -- highest seq rolled up: a resend at or below
    UNIQUE (device_id, dimension)                  --   it is one already stored
);
-- Rows in arrival order (a rowid table), found by device and time through an index: a write
-- appends to the table's last page and adds a small index entry.  Clustered by device and time
-- (WITHOUT ROWID), each write went into its device's page of the whole history, and its cost
-- grew with it: 1.3-1.4x at 200,000 heartbeats against 10,000 (issue 15).
CREATE TABLE heartbeats (
    device_id      INTEGER NOT NULL REFERENCES devices(id),
    ts             REAL NOT NULL,                  -- earliest metric Timestamp, else received_at
    number         INTEGER NOT NULL,               -- the device's heartbeat number
    received_at    REAL NOT NULL,                  -- server clock
    agent_version  TEXT NOT NULL,
    key_id         INTEGER REFERENCES access_keys(id),
    stream_id      INTEGER REFERENCES spool_streams(id),
    seq            REAL,                           -- spool-seq Value (with stream_id)
    points         BLOB NOT NULL                   -- the metrics (codec.py)
);
CREATE UNIQUE INDEX heartbeats_by_device ON heartbeats(device_id, ts, number);
CREATE UNIQUE INDEX heartbeats_resend_key ON heartbeats(stream_id, seq)
    WHERE stream_id IS NOT NULL;
CREATE TABLE rollups (                             -- one hour of one series
    device_id      INTEGER NOT NULL,
    hour           INTEGER NOT NULL,               -- floor(ts / 3600)
    number         INTEGER NOT NULL,               -- the series
    points         INTEGER NOT NULL,               -- values merged (non-null)
    total          REAL NOT NULL,                  -- their sum
    minimum        REAL,
    maximum        REAL,
    weighted       REAL NOT NULL,                  -- sum of value * weight
    weight         REAL NOT NULL,                  -- sum of weights (the family's -count)
    PRIMARY KEY (device_id, hour, number)
) WITHOUT ROWID;
CREATE TABLE models (                              -- current state per device/model/version
    device_id           INTEGER NOT NULL REFERENCES devices(id),
    model_name          TEXT NOT NULL,             -- '' when the heartbeat named no model
    model_version       TEXT NOT NULL,             -- '' when not reported
    first_seen          REAL NOT NULL,
    last_seen           REAL NOT NULL,
    latest_sample_time  REAL,                      -- as last reported (device clock)
    latest_inference    REAL,
    PRIMARY KEY (device_id, model_name, model_version)
) WITHOUT ROWID;
CREATE TABLE deployment_results (
    id                 INTEGER PRIMARY KEY,
    device_id          INTEGER NOT NULL REFERENCES devices(id),
    received_at        REAL NOT NULL,
    deployment_name    TEXT,
    deployment_status  TEXT,
    status_message     TEXT,
    start_time         REAL,
    end_time           REAL,
    models             TEXT NOT NULL               -- JSON array: DeploymentModels as sent
);
CREATE INDEX deployment_results_by_device ON deployment_results(device_id, id);
"""

_V1_TABLES = ("devices", "heartbeats", "models", "metrics", "deployment_results")
_V1_INDEXES = ("devices_by_fleet", "heartbeats_by_device_time", "metrics_series",
               "metrics_by_heartbeat", "deployment_results_by_device")


def _step1(db: Db, now: float) -> None:
    db.script(V1_SCHEMA + VERSION_TABLE)


def _step2(db: Db, now: float) -> None:
    db.script(VERSION_TABLE)
    db.run(
        "INSERT INTO schema_version(version, applied_at, description) VALUES (?, ?, ?) "
        "ON CONFLICT DO NOTHING",
        (1, now, _STEP1),
    )
    # set the first schema's tables aside (their foreign keys follow the new names), make the
    # new ones, convert, and drop the old
    for index in _V1_INDEXES:
        db.run(f"DROP INDEX {index}")
    for table in _V1_TABLES:
        db.run(f"ALTER TABLE {table} RENAME TO v1_{table}")
    db.script(V2_SCHEMA)
    convert_v1(db)
    for table in ("metrics", "deployment_results", "models", "heartbeats", "devices"):
        db.run(f"DROP TABLE v1_{table}")


_STEP1 = "the first schema: one row per metric"

STEPS = (
    Step(1, _STEP1, _step1),
    Step(2, "compact heartbeats: encoded points, series, resend keys, hourly rollups", _step2),
)


def schema_version(db: Db) -> int:
    """The version of a SQLite store (0 when empty); ``ValueError`` for another application's
    file."""
    tables = {r[0] for r in db.rows("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "schema_version" in tables:
        row = db.one("SELECT max(version) FROM schema_version")
        return int(row[0]) if row is not None and row[0] is not None else 0
    user_version = db.one("PRAGMA user_version")
    if not tables:
        return 0
    if user_version is not None and user_version[0] == 1 and "heartbeats" in tables:
        return 1  # the first schema kept its version in the header only
    raise ValueError("another application's SQLite file")
