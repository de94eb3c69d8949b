"""Each user's highest score on the ecommerce benchmark's test log, by attack kind and timing.

    python -m bench.ecommerce_scores DATASET WORKDIR [--reuse] [--generator attackgen_blind]

A diagnostic beside ``python -m bench ecommerce``: the same split and attacks
(``bench.ecommerce.prepare``, seed 0, 30 per kind, 5 % share), the model trained with the
stock CLI (``train_stock``; ``--reuse`` takes the one WORKDIR already holds), and every test
window scored by the artifact's own scorer (its sustain rule included). It prints, per attack
kind and timing, how many attackers reach the threshold and every attacker's highest score,
and the highest scores of normal users: where a kind is missed, whether it is just under the
threshold or far below it. Writes WORKDIR/scores.pkl for further digging.
"""

from __future__ import annotations

import argparse
import collections
import pickle
import sys
from pathlib import Path

import numpy as np

from bench import ecommerce
from stream.commands import log_options
from stream.model import Scorer
from training.dataset import batches_from_events, batches_from_log, build_windows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", choices=["yoochoose", "diginetica", "taobao"])
    ap.add_argument("work", type=Path)
    ap.add_argument("--reuse", action="store_true", help="score the model WORKDIR already holds")
    ap.add_argument("--data", type=Path, default=ecommerce.DEFAULT_DATA)
    ap.add_argument("--generator", choices=ecommerce.GENERATORS, default="attackgen")
    a = ap.parse_args(argv)
    a.work.mkdir(parents=True, exist_ok=True)
    args = argparse.Namespace(seed=0, per_kind=30, share=0.05, budget=0.005, quick=False, generator=a.generator)
    ds = ecommerce.load(a.dataset, a.data)
    if ds is None:
        print(f"no {a.dataset} log under {a.data}", file=sys.stderr)
        return 2
    p = ecommerce.prepare(ds, a.work, args)
    saved = a.work / "model.txt"
    if a.reuse and saved.exists():
        model = Path(saved.read_text())
    else:
        model, secs, _ = ecommerce.train_stock(p.train_log, ds.flags, a.work)
        print(f"trained in {secs:.0f} s: {model}")
        saved.write_text(str(model))
    scorer = Scorer.load(model)
    art = scorer.artifact
    # the test log as `seqsentry score` reads it, with the dataset's own flags (column names, value maps)
    parser = argparse.ArgumentParser()
    log_options.log_args(parser)
    spec = log_options.log_spec(parser.parse_args([str(x) for x in ds.flags]))
    evs = sorted((e for b in batches_from_log(p.test_log, spec) for e in b.events), key=lambda e: e.ts)
    ws = build_windows(batches_from_events(evs, art.window_config), art.vocab, art.window_config)
    scores = scorer.score(ws.encoded(), floor=-np.inf)
    thr = art.meta.threshold
    best = np.full(len(ws.users), -np.inf)
    np.maximum.at(best, ws.user, scores)
    umax = dict(zip(ws.users, best.tolist(), strict=True))
    attackers = {t.user_id for t in p.truth}
    normal = np.array([umax[u] for u in p.normals if u not in attackers and u in umax])
    print(f"threshold {thr:.4f}; normal users alerted {np.mean(normal >= thr):.2%} of {len(normal)}")
    groups: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
    for t in p.truth:
        groups[(t.kind, t.timing)].append(umax.get(t.user_id, float("nan")))
    for (kind, timing), vs in sorted(groups.items()):
        v = np.sort(np.array(vs))
        print(f"{kind:12s} {timing:8s} caught {int((v >= thr).sum())}/{len(v)}  scores {np.round(v, 3).tolist()}")
    print("highest normal users:", np.round(np.sort(normal)[-30:], 3).tolist())
    with open(a.work / "scores.pkl", "wb") as f:
        pickle.dump({"ws": ws, "scores": scores, "threshold": thr, "truth": p.truth, "normals": list(p.normals),
                     "test_seqs": p.test_seqs}, f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
