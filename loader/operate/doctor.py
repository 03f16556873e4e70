"""`bqspool doctor`: whether this host, with this configuration, can do its job.

One check per line, each with what to do when it fails; it changes nothing.
The checks read the backends through a probe (``backends/probes.py`` for
Google and the local stack; a fake in the tests), so this module imports
no cloud SDK. A check that cannot be made here (an emulator without IAM)
says so and does not fail.
"""

from __future__ import annotations

import datetime as dt
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from bqspool.schemas.errors import BqspoolError, ClockSkewError

from .. import iam
from ..config import Config
from ..layout import Layout

Status = Literal["ok", "warn", "fail", "n/a"]


@dataclass(frozen=True)
class Check:
    """One line of the diagnosis: its name, its status, what was found, and what to do."""

    name: str
    status: Status
    detail: str
    fix: str = ""

    def line(self) -> str:
        mark = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL", "n/a": "n/a "}[self.status]
        return f"{mark}  {self.name:12s} {self.detail}" + (f"  -> {self.fix}" if self.fix else "")

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


SOFT_FIX = "turn soft delete off for the bucket (staged objects need none: the archive keeps the data)"
_KEY_REGION = {"EUROPE": "EU"}  # a key's multi-region name for BigQuery's EU


def _region_fits(bucket: str, dataset: str) -> bool:
    """Whether a bucket in ``bucket`` can feed load jobs in ``dataset``'s location: the same
    place, or a multi-region (US, EU) holding the other's region."""
    b, d = bucket.upper(), dataset.upper()
    return b == d or (b in ("US", "EU") and d.startswith(b)) or (d in ("US", "EU") and b.startswith(d))


