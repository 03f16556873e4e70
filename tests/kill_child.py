"""Child for the kill -9 test: append with wait=True, print each returned id."""

import sys
import time

from bqspool.buffer import Buffer

path, durability = sys.argv[1], sys.argv[2]
with Buffer(path, "eixa", durability=durability) as buf:
    print("ready", flush=True)
    i = 0
    while True:
        i += 1
        if i % 5 == 0:
            ids = buf.append_many(
                "user_interactions",
                [{"user_id": "k", "interaction_id": f"{i}-{j}", "timestamp": time.time()} for j in range(4)],
            )
        else:
            ids = [
                buf.append("user_interactions", {"user_id": "k", "interaction_id": str(i), "timestamp": time.time()})
            ]
        sys.stdout.write("".join(f"{x}\n" for x in ids))
        sys.stdout.flush()
