"""Watching bqspool: alert rules, notifications, the status page and metrics.

- :mod:`.rules`: the seed's alert rules, one function each;
- :mod:`.monitor`: gathers what the rules read, and evaluates them;
- :mod:`.cycle`: one monitoring cycle: evaluate, notify on changes, keep the state;
- :mod:`.statuspage`: ``monitor --serve``'s page, /healthz and /metrics;
- :mod:`.metrics`: the loader's Prometheus metrics and the monitor's gauges.
"""
