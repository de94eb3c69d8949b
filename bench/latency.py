"""Event-to-alert latency at 25 %, 50 % and 75 % of the maximum sustainable load.

    python -m bench latency [--seconds 30] [--max-load EVENTS_PER_S]

The maximum sustainable load is measured first (the real model, one window per event,
from a pre-filled topic) unless given. Then traffic is replayed at each fraction of it
for --seconds while the detector runs, and latency is read for every alert: from the
triggering message's Kafka timestamp (set when the replayer produced it) to the broker's
ack of the alert. The replayer is a separate process; alerts triggered in the first
WARMUP_S seconds of each run (consumer start-up) are counted apart. Target at 50 %: p99 <= 2 x max_wait_ms + one batch's inference time.
Writes bench/results/latency.json and latency.png.
"""

from __future__ import annotations

import argparse
import threading
import time

import numpy as np

from bench.common import RESULTS, ensure_log, ensure_model, filled_topic, run_seqsentry, save, start_replayer
from stream import progress
from stream.broker import EmbeddedBroker
from stream.service import Service, ServiceConfig

WARMUP_S = 3.0  # the first seconds (group join, first fetches) are start-up, not sustained load


def _sum_count(histogram) -> tuple[float, float]:  # noqa: ANN001 - a prometheus_client Histogram
    samples = histogram.collect()[0].samples
    return (sum(x.value for x in samples if x.name.endswith("_sum")),
            sum(x.value for x in samples if x.name.endswith("_count")))


def measure(broker: EmbeddedBroker, model, log, rate: float, seconds: float, max_wait_ms: float,
            fetch_wait_ms: float, warmup: float = WARMUP_S) -> dict:
    """Replay at ``rate`` from a separate process; latency of alerts triggered after the warm-up."""
    n = int(rate * (warmup + seconds))
    topics = {"topic": f"lat-ev{int(rate)}", "alerts_topic": f"lat-al{int(rate)}", "dlq_topic": f"lat-dlq{int(rate)}"}
    broker.create_topics({topics["topic"]: 4, topics["alerts_topic"]: 4, topics["dlq_topic"]: 1})
    svc = Service(ServiceConfig(bootstrap=broker.bootstrap, model=model, group=f"lat{int(rate)}", metrics_port=0,
                                max_wait_ms=max_wait_ms, kafka_options={"fetch.wait.max.ms": fetch_wait_ms},
                                **topics))
    svc.setup()
    th = threading.Thread(target=svc.run, kwargs={"install_signals": False}, daemon=True)
    th.start()
    while not svc.ready:
        time.sleep(0.1)
    replayer = start_replayer(log, broker.bootstrap, topics["topic"], rate, n)
    while svc.progress().consumed == 0 and replayer.poll() is None:
        time.sleep(0.001)
    t0_ms = time.time() * 1000  # the warm-up runs from the first consumed event
    if replayer.wait() != 0:
        raise RuntimeError(f"replayer exited with {replayer.returncode}")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (svc.progress().consumed < n or svc.progress().uncommitted_batches):
        time.sleep(0.05)
    inf_sum, inf_count = _sum_count(svc.metrics.inference)
    wait_sum, wait_count = _sum_count(svc.metrics.batch_wait)
    pairs = list(svc.latencies)
    svc.stop()
    th.join(60)
    lat = np.array([x for ts, x in pairs if ts >= t0_ms + warmup * 1000])
    out = {"rate": rate, "events": n, "warmup_s": warmup, "alerts": len(lat), "alerts_in_warmup": len(pairs) - len(lat),
           "mean_batch_inference_s": inf_sum / max(inf_count, 1), "mean_batch_wait_s": wait_sum / max(wait_count, 1)}
    if len(lat):
        out.update({f"p{q}_s": float(np.percentile(lat, q)) for q in (50, 95, 99)})
        out["samples"] = lat.tolist()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--max-load", type=float, help="events/s; measured when omitted")
    ap.add_argument("--max-wait-ms", type=float, default=20.0)
    # Tansu holds every fetch for the full fetch.wait.max.ms, so the detector's default (500 ms,
    # Kafka's) would be the latency here; 10 ms is safe only in short runs: Tansu starves a
    # 10 ms fetch once a partition holds ~15k batches (docs/reliability.md, the soak stall)
    ap.add_argument("--fetch-wait-ms", type=float, default=10.0)
    args = ap.parse_args()
    model = ensure_model()
    given = args.max_load
    with EmbeddedBroker() as broker, progress.bar() as bar:
        task = bar.add_task("latency", total=4, rate="")
        log = ensure_log(200_000, seed=5)
        if args.max_load is None:
            probe = ensure_log(20_000, seed=6)
            topics = filled_topic(broker, probe)
            args.max_load = run_seqsentry(broker, topics, 20_000, model, mode="model")["events_per_s"]
        bar.update(task, advance=1, rate=f"max {args.max_load:,.0f} ev/s")
        runs = []
        for frac in (0.25, 0.5, 0.75):
            runs.append({"load_fraction": frac, **measure(broker, model, log, args.max_load * frac, args.seconds,
                                                          args.max_wait_ms, args.fetch_wait_ms)})
            bar.update(task, advance=1, rate=f"{frac:.0%} done")
    half = next(r for r in runs if r["load_fraction"] == 0.5)
    target = 2 * args.max_wait_ms / 1000 + half["mean_batch_inference_s"]
    command = f"python -m bench latency --seconds {args.seconds:g}" + (f" --max-load {given:g}" if given else "")
    if args.fetch_wait_ms != ap.get_default("fetch_wait_ms"):
        command += f" --fetch-wait-ms {args.fetch_wait_ms:g}"
    result = {"command": command, "max_load_events_per_s": args.max_load, "fetch_wait_ms": args.fetch_wait_ms,
              "max_wait_ms": args.max_wait_ms, "target_p99_at_50pct_s": target,
              "meets_target": half.get("p99_s", float("inf")) <= target,
              "runs": [{k: v for k, v in r.items() if k != "samples"} for r in runs]}
    save("latency", result)
    _plot(runs)
    for r in result["runs"]:
        print(f"{r['load_fraction']:.0%} load ({r['rate']:,.0f} ev/s): p50 {r.get('p50_s', float('nan')) * 1000:.0f} ms, "
              f"p95 {r.get('p95_s', float('nan')) * 1000:.0f} ms, p99 {r.get('p99_s', float('nan')) * 1000:.0f} ms "
              f"({r['alerts']} alerts)")
    print(f"target at 50%: p99 <= {target * 1000:.0f} ms -> {'met' if result['meets_target'] else 'NOT met'}")


def _plot(runs: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for r in runs:
        if r.get("samples"):
            ax.hist(np.array(r["samples"]) * 1000, bins=50, alpha=0.5, label=f"{r['load_fraction']:.0%} load")
    ax.set(xlabel="event-to-alert latency (ms)", ylabel="alerts", title="seqsentry event-to-alert latency")
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "latency.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
