"""Soak: a steady load for a long time, watching lag, resident memory and latency.

    python -m bench soak [--minutes 10] [--load-fraction 0.5] [--max-load EVENTS_PER_S]

Replays generated traffic (from a separate process) at a fraction of the maximum
sustainable load (measured first unless given) into a running detector and samples every
5 s: the detector process's RSS, consumer lag
(messages), tracked users, and event-to-alert latency p99 over the window. Memory should
be flat once the window store has seen the user population. Writes
bench/results/soak.json and soak.png.
"""

from __future__ import annotations

import argparse
import threading
import time

import numpy as np

from bench.common import (
    RESULTS,
    ensure_log,
    ensure_model,
    filled_topic,
    run_seqsentry,
    sample,
    save,
    start_replayer,
)
from bench.memory import rss_bytes
from stream.broker import EmbeddedBroker
from stream.service import Service, ServiceConfig


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--load-fraction", type=float, default=0.5)
    ap.add_argument("--max-load", type=float)
    args = ap.parse_args()
    model = ensure_model()
    given = args.max_load
    with EmbeddedBroker() as broker:
        if args.max_load is None:
            probe = ensure_log(20_000, seed=6)
            args.max_load = run_seqsentry(broker, filled_topic(broker, probe), 20_000, model)["events_per_s"]
        rate = args.max_load * args.load_fraction
        n = int(rate * args.minutes * 60)
        log = ensure_log(max(n, 1000), seed=8)
        topics = {"topic": "soak-ev", "alerts_topic": "soak-al", "dlq_topic": "soak-dlq"}
        broker.create_topics({"soak-ev": 4, "soak-al": 4, "soak-dlq": 1})
        svc = Service(ServiceConfig(bootstrap=broker.bootstrap, model=model, group="soak", metrics_port=0, **topics))
        svc.setup()
        th = threading.Thread(target=svc.run, kwargs={"install_signals": False}, daemon=True)
        th.start()
        while not svc.ready:
            time.sleep(0.1)
        t0 = time.monotonic()
        sender = start_replayer(log, broker.bootstrap, "soak-ev", rate, n)
        samples = []
        seen = 0
        while sender.poll() is None or (svc.progress().consumed < n and time.monotonic() - t0 < args.minutes * 60 + 120):
            time.sleep(5)
            lat = [x for _, x in list(svc.latencies)[seen:]]
            seen += len(lat)
            lag = sum(s.value for s in svc.metrics.lag.collect()[0].samples)
            samples.append({"t_s": time.monotonic() - t0, "rss_bytes": rss_bytes(), "lag_messages": lag,
                            "consumed": svc.progress().consumed,
                            "tracked_users": sample(svc.metrics, "seqsentry_tracked_users"),
                            "p99_latency_s": float(np.percentile(lat, 99)) if lat else None})
            print(samples[-1], flush=True)
        svc.stop()
        th.join(60)
    rss = np.array([s["rss_bytes"] for s in samples])
    half = len(rss) // 2
    command = f"python -m bench soak --minutes {args.minutes:g} --load-fraction {args.load_fraction:g}"
    res = {"command": command + (f" --max-load {given:g}" if given else ""),
           "rate_events_per_s": rate, "events": n, "samples": samples,
           "rss_growth_second_half_bytes": float(rss[-1] - rss[half]) if len(rss) > 2 else None}
    save("soak", res)
    _plot(samples)
    print(f"soak at {rate:,.0f} ev/s for {args.minutes} min: RSS {rss[0] / 1e6:.0f} -> {rss[-1] / 1e6:.0f} MB")


def _plot(samples: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s["t_s"] / 60 for s in samples]
    fig, axes = plt.subplots(3, 1, figsize=(7, 7), sharex=True)
    axes[0].plot(t, [s["rss_bytes"] / 1e6 for s in samples])
    axes[0].set_ylabel("RSS (MB)")
    axes[1].plot(t, [s["lag_messages"] for s in samples])
    axes[1].set_ylabel("lag (messages)")
    axes[2].plot(t, [(s["p99_latency_s"] or np.nan) * 1000 for s in samples])
    axes[2].set_ylabel("p99 latency (ms)")
    axes[2].set_xlabel("minutes")
    fig.suptitle("seqsentry soak")
    fig.tight_layout()
    fig.savefig(RESULTS / "soak.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
