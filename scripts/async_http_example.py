#!/usr/bin/env python3
"""A small asyncio HTTP service that logs an analytics event per request.

No web framework: asyncio's own streams. ``POST /events`` with a JSON body
appends it to the ``user_interactions`` stream with ``append_async`` and
answers once it is durable (201 and the event id); an invalid event gets
422 and its reason; ``GET /count`` serves how many events are pending.
This is how an async app (FastAPI, aiohttp, Quart alike) would use the
writer on its request path.

    python scripts/async_http_example.py --buffer .bqspool/app.db --port 8080
    curl -X POST localhost:8080/events -d '{"user_id": "u1", "interaction_id": "i1", "timestamp": 1700000000}'
"""

from __future__ import annotations

import argparse
import asyncio
import json

from bqspool.buffer import Buffer, ValidationError

STREAM = "user_interactions"


async def _respond(writer: asyncio.StreamWriter, status: str, body: dict) -> None:
    data = json.dumps(body).encode()
    writer.write(
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n"
        "Connection: close\r\n\r\n".encode()
        + data
    )
    await writer.drain()
    writer.close()


def handler(buf: Buffer):
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = (await reader.readline()).decode("latin-1").split()
            headers = {}
            while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                key, _, value = line.decode("latin-1").partition(":")
                headers[key.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
            if request[:2] == ["GET", "/count"]:
                await _respond(writer, "200 OK", {"pending": buf.stats()["streams"][STREAM]["pending"]})
            elif request[:2] == ["POST", "/events"]:
                try:
                    event_id = await buf.append_async(STREAM, json.loads(body))
                except (ValueError, ValidationError) as exc:
                    await _respond(writer, "422 Unprocessable Entity", {"error": str(exc)})
                    return
                await _respond(writer, "201 Created", {"event_id": event_id})
            else:
                await _respond(writer, "404 Not Found", {"error": "try POST /events or GET /count"})
        except (ConnectionError, asyncio.IncompleteReadError):
            writer.close()

    return handle


async def serve(buffer: str, host: str, port: int, ready: asyncio.Event | None = None) -> None:
    with Buffer(buffer, "eixa", strict=True) as buf:
        server = await asyncio.start_server(handler(buf), host, port)
        print(f"listening on {host}:{server.sockets[0].getsockname()[1]}", flush=True)
        async with server:
            if ready is not None:
                ready.set()
            await server.serve_forever()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--buffer", default=".bqspool/app.db")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    args = ap.parse_args()
    asyncio.run(serve(args.buffer, args.host, args.port))


if __name__ == "__main__":
    main()