class Doctor:
    """The checks for ``role`` ("ship", "commit" or "all"); see :meth:`run`."""

    def __init__(
        self,
        config: Config,
        role: str,
        probe: Any,
        *,
        store: Any = None,
        warehouse: Any = None,
        schemas: Any = None,
        clock: Callable[[], float] = time.time,
    ):
        self.cfg, self.role, self.probe = config, role, probe
        self.store, self.warehouse, self.schemas, self.clock = store, warehouse, schemas, clock
        self.dataset_location: str | None = None

    def run(self) -> list[Check]:
        """Every check of the role, each made even when another failed."""
        steps = [self._local, self._credentials, self._bucket, self._bucket_permissions, self._key, self._clock]
        if self.role in ("commit", "all"):
            steps += [self._dataset, self._quota]
        if self.role in ("ship", "all"):
            steps.append(self._buffer)
        out = []
        for step in steps:
            try:
                out.append(step())
            except BqspoolError as exc:  # one line for it, and the other checks still run
                out.append(Check(step.__name__.strip("_").replace("_", " "), "fail", str(exc)))
        return out

    def _local(self) -> Check:
        found = self.probe.local_stack()
        if not found:
            return Check("local stack", "n/a", "not configured: Google Cloud")
        return Check("local stack", "ok", ", ".join(f"{k}={v}" for k, v in sorted(found.items())))

    def _credentials(self) -> Check:
        who = self.probe.identity()
        account = self.cfg.impersonate_service_account
        if not account:
            return Check("credentials", "ok", who)
        if self.probe.local_stack():
            return Check("credentials", "ok", f"{who}; impersonate_service_account is not used against it")
        denied = self.probe.impersonation_error()
        if denied:
            return Check(
                "credentials",
                "fail",
                f"{who} cannot act as {account}: {denied}",
                f"grant roles/iam.serviceAccountTokenCreator on {account} to {who.split(' ')[0]}",
            )
        return Check("credentials", "ok", f"{who}, acting as {account} (a short-lived token was issued)")

    def _key(self) -> Check:
        """The customer-managed keys: in the dataset's location, and usable by the service
        agents that encrypt with them (Cloud Storage's and BigQuery's, not this host)."""
        keys = sorted({k for k in [self.cfg.kms_key, *self._table_keys()] if k})
        if not keys:
            return Check("key", "n/a", "no customer-managed key (kms_key) configured")
        for key in keys:
            where = key.split("/")[3].upper()
            if not _region_fits(_KEY_REGION.get(where, where), self.cfg.location):
                return Check(
                    "key",
                    "fail",
                    f"{key} is in {where.lower()}; the dataset is in {self.cfg.location}",
                    "use a key in the dataset's location (for US and EU: us, europe)",
                )
        users = self.probe.key_users(keys)
        if users is None:
            return Check("key", "n/a", "this endpoint has no Cloud KMS: the key cannot be checked here")
        if "error" in users:
            return Check("key", "warn", f"cannot read the keys' IAM policies: {users['error']}", "check them by hand")
        missing = [f"{agent} on {key}" for key in keys for agent in users["agents"] if agent not in users[key]]
        if missing:  # a grant on the key ring or the project does not show in the key's own policy
            return Check(
                "key",
                "warn",
                f"not granted on the key itself: {'; '.join(missing)}",
                "grant roles/cloudkms.cryptoKeyEncrypterDecrypter on the key to each service agent named, "
                "unless the key ring or project grants it",
            )
        return Check("key", "ok", f"{len(keys)} key(s) usable by {', '.join(users['agents'])}")

    def _table_keys(self) -> list[str]:
        return [t.kms_key for t in self.schemas.tables() if t.kms_key] if self.schemas is not None else []

    def _bucket(self) -> Check:
        found = self.probe.bucket()
        name = self.cfg.bucket
        if found is None:
            return Check("bucket", "fail", f"{name} does not exist", "create it, or set bucket")
        where = found["location"] or "an unknown location"
        if found["location"] and not _region_fits(found["location"], self.cfg.location):
            return Check(
                "bucket",
                "fail",
                f"{name} is in {where}, load jobs run in {self.cfg.location}",
                "use a bucket in the dataset's location, or set location",
            )
        soft = found.get("soft_delete_s")
        if soft:
            return Check("bucket", "warn", f"{name} in {where}: {self._soft_delete_cost(soft / 86_400)}", SOFT_FIX)
        return Check("bucket", "ok", f"{name} in {where}, no soft delete")

    def _soft_delete_cost(self, days: float) -> str:
        """What soft delete adds at this prefix's volume: every staged object, deleted once
        it is archived, is billed ``days`` more of Standard storage (the last week's loads)."""
        from .history import loads

        today = dt.datetime.fromtimestamp(self.clock(), dt.UTC).date()
        week = today - dt.timedelta(days=6)
        layout = Layout(self.cfg.prefix)
        tables = list(self.schemas) if self.schemas is not None else []
        daily = sum(ld.bytes for t in tables for ld in loads(self.store, layout, t, week, today)) / 7
        price = self.cfg.price_gcs_standard_gib_month
        usd = daily / 2**30 * days * price
        return (
            f"keeps deleted objects {days:.0f} days (soft delete): at the last week's {daily / 2**20:,.1f} MiB "
            f"staged a day, that is ${usd:,.2f} a month more (${days * price:,.2f} per GiB a day)"
        )

    def _bucket_permissions(self) -> Check:
        """The role's permissions (loader/iam.py) on the bucket, a table of the dataset and
        the job project, each where the endpoint can test them."""
        asked = [("bucket", self.cfg.bucket, lambda w: self.probe.bucket_grants(w))]
        if self.role in ("commit", "all"):
            tables = list(self.schemas) if self.schemas is not None else []
            if tables:  # the dataset's grants reach its tables; a table is what BigQuery tests
                asked.append(("dataset", self.cfg.dataset, lambda w: self.probe.dataset_grants(w, tables[0])))
            job_project = self.cfg.job_project or self.cfg.project
            asked.append(("project", job_project, lambda w: self.probe.project_grants(w, job_project)))
        missing, tested, untested = [], [], []
        for place, name, grants in asked:
            wanted = iam.needed(self.role, place)
            granted = grants(wanted)
            if granted is None:
                untested.append(place)
                continue
            tested.append(place)
            if lacking := [p for p in wanted if p not in granted]:
                missing.append(f"on {place} {name}: {', '.join(lacking)}")
        if missing:
            return Check(
                "permissions", "fail", "missing " + "; ".join(missing), "grant the role of docs/deploy.md, IAM"
            )
        if not tested:
            return Check("permissions", "n/a", "this endpoint cannot test IAM permissions")
        said = f"the {self.role} role's on the {' and '.join(tested)}"
        return Check(
            "permissions", "ok", said + (f" ({' and '.join(untested)}: cannot be tested here)" if untested else "")
        )

    def _clock(self) -> Check:
        from ..commit import bucket_lease

        assert self.store is not None
        skew = bucket_lease.clock_offset(self.store, Layout(self.cfg.prefix).lease, self.clock, float("inf"))
        limit = self.cfg.max_clock_skew
        said = f"this host is {abs(skew):.1f}s {'ahead of' if skew >= 0 else 'behind'} the storage server"
        if abs(skew) > limit:
            return Check("clock", "fail", f"{said} (max_clock_skew {limit:g}s): it will not commit", "fix NTP")
        if abs(skew) > limit / 2:
            return Check("clock", "warn", f"{said}, more than half max_clock_skew ({limit:g}s)", "check NTP")
        return Check("clock", "ok", said)

    def _dataset(self) -> Check:
        found = self.probe.dataset()
        name = f"{self.cfg.project}.{self.cfg.dataset}"
        if found is None:
            return Check("dataset", "fail", f"{name} does not exist", "run `bqspool setup`")
        where = found["location"]
        if where and where != self.cfg.location.upper():
            return Check("dataset", "fail", f"{name} is in {where}, not {self.cfg.location}", "set location")
        from .verify import drift

        differences = drift(self.warehouse, self.schemas) if self.schemas is not None else []
        if differences:
            return Check(
                "dataset",
                "warn",
                f"{name}: {len(differences)} differences from the schema set",
                "`bqspool verify` lists them; `--fix` makes the safe ones",
            )
        return Check("dataset", "ok", f"{name} in {where or self.cfg.location} matches the schema set")

    def _quota(self) -> Check:
        from .status import commit_status

        tables = list(self.schemas) if self.schemas is not None else None
        status = commit_status(self.store, Layout(self.cfg.prefix), self.cfg.quota_jobs_per_table_day, tables)
        used = {t: f["jobs_24h"] for t, f in status.get("tables", {}).items()}
        budget = self.cfg.quota_jobs_per_table_day
        top = max(used.values(), default=0)
        worst = ", ".join(f"{t} {n}" for t, n in sorted(used.items(), key=lambda x: -x[1])[:3] if n)
        detail = f"load jobs in 24 h, most by a table {top} of {budget}" + (f" ({worst})" if worst else "")
        if top >= 0.8 * budget:
            return Check("quota", "warn", detail, "objects are grouped into fewer jobs; see `bqspool status`")
        return Check("quota", "ok", detail)

    def _buffer(self) -> Check:
        path = Path(self.cfg.buffer)
        folder = next((p for p in (path.parent, *path.parents) if p.exists()), Path("."))
        free = shutil.disk_usage(folder).free
        cap = self.cfg.buffer_max_bytes
        if free < cap:
            return Check(
                "buffer",
                "fail",
                f"{free / 1e6:,.0f} MB free at {folder}, under the buffer's cap of {cap / 1e6:,.0f} MB",
                "free disk space, or lower buffer_max_bytes",
            )
        if not path.exists():
            return Check("buffer", "ok", f"{path} not created yet; {free / 1e9:,.1f} GB free")
        from bqspool.buffer import Buffer

        with Buffer(path) as buf:
            stats = buf.stats()
        oldest = max((s["oldest_age_s"] or 0 for s in stats["streams"].values()), default=0)
        said = f"{path}: {stats['pending']:,} events pending, the oldest {oldest:.0f}s old; {free / 1e9:,.1f} GB free"
        if oldest > 2 * self.cfg.seconds("ship_max_delay") + self.cfg.seconds("ship_check"):
            return Check("buffer", "warn", said + " (past twice ship.max_delay)", "is the shipper running?")
        return Check("buffer", "ok", said)


def failed(checks: list[Check]) -> bool:
    """Whether the host cannot do its job: any check failed (warnings do not count)."""
    return any(c.status == "fail" for c in checks)


__all__ = ["Check", "ClockSkewError", "Doctor", "failed"]
