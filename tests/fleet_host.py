"""An app process of a fleet, for tests: it appends and ships in-process.

    python -m tests.fleet_host BUFFER IDS_FILE [--interval S] [--own-handler MARK_FILE] [--seed N]

A worker thread appends small batches of events to two streams (as request
handlers do) and writes each acknowledged id to IDS_FILE as ``stream id``,
after ``append_many`` returned (the event is durable then). A
:class:`~bqspool.loader.Shipper` ships every ``--interval`` seconds; the
main thread only waits for signals, as a server's does. With
``--own-handler``, the app installs its own SIGTERM handler first (it
writes MARK_FILE and exits 0), which the shipper must hand the signal on to.
Configuration (bucket, prefix, schemas) comes from ``BQSPOOL_*``.
"""

from __future__ import annotations

import argparse
import random
import signal
import sys
import threading
import time

from bqspool.buffer import Buffer
from bqspool.loader import Shipper, load_config
from bqspool.schemas.errors import BufferClosedError

from .events import make_event

STREAMS = ("user_interactions", "tasks")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("buffer")
    ap.add_argument("ids")
    ap.add_argument("--interval", type=float, default=0.3)
    ap.add_argument("--own-handler")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    if args.own_handler:

        def own(signum, frame):
            with open(args.own_handler, "w") as fh:
                fh.write("app handler ran\n")
            sys.exit(0)

        signal.signal(signal.SIGTERM, own)
    buf = Buffer(args.buffer, "eixa", strict=True)
    Shipper(buf, load_config(), interval=args.interval).start()
    out = open(args.ids, "a", buffering=1)  # line-buffered: an id is written the moment it is acknowledged

    def produce() -> None:
        rng = random.Random(args.seed)
        while True:
            stream = STREAMS[rng.randrange(2)]
            events = [make_event(buf.schemas[stream], rng) for _ in range(rng.randrange(1, 6))]
            try:
                ids = buf.append_many(stream, events)
            except BufferClosedError:
                return  # shutting down: nothing more is acknowledged
            out.write("".join(f"{stream} {i}\n" for i in ids))
            time.sleep(0.05)

    threading.Thread(target=produce, daemon=True).start()
    print("ready", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
