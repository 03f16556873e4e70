"""Prometheus metrics: the loader's, fed from each ship and commit report, and the monitor's gauges.

``bqspool run`` serves them on ``metrics_address``; ``drain --once
--metrics-file PATH`` writes them for node_exporter's textfile collector.
Names start with ``bqspool_`` and carry ``stream`` and ``table``:

- ``bqspool_shipped_events_total``, ``bqspool_shipped_batches_total``;
- ``bqspool_loaded_events_total``, ``bqspool_loaded_objects_total``;
- ``bqspool_load_jobs_total`` (with ``outcome``: done, failed-data,
  failed-backend, void);
- ``bqspool_load_jobs_24h`` against ``bqspool_load_job_budget``, as the
  committer counted them for its last records of the table;
- ``bqspool_quarantined_events_total`` (in batches the ship stage held back,
  and in objects the commit stage quarantined);
- ``bqspool_stage_seconds`` (histogram, with ``stage``: ship or commit;
  stream and table ``*``);
- ``bqspool_delay_seconds``: from the append of each loaded object's oldest
  event to its load (histogram, one observation per object);
- ``bqspool_requests_total`` (with ``stage``: ship or commit, and ``class``:
  A, B, free or bigquery; stream and table ``*``): the requests sent, as
  they are billed (:mod:`bqspool.loader.billing`).

``bqspool monitor --serve`` serves :class:`MonitorGauges` instead: which
alerts fire, each table's backlog and what it loaded in 24 h, and the same
budget gauges.
"""

from __future__ import annotations

from typing import Any

from bqspool.buffer.metrics import ALL, LABELS, prometheus

from ..billing import by_class


def budget_gauges(prom: Any, registry: Any) -> tuple[Any, Any]:
    """``bqspool_load_jobs_24h`` and ``bqspool_load_job_budget``, per table (one definition for every registry)."""
    jobs = prom.Gauge(
        "bqspool_load_jobs_24h", "Load jobs in the last 24 h, from the commit log.", LABELS, registry=registry
    )
    budget = prom.Gauge("bqspool_load_job_budget", "The daily load-job budget per table.", LABELS, registry=registry)
    return jobs, budget


