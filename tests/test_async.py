"""The writer under asyncio: batched per loop iteration, exactly once, errors per call."""

import asyncio
import time

import pytest
from bqspool.buffer import Buffer, BufferFullError, ValidationError

from .conftest import interaction
from .stored import stored_ids

S = "user_interactions"


def test_a_thousand_tasks_each_get_their_own_id_once(buffer_path):
    async def main():
        with Buffer(buffer_path, "eixa", durability="normal") as b:

            async def task(k):
                return [await b.append_async(S, interaction(interaction_id=f"{k}-{i}")) for i in range(5)]

            return [i for ids in await asyncio.gather(*(task(k) for k in range(1000))) for i in ids]

    ids = asyncio.run(main())
    assert len(ids) == 5000 and len(set(ids)) == 5000
    stored = stored_ids(buffer_path)
    assert set(stored) == set(ids) and max(stored.values()) == 1


def test_strict_validation_fails_only_its_own_call_in_a_shared_batch(buffer_path):
    async def main():
        with Buffer(buffer_path, "eixa", strict=True, durability="normal") as b:
            return await asyncio.gather(
                b.append_async(S, interaction()),
                b.append_async(S, {"user_id": 1.5}),
                b.append_async("no_such_stream", interaction()),
                b.append_async(S, interaction()),
                return_exceptions=True,
            )

    good1, bad, unknown, good2 = asyncio.run(main())
    assert isinstance(bad, ValidationError) and "user_id" in str(bad)
    assert isinstance(unknown, ValidationError) and "unknown stream" in str(unknown)
    assert set(stored_ids(buffer_path)) == {good1, good2}


def test_default_mode_dead_letters_bad_events_of_a_batch_and_stores_the_rest(buffer_path):
    async def main():
        with Buffer(buffer_path, "eixa", durability="normal") as b:
            ids = await asyncio.gather(
                b.append_async(S, interaction()),
                b.append_async(S, {"user_id": 1.5}),
                b.append_async(["not", "a", "stream"], {}),
            )
            many = await b.append_many_async(S, [interaction(), {"nope": 1}, interaction()])
            return ids, many, b.stats()

    ids, many, stats = asyncio.run(main())
    assert all(ids) and all(many) and len(set(ids + many)) == 6
    assert stats["dead_letters"] == 3 and stats["streams"][S]["pending"] == 3


def test_the_block_policy_never_blocks_the_loop(buffer_path):
    async def main():
        with Buffer(buffer_path, "eixa", max_bytes=2000, on_full="block", block_timeout=0.5) as b:
            await b.append_many_async(S, [interaction(message_in="x" * 300) for _ in range(4)])
            ticks = 0

            async def ticker():
                nonlocal ticks
                while True:
                    await asyncio.sleep(0.01)
                    ticks += 1

            t = asyncio.create_task(ticker())
            started = time.monotonic()
            with pytest.raises(BufferFullError):
                await b.append_async(S, interaction(message_in="y" * 1500))
            t.cancel()
            return ticks, time.monotonic() - started

    ticks, waited = asyncio.run(main())
    assert waited >= 0.45 and ticks >= 20  # it waited for room, and the loop went on meanwhile


def test_a_dropped_event_resolves_at_once_with_none(buffer_path):
    async def main():
        with Buffer(buffer_path, "eixa", max_bytes=1500, on_full="drop") as b:
            return [await b.append_async(S, interaction(message_in="z" * 400)) for _ in range(6)]

    ids = asyncio.run(main())
    assert ids[0] and None in ids
    assert set(stored_ids(buffer_path)) == {i for i in ids if i}


def test_the_async_http_example_stores_every_request_once(tmp_path):
    """scripts/async_http_example.py under 300 concurrent requests: every event once, the count right."""
    import json
    import socket
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "async_http_example.py"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, str(script), "--buffer", str(tmp_path / "app.db"), "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert "listening" in proc.stdout.readline()

        async def request(method, path, body=b""):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"{method} {path} HTTP/1.1\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
            await writer.drain()
            status = int((await reader.readline()).split()[1])
            data = (await reader.read()).split(b"\r\n\r\n", 1)[1]
            writer.close()
            return status, json.loads(data)

        async def main():
            events = [json.dumps(interaction(interaction_id=str(i))).encode() for i in range(300)]
            answers = await asyncio.gather(*(request("POST", "/events", e) for e in events))
            bad = await request("POST", "/events", b'{"user_id": 1.5}')
            count = await request("GET", "/count")
            return answers, bad, count

        answers, bad, count = asyncio.run(main())
    finally:
        proc.terminate()
        proc.wait(10)
    assert all(status == 201 for status, _ in answers)
    ids = [body["event_id"] for _, body in answers]
    assert len(set(ids)) == 300
    assert bad[0] == 422 and "user_id" in bad[1]["error"]
    assert count == (200, {"pending": 300})
    stored = stored_ids(tmp_path / "app.db")
    assert set(stored) == set(ids) and max(stored.values()) == 1
