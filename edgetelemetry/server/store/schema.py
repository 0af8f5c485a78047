"""The SQLite store's schema (``PRAGMA user_version`` = ``SCHEMA_VERSION``), also in
``docs/endpoint.md``."""

from __future__ import annotations

__all__ = ["SCHEMA", "SCHEMA_VERSION"]

SCHEMA_VERSION = 1

SCHEMA = """
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
