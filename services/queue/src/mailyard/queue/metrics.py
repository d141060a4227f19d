"""Queue metrics, declared once (names fixed in docs/architecture.md)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

MESSAGES = Gauge("mailyard_queue_messages", "Messages in the queue (qmail-qstat).")
NOT_PREPROCESSED = Gauge("mailyard_queue_not_preprocessed",
                         "Messages in queue but not yet preprocessed (todo notices pending).")
RECIPIENTS = Gauge("mailyard_queue_recipients", "Recipients in the queue by state.", ["state"])
OLDEST_AGE = Gauge("mailyard_queue_oldest_message_age_seconds",
                   "Age of the oldest message in the queue.")
HELD = Gauge("mailyard_queue_held_messages", "Messages on hold.")
DELIVERIES = Counter("mailyard_queue_deliveries_total",
                     "Delivery outcomes learned from workers, per recipient.",
                     ["channel", "result"])
BOUNCES = Counter("mailyard_queue_bounces_total",
                  "Bounces by kind: bounce, double_bounce, dropped (failed double bounce), "
                  "delay_warning, unverified_sender (not sent: neither SPF nor DKIM "
                  "verified the sender).", ["kind"])
RETRIES = Counter("mailyard_queue_retries_scheduled_total",
                  "Deferred recipients given a next attempt.", ["channel"])
POISON_JOBS = Counter("mailyard_queue_poison_jobs_total",
                      "Jobs JetStream delivered max_deliver times without an ack; their "
                      "recipients are held.", ["channel"])
REPAIRS = Counter("mailyard_queue_reconciler_repairs_total",
                  "Inconsistencies found and repaired (unless dry run): orphan_file, "
                  "orphan_damaged, completed_leftover, missing_file, checksum_mismatch, "
                  "stuck_job, lost_job (its JetStream message is gone), stale_temp, "
                  "withdrawn (todo notice whose spool file was "
                  "withdrawn), rebuilt (a message recorded from its spool file when a "
                  "new state was rebuilt after a failover).", ["kind"])
HISTORY_INDEX_LAG = Gauge("mailyard_queue_history_index_lag_events",
                          "Records of MAIL_HISTORY not yet in this process's history index "
                          "(searches read the stream until it has caught up).")
HISTORY_INDEX_REBUILDS = Counter("mailyard_queue_history_index_rebuilds_total",
                                 "Times the history index started over from the stream: "
                                 "damaged (file unusable), recreated (stream re-created), "
                                 "purged (the stream holds nothing the index held).",
                                 ["reason"])
HISTORY_SEARCHES = Counter("mailyard_queue_history_searches_total",
                           "History searches by what answered them: index, or stream (the "
                           "index not caught up, or off).", ["source"])
