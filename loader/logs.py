"""Log output for bqspool's processes: plain text or one JSON object per line.

``--log-format json`` (or ``BQSPOOL_LOG_FORMAT=json``) writes each record as
JSON with ``time``, ``level``, ``logger`` and ``message``, plus ``table``,
``batch``, ``job_id`` and ``attempt`` where the line is about one. Library
code passes those as ``extra=`` (see :func:`fields`). Third-party clients'
connection retries (urllib3 names the full request URL each time) are kept
to debug level: bqspool's own retry policy says once when a retry sequence
starts and once when it ends.
"""

from __future__ import annotations

import logging
import sys

FIELDS = ("table", "batch", "job_id", "attempt")


def fields(
    table: str | None = None, batch: str | None = None, job_id: str | None = None, attempt: int | None = None
) -> dict[str, object]:
    """``extra=`` for a log call about a table, batch, job or attempt."""
    given = {"table": table, "batch": batch, "job_id": job_id, "attempt": attempt}
    return {k: v for k, v in given.items() if v is not None}


class _Plain(logging.Formatter):
    """Text lines; a field the message does not already name is added at the end."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        message = record.getMessage()
        about = [f"{k}={v}" for k in FIELDS if (v := getattr(record, k, None)) is not None and str(v) not in message]
        return f"{text} [{' '.join(about)}]" if about else text


class _Redact(logging.Filter):
    """Replaces secrets (see :func:`redact`) in every record's message."""

    secrets: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            text = record.getMessage()
            for secret in self.secrets:
                text = text.replace(secret, "***")
            record.msg, record.args = text, None
        return True


_REDACT = _Redact()


def redact(*secrets: str) -> None:
    """Never write these values in a log line (a webhook URL with its token, say)."""
    _REDACT.secrets = sorted({*_REDACT.secrets, *filter(None, secrets)}, key=len, reverse=True)


def setup(level: int, fmt: str = "text") -> None:
    """Configure the root logger of a bqspool process (the CLI; never an app embedding the library)."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                datefmt="%Y-%m-%dT%H:%M:%S%z",
            )
        )
    else:
        handler.setFormatter(_Plain("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_REDACT)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # The HTTP stack's own retry lines carry the full URL and the whole error, once per attempt.
    for noisy in ("urllib3", "urllib3.connectionpool", "google.auth", "google.api_core", "apscheduler"):
        logging.getLogger(noisy).setLevel(max(level, logging.ERROR) if level > logging.DEBUG else logging.DEBUG)
