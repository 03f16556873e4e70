"""The committer's lease: one object in the bucket, renewed under generation preconditions.

One committer per prefix (so per dataset) submits load jobs at a time. The
lease is the object ``PREFIX/committer.lease``: a JSON document with the
holder, how long it lasts and a token that grows by one each time the
lease changes hands. It is taken with ``if_generation_match`` (0 when there
is no lease object yet, else the generation read, and only when the lease
read has expired or was released), renewed with the generation our last
write produced, and released by writing an expired lease under the same
precondition. Nothing is ever deleted (fake-gcs-server ignores delete
preconditions, so nothing may depend on them).

A committer paused past its expiry (SIGSTOP, a frozen VM) and resumed
finds, at its next renewal, that the generation moved on: the write is
refused, it raises :class:`LeaseLostError` and stops before its next step.
Every step that changes anything renews first. The commit log's own rule
(see :mod:`.commitlog`) keeps even a committer that pauses between its
renewal and its next request from loading anything twice.

A lease naming our own holder id is ours whatever it says: a release that
failed, or a write that landed while its answer was lost (the retry's
precondition then fails against that very write). Nobody else writes our
holder id, so we take it back at once.

A committer killed with kill -9 on another host holds the lease until it
expires: keep ``lease_seconds`` short enough for the schedule (the default
is 120 s). One that died on *this* host (the same hostname and PID
namespace, and its PID gone or now another process, by start time) is
known dead, and its lease is taken at once.

Expiry is on the store's clock, never a host's: the lease object says how
long it lasts (``ttl``), and it expires ``ttl`` seconds after the store
last wrote it (the object's ``updated`` time), measured against the
store's clock (the ``Date`` of its answers, see ``ObjectStore.now``). Two
committers whose clocks disagree by minutes still agree on who holds it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from bqspool.schemas.errors import ClockSkewError, LeaseHeldError, LeaseLostError, PreconditionFailedError

from ..billing import checked_ops
from ..interfaces import ObjectStore

log = logging.getLogger("bqspool.loader")


@dataclass
class BucketLease:
    """A held lease: the object's name, our generation of it, and our token."""

    name: str
    holder: str
    token: int
    generation: int
    expires: float  # on the store's clock
    written: float = 0.0  # when the store wrote our last write, on its clock (0: not known)
    # Requests the last holder sent after its last summary, which it left in the
    # released lease for the next holder to record (see Committer._carry).
    carried: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class _Found:
    """The lease object as read: its document, generation, and when it expires (store's clock)."""

    doc: dict
    generation: int
    expires: float


def _read(store: ObjectStore, name: str) -> _Found:
    found = store.read_object(name)
    if found is None:
        return _Found({}, 0, 0.0)
    try:
        doc = json.loads(found.data)
    except ValueError:
        doc = {}  # a damaged lease is an expired one: its generation still guards the takeover
    doc = doc if isinstance(doc, dict) else {}
    ttl = doc.get("ttl")
    if isinstance(ttl, (int, float)) and found.updated:
        expires = found.updated + float(ttl)  # both on the store's clock
    else:
        expires = float(doc.get("expires", 0) or 0)  # an earlier version's lease: the writer's clock
    return _Found(doc, found.generation, expires)


def acquire(store: ObjectStore, name: str, holder: str, ttl_s: float) -> BucketLease:
    """Take the lease; LeaseHeldError if another holder's has not expired or it was taken meanwhile."""
    found = _read(store, name)
    doc, now = found.doc, store.now()
    # Our own lease, written by an earlier call whose answer never came (or
    # never let go): only this committer writes its holder id, so it is ours.
    ours = doc.get("holder") == holder
    if doc.get("holder") and not ours and found.expires > now and not _died_here(doc.get("process")):
        raise LeaseHeldError(
            f"another committer ({doc['holder']}) holds {name}; it expires in {found.expires - now:.0f}s "
            "(by the storage server's clock)"
        )
    token = int(doc.get("token", 0)) + (0 if ours else 1)
    try:
        written = store.write_object(name, _doc(holder, ttl_s, token, now + ttl_s), found.generation)
    except PreconditionFailedError as exc:
        landed = _landed(store, name, holder, token)
        if landed is None:
            raise LeaseHeldError(f"another committer took {name} at the same moment") from exc
        return BucketLease(name, holder, token, *landed)
    carried = checked_ops(doc.get("unrecorded")) if not doc.get("holder") else {}
    return BucketLease(
        name, holder, token, written.generation, (written.updated or now) + ttl_s, written.updated, carried
    )


