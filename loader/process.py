"""This process as the loader sees it: who it is to a lease, its memory, and a clock that never jumps."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import resource
import socket
import time
import uuid


def new_holder() -> str:
    """A lease holder's id: unique to this process and call, readable by an operator."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def since_boot() -> float:
    """Seconds on a clock that keeps counting while the machine sleeps (Linux), else monotonic.

    A stopped process or a suspended machine cannot fool it, unlike the
    monotonic clock, which stops with a suspended machine."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    return time.clock_gettime(boottime) if boottime is not None else time.monotonic()


def peak_rss_mb() -> float:
    """This process's peak resident memory in MiB.

    VmHWM where /proc has it: ru_maxrss survives exec, so a loader started
    from a big parent process would report the parent's size.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def give_back_memory() -> None:
    """Hand the heap's free pages back to the system (glibc's malloc_trim), where there is one.

    Staging and merging free a lot of memory that the allocator keeps for
    reuse; between a drain's ship and its commit, giving it back keeps the
    process's peak near the larger stage's own, not their sum."""
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc: nothing to do
        return
    if trim is not None:
        trim(0)