class LoaderMetrics:
    def __init__(self, registry: Any = None):
        prom = prometheus()
        self.prom = prom
        self.registry = registry if registry is not None else prom.CollectorRegistry()

        def counter(name: str, doc: str, extra: tuple[str, ...] = ()):
            return prom.Counter(name, doc, (*LABELS, *extra), registry=self.registry)

        self.shipped = counter("bqspool_shipped_events", "Events shipped to the bucket.")
        self.shipped_batches = counter("bqspool_shipped_batches", "Batches (objects) shipped to the bucket.")
        self.loaded = counter("bqspool_loaded_events", "Events loaded into BigQuery.")
        self.loaded_objects = counter("bqspool_loaded_objects", "Objects loaded into BigQuery.")
        self.jobs = counter("bqspool_load_jobs", "Load jobs by outcome.", ("outcome",))
        self.quarantined = counter("bqspool_quarantined_events", "Events in batches the ship stage held back.")
        self.jobs_24h, self.budget = budget_gauges(prom, self.registry)
        self.requests = counter("bqspool_requests", "Requests sent, by stage and billing class.", ("stage", "class"))
        self.stage_seconds = prom.Histogram(
            "bqspool_stage_seconds",
            "How long a ship or a commit took.",
            (*LABELS, "stage"),
            buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900),
            registry=self.registry,
        )
        self.delay = prom.Histogram(
            "bqspool_delay_seconds",
            "Seconds from an event's append to its load.",
            LABELS,
            buckets=(5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 21600, 86400),
            registry=self.registry,
        )

    def ship(self, report) -> None:
        for stream, s in report.per_stream.items():
            self.shipped.labels(stream, stream).inc(s["events"])
            self.shipped_batches.labels(stream, stream).inc(s["batches"])
            if s["quarantined"]:
                self.quarantined.labels(stream, stream).inc(s["quarantined"])
        self.stage_seconds.labels(ALL, ALL, "ship").observe(report.seconds)
        self._count_requests("ship", report.requests)

    def commit(self, report) -> None:
        for table, t in report.per_table.items():
            self.loaded.labels(table, table).inc(t["events"])
            self.loaded_objects.labels(table, table).inc(t["objects"])
            for outcome, n in t["jobs"].items():
                self.jobs.labels(table, table, outcome).inc(n)
            hist = self.delay.labels(table, table)
            for seconds, _events in t["delays"]:
                hist.observe(max(0.0, seconds))
            if t.get("quarantined"):  # events in objects the commit held back
                self.quarantined.labels(table, table).inc(t["quarantined"])
            if "jobs_24h" in t:  # counted where the commit wrote records: no listing of the metrics' own
                self.jobs_24h.labels(table, table).set(t["jobs_24h"])
                self.budget.labels(table, table).set(report.budget)
        self.stage_seconds.labels(ALL, ALL, "commit").observe(report.seconds)
        self._count_requests("commit", {**report.requests, **report.bigquery})

    def _count_requests(self, stage: str, ops: dict[str, int]) -> None:
        for cls, n in by_class(ops).items():
            if n:
                self.requests.labels(
                    ALL, ALL, stage, cls.removeprefix("class_").upper() if "class" in cls else cls
                ).inc(n)

    def text(self) -> bytes:
        return self.prom.generate_latest(self.registry)

    def write_textfile(self, path: str) -> None:
        """For node_exporter's textfile collector (written to a temporary file, then renamed)."""
        self.prom.write_to_textfile(path, self.registry)

    def serve(self, address: str):
        """Serve /metrics on ``HOST:PORT`` from a thread; the server."""
        host, _, port = address.rpartition(":")
        server, _thread = self.prom.start_http_server(int(port), addr=host or "0.0.0.0", registry=self.registry)
        return server


class MonitorGauges:
    """What ``bqspool monitor --serve``'s /metrics shows: its alerts and per-table figures."""

    def __init__(self) -> None:
        prom = prometheus()
        self.prom = prom
        self.registry = prom.CollectorRegistry()
        self.alert = prom.Gauge(
            "bqspool_alert_active", "1 while an alert fires.", (*LABELS, "rule", "severity"), registry=self.registry
        )
        self.backlog = prom.Gauge(
            "bqspool_backlog",
            "Objects waiting in the bucket plus events in this host's buffer.",
            LABELS,
            registry=self.registry,
        )
        self.jobs, self.budget = budget_gauges(prom, self.registry)
        self.loaded = prom.Gauge(
            "bqspool_loaded_events_24h", "Events loaded in the last 24 h.", LABELS, registry=self.registry
        )
        # Present from the start (0 until a cycle ends): a scrape before the first
        # cycle sees the monitor, and alerting can tell "not yet" from "all fine".
        self.cycle = prom.Gauge(
            "bqspool_monitor_last_cycle_timestamp_seconds",
            "When the last monitoring cycle ended.",
            registry=self.registry,
        )

    def update(self, state: dict, page: dict) -> None:
        """Set the gauges from a monitoring cycle's state and its page figures (``Monitor.page_figures``)."""
        self.alert.clear()
        self.cycle.set(state.get("evaluated", 0))
        for a in state.get("active", {}).values():
            self.alert.labels(a["table"], a["table"], a["rule"], a["severity"]).set(1)
        for table, f in page["tables"].items():
            self.backlog.labels(table, table).set(f["backlog"])
            self.jobs.labels(table, table).set(f["jobs_24h"])
            self.budget.labels(table, table).set(f["budget"])
            self.loaded.labels(table, table).set(sum(f["hourly"]))

    def text(self) -> bytes:
        return self.prom.generate_latest(self.registry)
