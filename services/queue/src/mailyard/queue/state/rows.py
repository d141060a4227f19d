"""The queue state's rows: recipient states, the SQLite schema, the records read
from it, and the chunking of id lists for IN (...) queries."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass

QUEUED, DEFERRED, DELIVERED, FAILED, HELD = 1, 2, 3, 4, 5

STATE_NAMES = {QUEUED: "queued", DEFERRED: "deferred", DELIVERED: "delivered",
               FAILED: "failed", HELD: "held"}
FINAL = (DELIVERED, FAILED)

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
  queue_id TEXT PRIMARY KEY,
  sender TEXT NOT NULL,
  size INTEGER NOT NULL,
  received_at REAL NOT NULL,
  spool_path TEXT NOT NULL,
  sha256 TEXT NOT NULL,
  origin INTEGER NOT NULL,
  client_ip TEXT NOT NULL DEFAULT '',
  auth_user TEXT NOT NULL DEFAULT '',
  smtputf8 INTEGER NOT NULL DEFAULT 0,
  body_8bit INTEGER NOT NULL DEFAULT 0,
  held INTEGER NOT NULL DEFAULT 0,
  seq INTEGER NOT NULL DEFAULT 0,          -- dispatches so far: job_id = <queue_id>-<seq>
  bounce_id TEXT NOT NULL DEFAULT '',      -- queue id reserved for the pending bounce
  warned INTEGER NOT NULL DEFAULT 0        -- delay warning sent
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS messages_received ON messages (received_at);
CREATE TABLE IF NOT EXISTS recipients (
  queue_id TEXT NOT NULL,
  address TEXT NOT NULL,
  channel INTEGER NOT NULL,
  domain TEXT NOT NULL,
  state INTEGER NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  next_attempt REAL NOT NULL DEFAULT 0,
  last_reply TEXT NOT NULL DEFAULT '',
  enhanced_code TEXT NOT NULL DEFAULT '',
  route TEXT NOT NULL DEFAULT '',
  job_id TEXT NOT NULL DEFAULT '',
  queued_at REAL NOT NULL DEFAULT 0,
  bounced INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (queue_id, address)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS recipients_due ON recipients (state, next_attempt);
-- Completed messages whose spool removal may not be on disk yet (it is not fsynced one by
-- one): a file that comes back after an OS crash is recognised as done, never redelivered.
-- Forgotten after a sync of the file system (forget_completed).
CREATE TABLE IF NOT EXISTS completed (
  queue_id TEXT PRIMARY KEY,
  at REAL NOT NULL
) WITHOUT ROWID;
"""


@dataclass(frozen=True)
class Message:
    queue_id: str
    sender: str
    size: int
    received_at: float
    spool_path: str
    sha256: str
    origin: int
    client_ip: str
    auth_user: str
    smtputf8: bool
    body_8bit: bool
    held: bool
    seq: int
    bounce_id: str


@dataclass(frozen=True)
class Recipient:
    queue_id: str
    address: str
    channel: int
    domain: str
    state: int
    attempts: int
    next_attempt: float
    last_reply: str
    enhanced_code: str
    route: str
    job_id: str
    queued_at: float
    bounced: bool


@dataclass
class Job:
    """One hand-out: recipients of one message, one channel, one domain."""

    job_id: str
    message: Message
    channel: int
    domain: str
    recipients: list[str]
    attempt: int


@dataclass
class Outcome:
    """One recipient's result as the store applied it."""

    queue_id: str
    address: str
    channel: int
    state: int
    reply: str



def message_of(row: sqlite3.Row) -> Message:
    return Message(row["queue_id"], row["sender"], row["size"], row["received_at"],
                   row["spool_path"], row["sha256"], row["origin"], row["client_ip"],
                   row["auth_user"], bool(row["smtputf8"]), bool(row["body_8bit"]),
                   bool(row["held"]), row["seq"], row["bounce_id"])


def recipient_of(row: sqlite3.Row) -> Recipient:
    return Recipient(row["queue_id"], row["address"], row["channel"], row["domain"],
                     row["state"], row["attempts"], row["next_attempt"], row["last_reply"],
                     row["enhanced_code"], row["route"], row["job_id"], row["queued_at"],
                     bool(row["bounced"]))


CHUNK = 500  # ids per IN (...) list


def chunks(items: list[str]) -> Iterator[list[str]]:
    for i in range(0, len(items), CHUNK):
        yield items[i:i + CHUNK]


def marks(chunk: list[str]) -> str:
    return ",".join("?" * len(chunk))
