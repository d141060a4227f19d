"""Per-recipient queue state in SQLite (qmail's info/, local/, remote/ and bounce/ in one file).

One connection, used only from one thread of its own (the event loop never waits on disk).
WAL mode; `synchronous` FULL by default so a todo is acked only after its state is on disk.
Counters by state are kept in memory and adjusted on every write, so Stat never scans; they
are recounted once at open and after bulk admin actions.

Recipient states (mailyard.queue.v1.RecipientState): DEFERRED rows with next_attempt <= now
are due (a new recipient is simply DEFERRED with next_attempt = arrival, attempts 0); QUEUED
rows carry the job_id handed out; DELIVERED / FAILED are final; HELD is DEFERRED put aside.

The store is assembled from one module per job: rows (states, schema, records), base
(connection, transactions, counters, shared reads), intake, dispatch, results,
completion and admin.
"""

from mailyard.queue.state.admin import Admin
from mailyard.queue.state.completion import Completion
from mailyard.queue.state.intake import Intake
from mailyard.queue.state.results import Results
from mailyard.queue.state.rows import (
    DEFERRED,
    DELIVERED,
    FAILED,
    FINAL,
    HELD,
    QUEUED,
    STATE_NAMES,
    Job,
    Message,
    Outcome,
    Recipient,
)


class Store(Intake, Results, Completion, Admin):
    """The queue state: one SQLite file, one thread (see the package docstring)."""


__all__ = ["DEFERRED", "DELIVERED", "FAILED", "FINAL", "HELD", "QUEUED", "STATE_NAMES",
           "Job", "Message", "Outcome", "Recipient", "Store"]
