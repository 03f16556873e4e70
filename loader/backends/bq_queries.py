"""BigQuery queries, dry runs, views, storage and job history: the operator half of the adapter."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import json
import logging
import re
from collections.abc import Sequence
from typing import Any

import requests
from bqspool.schemas.errors import NotAvailableError
from google.api_core import exceptions as gexc

from ..interfaces import QueryParam, QueryStat, TableStorage
from .bq_tables import fetch_table

log = logging.getLogger("bqspool.loader")

_SCALAR = {"INTEGER": "INT64", "FLOAT": "FLOAT64", "BOOLEAN": "BOOL"}


def _parameter(p: QueryParam):
    from google.cloud import bigquery

    kind = _SCALAR.get(p.type, p.type)
    if isinstance(p.value, (list, tuple)):
        return bigquery.ArrayQueryParameter(p.name, kind, list(p.value))
    return bigquery.ScalarQueryParameter(p.name, kind, p.value)  # type: ignore[arg-type]  # checked by its type


def _reason(exc: gexc.GoogleAPICallError) -> str:
    """The server's own words, without the request line the client puts first."""
    return re.sub(r"^(GET|POST|PUT|PATCH|DELETE) \S+: ", "", str(exc.message).splitlines()[0])


PARTITION_COUNT_S = 30  # verify waits this long for a table's partition count, then goes on without it


def _labels(text: str | None) -> dict[str, str]:
    """INFORMATION_SCHEMA's labels column (an array of key and value), as a dict."""
    try:
        return {str(x["key"]): str(x["value"]) for x in json.loads(text or "[]") if isinstance(x, dict)}
    except (ValueError, KeyError, TypeError):
        return {}


class QueriesMixin:
    """For :class:`~.bq.BigQueryWarehouse` (which provides ``client``, ``project``,
    ``dataset``, ``location`` and ``retry``)."""

    client: Any
    project: str
    dataset: str
    location: str
    retry: Any
    table_ref: Any  # from TablesMixin

    def _job_config(self, params: Sequence[QueryParam], **kw):
        from google.cloud import bigquery

        return bigquery.QueryJobConfig(
            default_dataset=f"{self.project}.{self.dataset}",
            query_parameters=[_parameter(p) for p in params],
            labels=dict(getattr(self, "labels", {})),
            **kw,
        )

    def query(self, sql: str, params: Sequence[QueryParam] = ()) -> list[dict]:
        config = self._job_config(params)

        def attempt() -> list[dict]:
            job = self.client.query(sql, job_config=config, location=self.location, retry=None, timeout=120)
            return [dict(r) for r in job.result(timeout=600)]

        return self.retry.call("query", attempt)

    def dry_run(self, sql: str, params: Sequence[QueryParam] = ()) -> int | None:
        config = self._job_config(params, dry_run=True, use_query_cache=False)
        job = self.retry.call(
            "dry-run query",
            lambda: self.client.query(sql, job_config=config, location=self.location, retry=None, timeout=60),
        )
        return job.total_bytes_processed

    def table_storage(self, table: str) -> TableStorage | None:
        t = fetch_table(self.client, self.retry, self.table_ref(table))
        if t is None:
            return None
        props = t._properties  # the logical byte counts have no accessor in every client version
        total = int(props.get("numTotalLogicalBytes") or props.get("numBytes") or 0)
        long_term = int(props.get("numLongTermLogicalBytes") or props.get("numLongTermBytes") or 0)
        return TableStorage(int(t.num_rows or 0), max(0, total - long_term), long_term)

    def partition_count(self, table: str) -> int | None:
        """From INFORMATION_SCHEMA.PARTITIONS (a metadata query, billed at its 10-MB
        minimum), asked once with a short deadline: None where the endpoint cannot say
        in time (the emulator has the view, but hangs on a table missing its partition column)."""
        view = f"`{self.project}.{self.dataset}`.INFORMATION_SCHEMA.PARTITIONS"
        config = self._job_config([QueryParam("t", "STRING", table)])
        sql = f"SELECT COUNT(*) AS n FROM {view} WHERE table_name = @t"
        try:
            job = self.client.query(
                sql, job_config=config, location=self.location, retry=None, job_retry=None, timeout=30
            )
            rows = [dict(r) for r in job.result(timeout=PARTITION_COUNT_S, retry=None, job_retry=None)]
        except (gexc.GoogleAPICallError, concurrent.futures.TimeoutError, requests.exceptions.RequestException) as exc:
            log.debug("INFORMATION_SCHEMA.PARTITIONS: %s", exc)
            return None
        n = int(rows[0]["n"]) if rows else 0
        return n or None  # a table always has a partition once it holds a row; 0 is "cannot say"

    def query_history(self, since: float) -> list[QueryStat]:
        region = f"region-{self.location.lower()}"
        sql = (
            "SELECT UNIX_MICROS(creation_time) / 1e6 AS started, job_id, "
            "IFNULL(total_bytes_billed, 0) AS bytes_billed, "
            "TIMESTAMP_DIFF(end_time, start_time, MILLISECOND) / 1000 AS seconds, "
            "TO_JSON_STRING(labels) AS labels "
            f"FROM `{self.project}`.`{region}`.INFORMATION_SCHEMA.JOBS_BY_PROJECT "
            "WHERE job_type = 'QUERY' AND creation_time >= @since AND state = 'DONE' ORDER BY creation_time"
        )
        config = self._job_config([QueryParam("since", "TIMESTAMP", dt.datetime.fromtimestamp(since, dt.UTC))])

        def attempt() -> list[dict]:
            try:
                job = self.client.query(sql, job_config=config, location=self.location, retry=None, timeout=120)
                return [dict(r) for r in job.result(timeout=600)]
            except (gexc.BadRequest, gexc.NotFound, gexc.Forbidden) as exc:
                # The server's own words (the emulator's "Invalid dataset ID region-us") at
                # debug level: what an operator reads is what it means.
                log.debug("INFORMATION_SCHEMA.JOBS_BY_PROJECT: %s", _reason(exc))
                raise NotAvailableError("this BigQuery endpoint keeps no job history") from None

        rows = self.retry.call("read the query job history", attempt)
        return [
            QueryStat(
                float(r["started"]),
                r["job_id"],
                int(r["bytes_billed"] or 0),
                float(r["seconds"] or 0),
                _labels(r.get("labels")),
            )
            for r in rows
        ]

    def create_view(self, name: str, sql: str) -> bool:
        from google.cloud import bigquery

        ref = self.table_ref(name)

        def attempt() -> bool:
            try:
                have = self.client.get_table(ref, retry=None, timeout=30)
            except gexc.NotFound:
                have = None
            if have is not None and have.table_type != "VIEW":
                raise NotAvailableError(f"{ref} is a table, not a view: not replacing it")
            if have is not None and (have.view_query or "").strip() == sql.strip():
                return False
            view = bigquery.Table(ref)
            view.view_query = sql
            if have is not None:
                self.client.delete_table(ref, retry=None, timeout=30, not_found_ok=True)
            self.client.create_table(view, exists_ok=False, retry=None, timeout=30)
            return True

        return self.retry.call(f"create view {ref}", attempt)
