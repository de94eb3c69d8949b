"""CPU inference variants, each checked for score agreement with the eager fp32 baseline.

    python -m bench inference [--windows 8000] [--batch-size 256]

Variants: torch thread counts, dynamic int8 quantisation of the Linear layers,
torch.compile, and ONNX Runtime. Reports windows/s, max |score difference|, and how
often the alert decision (score >= threshold) agrees; then torch vs ONNX Runtime across
batch sizes, because serving batches under light load are small and per-call overhead
decides there. Writes bench/results/inference.json.
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch

from bench.common import ensure_log, ensure_model, save
from stream.encoding import Encoded
from stream.model import Scorer, serving_thread_count


def _windows(model_dir, n: int) -> tuple[Scorer, Encoded]:
    from stream.windows import WindowConfig
    from training import dataset

    scorer = Scorer.load(model_dir, "cpu", runtime="torch")
    art = scorer.artifact
    batches = dataset.batches_from_log(ensure_log(20_000, seed=6))
    ws = dataset.build_windows(batches, art.vocab, WindowConfig(**art.meta.window))
    return scorer, _head(ws.encoded(), n)


def _head(enc: Encoded, k: int) -> Encoded:
    return enc.take(np.arange(min(k, len(enc))))


def _time(scorer: Scorer, enc: Encoded, bs: int) -> tuple[float, np.ndarray]:
    scorer.score(_head(enc, bs), batch_size=bs)
    t0 = time.perf_counter()
    s = scorer.score(enc, batch_size=bs)
    return len(enc) / (time.perf_counter() - t0), s


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--windows", type=int, default=8000)
    ap.add_argument("--batch-size", type=int, default=256)
    args = ap.parse_args()
    base, enc = _windows(ensure_model(), args.windows)
    thr = base.artifact.meta.threshold
    threads0 = torch.get_num_threads()
    results = {}
    ref = None
    for threads in sorted({1, threads0}):
        torch.set_num_threads(threads)
        rate, s = _time(base, enc, args.batch_size)
        ref = s if ref is None or threads == threads0 else ref
        results[f"eager fp32, {threads} thread(s)"] = {"windows_per_s": rate, "scores": s}
    torch.set_num_threads(threads0)
    ref = results[f"eager fp32, {threads0} thread(s)"]["scores"]

    q = copy.deepcopy(base)
    q.artifact = copy.copy(base.artifact)
    q.artifact.model = torch.ao.quantization.quantize_dynamic(copy.deepcopy(base.artifact.model), {torch.nn.Linear},
                                                              dtype=torch.qint8)
    rate, s = _time(q, enc, args.batch_size)
    results["dynamic int8 (Linear)"] = {"windows_per_s": rate, "scores": s}

    try:
        c = copy.copy(base)
        c.artifact = copy.copy(base.artifact)
        c.artifact.model = torch.compile(copy.deepcopy(base.artifact.model), dynamic=True)
        t0 = time.perf_counter()
        rate, s = _time(c, enc, args.batch_size)
        results["torch.compile (dynamic)"] = {"windows_per_s": rate, "scores": s,
                                              "compile_and_run_s": time.perf_counter() - t0}
    except Exception as exc:  # compile needs a C++ toolchain; report instead of failing the run
        results["torch.compile (dynamic)"] = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}

    ort = Scorer.load(ensure_model(), "cpu", runtime="onnx")
    serving = serving_thread_count()  # ONNX Runtime gets the serving thread count; compare torch at the same
    rate, s = _time(ort, enc, args.batch_size)
    results[f"ONNX Runtime (fp32), {serving} thread(s)"] = {"windows_per_s": rate, "scores": s}

    torch.set_num_threads(serving)
    sweep = {}
    for bs in (1, 8, 32, 64, 256):
        sweep[bs] = {name: _time(sc, _head(enc, max(bs * 40, 512)), bs)[0] for name, sc in (("torch", base), ("onnxruntime", ort))}
        print(f"batch {bs}: " + ", ".join(f"{k} {v:,.0f} windows/s" for k, v in sweep[bs].items()))
    torch.set_num_threads(threads0)

    out = {}
    for name, r in results.items():
        if "scores" in r:
            s = r.pop("scores")
            r["max_abs_score_diff"] = float(np.abs(s - ref).max())
            r["alert_decision_agreement"] = float(((s >= thr) == (ref >= thr)).mean())
            r["speedup_vs_baseline"] = r["windows_per_s"] / results[f"eager fp32, {threads0} thread(s)"]["windows_per_s"]
        out[name] = r
        print(name, {k: round(v, 5) if isinstance(v, float) else v for k, v in r.items()})
    save("inference", {"command": f"python -m bench inference --windows {args.windows} --batch-size {args.batch_size}",
                       "windows": args.windows, "batch_size": args.batch_size, "variants": out,
                       "batch_size_sweep_threads": serving, "batch_size_sweep_windows_per_s": sweep})


if __name__ == "__main__":
    main()
