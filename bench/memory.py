"""Bytes per tracked user in the window store (full 64-event windows).

    python -m bench.memory [--users 100000 1000000]

Reports the store's own accounting (arrays + user index) and the process RSS growth.
Writes bench/results/memory.json.
"""

from __future__ import annotations

import argparse
import json
import resource
from pathlib import Path

import numpy as np

from stream import progress
from stream.events import EventBatch
from stream.windows import WindowConfig, WindowStore


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def measure(users: int, events_per_user: int = 64, chunk: int = 200_000) -> dict:
    base = rss_bytes()
    store = WindowStore(WindowConfig(max_events=64, max_users=users), initial_capacity=users)
    ids = [f"user{i:09d}" for i in range(users)]
    total = users * events_per_user
    with progress.bar() as bar:
        task = bar.add_task(f"{users:,} users", total=total, rate="")
        done = 0
        for rnd in range(events_per_user):
            for start in range(0, users, chunk):
                sl = ids[start : start + chunk]
                n = len(sl)
                b = EventBatch(user_id=sl, ts=np.full(n, 1_700_000_000_000 + rnd * 1000, dtype=np.int64),
                               type=["view"] * n, item=np.arange(n, dtype=np.uint32), price=np.full(n, 9.5, np.float32),
                               label=np.zeros(n, np.int8), index=np.arange(n))
                store.add(b)
                done += n
                bar.update(task, completed=done)
    seconds = bar.tasks[0].finished_time or 0.0
    return {"users": users, "ingest_events_per_s": total / seconds if seconds else None, "events_per_window": 64, "store_bytes_per_user": store.nbytes() / store.users,
            "rss_bytes_per_user": (rss_bytes() - base) / users}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, nargs="+", default=[100_000, 1_000_000])
    args = ap.parse_args()
    results = [measure(u) for u in args.users]
    for r in results:
        print(f"{r['users']:>10,} users: store {r['store_bytes_per_user']:,.0f} B/user, "
              f"RSS growth {r['rss_bytes_per_user']:,.0f} B/user, windowing {r['ingest_events_per_s']:,.0f} events/s")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "memory.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
