"""Prometheus metrics of the writer: one call exposes them on an app's registry or port.

::

    from bqspool.buffer.metrics import expose

    expose(buffer)                    # on the app's default registry (its /metrics has them)
    expose(buffer, port=9108)         # or on a port of their own

Needs the ``metrics`` extra (``pip install 'bqspool[metrics]'``, which is
prometheus-client alone). Every metric starts with ``bqspool_`` and carries
the labels ``stream`` and ``table`` (the same name: a stream is its table):

- this process's appends: ``bqspool_appended_events_total``,
  ``bqspool_dead_lettered_events_total``; its commits:
  ``bqspool_commit_seconds`` and ``bqspool_commit_group_events`` (histograms);
- the file's state, read at each scrape, whoever wrote it:
  ``bqspool_pending_events``, ``bqspool_pending_bytes``,
  ``bqspool_oldest_pending_age_seconds``, ``bqspool_dead_letters``,
  ``bqspool_dropped_events_total`` (drops by every process; stream ``*``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bqspool.schemas.errors import ConfigError

if TYPE_CHECKING:
    from .core import Buffer

LABELS = ("stream", "table")
ALL = "*"  # the label value of a figure for the whole buffer


def prometheus() -> Any:
    """The ``prometheus_client`` module (the ``metrics`` extra), or ConfigError saying how to install it."""
    try:
        import prometheus_client
    except ImportError:
        raise ConfigError("metrics need prometheus-client: pip install 'bqspool[metrics]'") from None
    return prometheus_client


class WriterMetrics:
    """The writer's metrics for ``buffer``, registered on ``registry``."""

    def __init__(self, buffer: Buffer, registry: Any = None):
        prom = prometheus()
        registry = registry if registry is not None else prom.REGISTRY
        self.buffer = buffer
        self.appended = prom.Counter(
            "bqspool_appended_events", "Events this process appended and committed.", LABELS, registry=registry
        )
        self.dead = prom.Counter(
            "bqspool_dead_lettered_events",
            "Events this process stored as dead letters (they did not fit their table).",
            LABELS,
            registry=registry,
        )
        self.commit_seconds = prom.Histogram(
            "bqspool_commit_seconds",
            "How long one group commit took.",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0, 5.0),
            registry=registry,
        )
        self.group_events = prom.Histogram(
            "bqspool_commit_group_events",
            "Events per group commit.",
            buckets=(1, 2, 4, 8, 16, 64, 256, 1024, 4096, 16384),
            registry=registry,
        )
        registry.register(_FileCollector(buffer))
        buffer.observe(self._committed)

    def _committed(self, group) -> None:
        if group.error is not None:
            return
        events = 0
        for row in group.rows:
            self.appended.labels(row[0], row[0]).inc(row[2])
            events += row[2]
        for row in group.dead:
            self.dead.labels(row[0], row[0]).inc()
        self.commit_seconds.observe(group.seconds)
        self.group_events.observe(events + len(group.dead))


class _FileCollector:
    """Read at each scrape: what the buffer file holds now."""

    def __init__(self, buffer: Buffer):
        from prometheus_client import core

        self.buffer = buffer
        self.core = core

    def describe(self):
        return []  # collected fresh each scrape; names are checked then

    def collect(self):
        core = self.core
        stats = self.buffer.stats()
        pending = core.GaugeMetricFamily("bqspool_pending_events", "Events waiting to ship.", labels=LABELS)
        nbytes = core.GaugeMetricFamily("bqspool_pending_bytes", "Payload bytes waiting to ship.", labels=LABELS)
        age = core.GaugeMetricFamily(
            "bqspool_oldest_pending_age_seconds", "Age of the oldest event waiting to ship.", labels=LABELS
        )
        for stream, s in sorted(stats["streams"].items()):
            pending.add_metric([stream, stream], s["pending"])
            nbytes.add_metric([stream, stream], s["bytes"])
            age.add_metric([stream, stream], s["oldest_age_s"] or 0.0)
        dead = core.GaugeMetricFamily("bqspool_dead_letters", "Dead letters kept in the buffer.", labels=LABELS)
        dead.add_metric([ALL, ALL], stats["dead_letters"])
        dropped = core.CounterMetricFamily(
            "bqspool_dropped_events", "Events dropped at the size cap, by every process.", labels=LABELS
        )
        dropped.add_metric([ALL, ALL], stats["dropped"])
        return [pending, nbytes, age, dead, dropped]


def expose(buffer: Buffer, *, registry: Any = None, port: int | None = None, addr: str = "0.0.0.0") -> WriterMetrics:
    """Register ``buffer``'s metrics on ``registry`` (default: prometheus-client's),
    and with ``port``, serve that registry's /metrics there too."""
    metrics = WriterMetrics(buffer, registry)
    if port is not None:
        prom = prometheus()
        prom.start_http_server(port, addr=addr, registry=registry if registry is not None else prom.REGISTRY)
    return metrics
