"""Zero-label scoring cost against the classifier's, on the same windows and machine.

    python -m bench zerolabel [--events 20000]

Both models are trained the default way on the same generated log (the classifier with its
labels, the zero-label model without them); then the same recorded traffic goes through
the serving step exactly as `seqsentry score` runs it - ingest, encode, length buckets,
model, threshold, cooldown and explanations of every alert - with each model in turn, as
it is served on CPU (the classifier by ONNX Runtime, the zero-label model by PyTorch).
Reports windows/s for each and their ratio (target: zero-label >= 0.5 x classifier).
Writes bench/results/zerolabel.json.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bench.common import ROOT, ensure_log, ensure_model, save
from stream import events, logs
from stream.detector import Detector
from stream.model import Scorer, serving_threads
from training import dataset, train


def zero_label_model() -> str:
    """A zero-label model trained the default way on the benchmark's generated log (once)."""
    from stream import registry

    reg = ROOT / "runs" / "bench" / "registry-zero-label"
    if registry.current_version(reg) is None:
        log = ensure_log(60_000, seed=43)
        train.train(lambda: dataset.batches_from_log(log), reg / "runs", train.default_config(zero_label=True),
                    registry_dir=reg, show=True)
    return str(registry.current(reg))


def serve(model_dir: str, log, repeat: int = 2) -> dict:
    """Windows/s of the full serving step over ``log`` (best of ``repeat`` passes)."""
    best = None
    for _ in range(repeat):
        scorer = Scorer.load(model_dir, "cpu")
        serving_threads("cpu")
        det = Detector(scorer)
        store = det.new_store()
        windows = alerts = 0
        t0 = time.perf_counter()
        for chunk in logs.iter_chunks(log):
            res = events.parse_batch(chunk.raw) if chunk.raw is not None else events.validate_records(chunk.records)
            for sub in range(0, len(res.events), 512):  # micro-batches as the live consumer sees them
                rows = np.arange(sub, min(sub + 512, len(res.events)))
                pending, _ = det.ingest(store, res.events.take(rows))
                found = det.score(pending)
                windows += sum(len(p) for p in pending)
                alerts += sum(len(f) for f in found)
        dt = time.perf_counter() - t0
        run = {"windows": windows, "alerts": alerts, "seconds": dt, "windows_per_s": windows / dt,
               "runtime": scorer.runtime, "kind": scorer.artifact.meta.kind}
        best = run if best is None or run["windows_per_s"] > best["windows_per_s"] else best
    return best


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench zerolabel", description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=20_000)
    args = ap.parse_args()
    log = ensure_log(args.events, seed=6)
    res = {"classifier": serve(str(ensure_model()), log), "zero_label": serve(zero_label_model(), log)}
    ratio = res["zero_label"]["windows_per_s"] / res["classifier"]["windows_per_s"]
    for name, r in res.items():
        print(f"{name}: {r['windows_per_s']:,.0f} windows/s ({r['runtime']}, {r['alerts']} alerts explained)")
    print(f"zero-label / classifier: {ratio:.2f} (target >= 0.5)")
    save("zerolabel", {"command": f"python -m bench zerolabel --events {args.events}", **res, "ratio": ratio})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
