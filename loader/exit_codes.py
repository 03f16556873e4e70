"""bqspool's exit codes: one table, stable across versions, for cron, systemd and scripts.

docs/cli.md prints this table (``scripts/cli_reference.py`` reads it from here).
Retryable codes (3, 4) mean nothing was lost: run the same command again later.
2 is left to usage errors (an unknown option, a missing argument), as every
click program exits, so a typo in a flag never reads as a finding.
"""

from __future__ import annotations

OK = 0
ERROR = 1  # a permanent error: configuration, bad input, a refused request
USAGE = 2  # the command line itself: an unknown option, a missing argument
RETRY = 3  # something that passes: a backend unreachable, a full disk, a locked file
LEASE = 4  # another loader holds the buffer, or another committer the bucket's lease
UNDRAINABLE = 5  # drain, ship: a stream has pending events but no table in the schema set
QUARANTINE = 6  # drain, ship, commit: a batch or an object is held back (`bqspool quarantine list`)
FOUND = 7  # verify: drift from the schema set, or events loaded twice
WARNING = 8  # monitor --once: a warning alert fires
CRITICAL = 9  # monitor --once: a critical alert fires

TABLE = [
    (OK, "done: everything asked was done"),
    (ERROR, "a permanent error: configuration, bad input, a refused request; the message says what to do"),
    (USAGE, "a usage error: an unknown option or command, a missing argument"),
    (RETRY, "retry later: GCS or BigQuery unreachable past the retry policy, a full disk; nothing was lost"),
    (LEASE, "another loader holds the buffer, or another committer the bucket's lease, or took it over"),
    (UNDRAINABLE, "a stream has pending events but no table in the schema set"),
    (QUARANTINE, "a batch or an object is held back: see `bqspool quarantine list`"),
    (FOUND, "`verify` found drift from the schema set, or events loaded twice"),
    (WARNING, "`monitor --once`: a warning alert fires"),
    (CRITICAL, "`monitor --once`: a critical alert fires"),
]
