"""Probe: how far would evidence *across* users go against campaigns (rings of accounts on one item)?

    python -m bench.campaign_probe WORKDIR [--hours 24] [--share 0.9] [--budget 0.0025]

Not part of the detector: per-user windows cannot see a ring, and a cross-user stage would need an
item-keyed repartition to keep offline/online parity under scale-out (README). This measures the
simplest such signal on the ecommerce benchmark's YOOCHOOSE logs, to size that work. WORKDIR holds
``yoochoose-train.tsv``, ``yoochoose-test.tsv`` and ``yoochoose-truth.json`` as ``bench.ecommerce.prepare``
writes them (``python -m bench.ecommerce_scores yoochoose WORKDIR [--generator attackgen_blind]`` does).

Per event (user u, item i, time t), in time order: T = distinct *other* users who touched i in the last
``--hours``, R = those of them with two or more events on i. A user's campaign score is the highest R over
its repeat events on an item (its second or later on i) where R / T >= ``--share``: several other users
came back to the same item, and nearly everybody who touched it did. The threshold is set on the training
log's users at ``--budget`` (strictly above it alerts), then applied to the test log's normal users and
attackers by kind and timing. Results are printed and written to WORKDIR/campaign-probe.json.
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

import numpy as np


def read_yoochoose(path: Path) -> list[tuple[int, str, str]]:
    """(ts_ms, user, item) in time order from a YOOCHOOSE-layout log."""
    out = []
    with open(path) as f:
        next(f)
        for line in f:
            u, i, t = line.rstrip("\n").split("\t")
            out.append((round(float(t) * 1000), u, i))
    return sorted(out)


def campaign_scores(events: list[tuple[int, str, str]], horizon_ms: int, share: float) -> dict[str, float]:
    """Each user's campaign score (see the module docstring)."""
    seen: dict[str, collections.deque] = collections.defaultdict(collections.deque)
    count: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    best: dict[str, float] = {}
    for t, u, i in events:
        q, c = seen[i], count[i]
        while q and q[0][0] < t - horizon_ms:
            _, v = q.popleft()
            c[v] -= 1
            if not c[v]:
                del c[v]
        others = [v for v in c if v != u]
        repeat = sum(1 for v in others if c[v] >= 2)
        score = float(repeat) if c[u] and others and repeat / len(others) >= share else 0.0
        best[u] = max(best.get(u, 0.0), score)
        q.append((t, u))
        c[u] += 1
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("work", type=Path)
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--share", type=float, default=0.9)
    ap.add_argument("--budget", type=float, default=0.0025, help="share of training users the probe may alert")
    a = ap.parse_args(argv)
    horizon = int(a.hours * 3_600_000)
    train = np.sort(np.array(list(campaign_scores(read_yoochoose(a.work / "yoochoose-train.tsv"), horizon,
                                                  a.share).values())))[::-1]
    thr = float(train[min(int(a.budget * len(train)), len(train) - 1)])
    test = campaign_scores(read_yoochoose(a.work / "yoochoose-test.tsv"), horizon, a.share)
    truth = {t["user_id"]: t for t in json.loads((a.work / "yoochoose-truth.json").read_text())}
    normal = np.array([s for u, s in test.items() if u not in truth])
    kinds: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    for u, t in truth.items():
        k = f"{t['kind']}/{t['timing']}"
        kinds[k][0] += int(test.get(u, 0.0) > thr)
        kinds[k][1] += 1
    out = {"hours": a.hours, "share": a.share, "budget": a.budget, "threshold_repeat_users": thr,
           "train_users_alerted": float(np.mean(train > thr)), "test_normal_alerted": float(np.mean(normal > thr)),
           "test_normal_users": len(normal), "caught": {k: f"{c}/{n}" for k, (c, n) in sorted(kinds.items())}}
    print(json.dumps(out, indent=1))
    (a.work / "campaign-probe.json").write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