def _landed(store: ObjectStore, name: str, holder: str, token: int) -> tuple[int, float] | None:
    """After a 412 on our own write: the lease's generation and expiry if it is still ours.

    A write whose answer was lost (a dropped connection) is retried, and the
    retry's precondition fails against the write itself. The lease then
    names our holder and token, which nobody else writes: it is ours."""
    found = _read(store, name)
    if found.doc.get("holder") != holder or found.doc.get("token") != token:
        return None
    return found.generation, found.expires


def renew(store: ObjectStore, lease: BucketLease, ttl_s: float) -> None:
    """Extend the lease from now; LeaseLostError if anyone wrote it since our last write."""
    now = store.now()
    try:
        written = store.write_object(lease.name, _doc(lease.holder, ttl_s, lease.token, now + ttl_s), lease.generation)
    except PreconditionFailedError as exc:
        landed = _landed(store, lease.name, lease.holder, lease.token)
        if landed is not None:  # our own write, its answer lost: renewed
            lease.generation, lease.expires = landed
            return
        doc = _read(store, lease.name).doc
        now_held = f"; it is now held by {doc.get('holder')} (token {doc.get('token')})" if doc.get("holder") else ""
        raise LeaseLostError(
            f"this committer ({lease.holder}, token {lease.token}) lost its lease{now_held}. "
            "It stopped before its next step; nothing was lost, run the commit again"
        ) from exc
    lease.generation, lease.expires = written.generation, (written.updated or now) + ttl_s


def release(store: ObjectStore, lease: BucketLease, unrecorded: Mapping[str, int] | None = None) -> bool:
    """Give the lease up if it is still ours (a conditional write of an expired lease),
    leaving in it the requests ``unrecorded`` for the next holder to record; whether
    it was written."""
    try:
        store.write_object(lease.name, _doc("", 0.0, lease.token, 0.0, unrecorded), lease.generation)
    except PreconditionFailedError:
        return False  # taken over meanwhile: not ours to release
    except Exception as exc:  # it expires by itself; the next committer waits at most the lease
        log.warning("could not release the committer lease %s: %s", lease.name, exc)
        return False
    return True


def clock_offset(store: ObjectStore, name: str, clock: Callable[[], float], max_skew: float) -> float:
    """This host's clock minus the store's, asked with a stat of the lease ``name``;
    ClockSkewError past ``max_skew`` seconds. Nothing a committer decides uses this
    host's clock; a host whose clock is minutes off has a problem worth fixing
    before it acts."""
    store.stat(name)  # an answer, and with it the store's clock
    return check_skew(clock() - store.now(), max_skew)


def check_skew(skew: float, max_skew: float) -> float:
    """``skew`` (this host's clock minus the store's), or ClockSkewError past ``max_skew``."""
    if abs(skew) > max_skew:
        raise ClockSkewError(
            f"this host's clock is {abs(skew):.0f}s {'ahead of' if skew > 0 else 'behind'} the storage "
            f"server's (more than max_clock_skew, {max_skew:g}s): not committing. "
            "Fix the host's time (NTP); `bqspool doctor` shows the offset",
            skew=skew,
        )
    return skew


def holder_of(store: ObjectStore, name: str) -> str | None:
    """Who holds the lease now (by the store's clock), or None."""
    found = _read(store, name)
    holder = found.doc.get("holder")
    return holder if holder and found.expires > store.now() else None


def _doc(holder: str, ttl_s: float, token: int, expires: float, unrecorded: Mapping[str, int] | None = None) -> bytes:
    """The lease document: ``ttl`` decides (from the object's write time); ``expires``,
    on the store's clock as the writer read it, is for people reading the object."""
    doc: dict = {"holder": holder, "ttl": ttl_s, "expires": expires, "token": token, "process": _me()}
    if unrecorded:
        doc["unrecorded"] = dict(unrecorded)
    return json.dumps(doc).encode()


def _start_time(pid: int) -> str | None:
    """A process's start time (clock ticks since boot), or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return None


def _pid_namespace() -> str:
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return ""


def _me() -> dict:
    return {
        "host": socket.gethostname(),
        "pidns": _pid_namespace(),
        "pid": os.getpid(),
        "start": _start_time(os.getpid()),
    }


def _died_here(process: object) -> bool:
    """Whether the holder ran on this host, in this PID namespace, and is gone."""
    if not isinstance(process, dict) or not process.get("start") or not _pid_namespace():
        return False
    me = _me()
    if process.get("host") != me["host"] or process.get("pidns") != me["pidns"]:
        return False  # another host or container: only the expiry tells
    pid = process.get("pid")
    return not isinstance(pid, int) or _start_time(pid) != process["start"]
