"""The race: seqsentry vs the faust-streaming peer, plus the ingest and model ceilings.

    python -m bench race [--events 1000000] [--model-events 100000]

All contenders consume the same pre-filled topic on one embedded broker, in one run, so
the ratios are side by side. Times run from the first event consumed to the last one
done (group joins excluded for everyone).

1. Ingest ceiling: raw confluent-kafka consume + contract parse. seqsentry with scoring
   off (ingest + windows) divided by it.
2. Pipeline race with a trivial scorer (share of distinct items): seqsentry (coalesced:
   one window per user per batch, the peer's semantics) vs the peer.
3. Model race on --model-events: the real model in both.
4. Model ceiling: the model's best offline windows/s over runtimes (PyTorch, ONNX Runtime),
   threads and batch sizes; seqsentry's streamed windows/s (one window per event, the
   default mode) divided by it.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time

import numpy as np

from bench.common import RESULTS, ensure_log, ensure_model, filled_topic, ingest_ceiling, run_seqsentry, save
from stream import progress
from stream.broker import EmbeddedBroker
from stream.model import Scorer


def run_peer(broker: EmbeddedBroker, topics: dict, n: int, scorer: str, model: str | None, timeout: float) -> dict:
    args = [sys.executable, "-m", "bench.peers.faust_peer", broker.bootstrap, topics["topic"], topics["alerts_topic"],
            str(n), scorer, *([model] if model else []), "worker", "-l", "warn", "--without-web"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + timeout
    found = None
    try:
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            found = re.search(r"PEER first=([\d.]+) last=([\d.]+) events=(\d+) windows=(\d+)", line)
            if found:
                break
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
    if not found:
        raise RuntimeError("the faust peer did not finish in time")
    first, last, ev, win = float(found[1]), float(found[2]), int(found[3]), int(found[4])
    secs = last - first
    return {"events": ev, "seconds": secs, "events_per_s": ev / secs, "windows": win, "windows_per_s": win / secs}


def model_ceiling(model_dir, log, n_windows: int = 20_000) -> dict:
    """Best offline windows/s of the model (encoded windows in memory) over runtimes, threads and batch sizes."""
    import os

    import torch

    from stream import onnx_runtime
    from stream.windows import WindowConfig
    from training import dataset

    scorer = Scorer.load(model_dir, "auto", "torch")
    art = scorer.artifact
    batches = dataset.batches_from_log(log)
    first = [next(batches) for _ in range(2)]
    ws = dataset.build_windows(iter(first), art.vocab, WindowConfig(**art.meta.window))
    enc = ws.encoded().take(np.arange(min(n_windows, len(ws))))
    # Every runtime serving could use here (ONNX Runtime is CPU-only) x thread counts x batch sizes:
    # the ceiling is the best of them, whichever the detector happens to run.
    use_onnx = scorer.device == "cpu" and art.meta.kind == "classifier" and onnx_runtime.available()
    before = torch.get_num_threads()
    sweep = {}
    for runtime in ("torch", "onnxruntime") if use_onnx else ("torch",):
        for threads in sorted({1, os.cpu_count() or 1}):
            torch.set_num_threads(threads)
            scorer.onnx = onnx_runtime.OnnxClassifier(art.model, threads) if runtime == "onnxruntime" else None
            for bs in (32, 64, 128, 256, 512, 1024):
                scorer.score(enc.take(np.arange(min(bs, len(enc)))), batch_size=bs)
                t0 = time.perf_counter()
                scorer.score(enc, batch_size=bs)
                sweep[f"{runtime}, {threads} thread(s), batch {bs}"] = (len(enc) / (time.perf_counter() - t0),
                                                                       threads, bs, runtime)
    torch.set_num_threads(before)
    best = max(sweep, key=lambda k: sweep[k][0])
    return {"windows": len(enc), "mean_window_events": float(enc.length.mean()),
            "sweep_windows_per_s": {k: v[0] for k, v in sweep.items()}, "best": best, "best_threads": sweep[best][1],
            "best_batch_size": sweep[best][2], "best_runtime": sweep[best][3], "windows_per_s": sweep[best][0],
            "device": scorer.device}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--model-events", type=int, default=100_000)
    ap.add_argument("--skip-peer-model", action="store_true")
    args = ap.parse_args()
    model = ensure_model()
    log = ensure_log(args.events)
    small_log = ensure_log(args.model_events)
    res: dict = {"command": f"python -m bench race --events {args.events} --model-events {args.model_events}"}
    with EmbeddedBroker() as broker, progress.bar() as bar:
        steps = ["fill topics", "ingest ceiling", "seqsentry scoring off", "seqsentry trivial", "peer trivial",
                 "model ceiling", "seqsentry model (per event)", "seqsentry model (coalesced)", "peer model"]
        task = bar.add_task("race", total=len(steps), rate="")

        def step(name: str) -> None:
            bar.update(task, advance=1, rate=name)

        big = filled_topic(broker, log)
        small = filled_topic(broker, small_log)
        step("fill topics")
        res["ingest_ceiling"] = ingest_ceiling(broker, big["topic"], args.events)
        step("ingest ceiling")
        res["seqsentry_scoring_off"] = run_seqsentry(broker, big, args.events, model, mode="off")
        step("seqsentry scoring off")
        res["seqsentry_trivial"] = run_seqsentry(broker, big, args.events, model, mode="trivial", coalesce=True,
                                                 max_batch_size=4096, max_queue_windows=100_000)
        step("seqsentry trivial")
        res["peer_trivial"] = run_peer(broker, big, args.events, "trivial", None, timeout=3600)
        step("peer trivial")
        res["model_ceiling"] = model_ceiling(model, small_log)
        step("model ceiling")
        bs = res["model_ceiling"]["best_batch_size"]
        res["seqsentry_model_per_event"] = run_seqsentry(broker, small, args.model_events, model, mode="model",
                                                         max_batch_size=bs)
        step("seqsentry model (per event)")
        res["seqsentry_model_coalesced"] = run_seqsentry(broker, small, args.model_events, model, mode="model",
                                                         coalesce=True, max_batch_size=bs)
        step("seqsentry model (coalesced)")
        if not args.skip_peer_model:
            res["peer_model"] = run_peer(broker, small, args.model_events, "model", str(model), timeout=3600)
        step("peer model")
    ratios = {
        "ingest_vs_ceiling": res["seqsentry_scoring_off"]["events_per_s"] / res["ingest_ceiling"]["events_per_s"],
        "trivial_vs_peer": res["seqsentry_trivial"]["events_per_s"] / res["peer_trivial"]["events_per_s"],
        "streamed_windows_vs_model_ceiling": res["seqsentry_model_per_event"]["windows_per_s"]
        / res["model_ceiling"]["windows_per_s"],
    }
    if "peer_model" in res:
        ratios["model_vs_peer"] = res["seqsentry_model_coalesced"]["events_per_s"] / res["peer_model"]["events_per_s"]
    res["ratios"] = ratios
    save("race", res)
    _plot(res)
    for k, v in ratios.items():
        print(f"{k:40s} {v:8.2f}")


def _plot(res: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [k for k in ("ingest_ceiling", "seqsentry_scoring_off", "seqsentry_trivial", "peer_trivial",
                         "seqsentry_model_coalesced", "peer_model", "seqsentry_model_per_event") if k in res]
    vals = [res[k]["events_per_s"] for k in names]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.barh(names, vals, color=["#888" if "ceiling" in n else "#c33" if "peer" in n else "#36c" for n in names])
    ax.set_xscale("log")
    ax.set_xlabel("events per second (log scale)")
    ax.set_title("seqsentry vs faust-streaming peer (same broker, same run)")
    for i, v in enumerate(vals):
        ax.text(v, i, f" {v:,.0f}", va="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "race.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
