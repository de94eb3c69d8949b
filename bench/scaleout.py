"""Scale-out: 1 versus 2 `seqsentry run` processes (one consumer group) on a 4-partition topic.

    python -m bench scaleout [--events 40000]

Each process gets cores / processes torch threads, so both runs use the same machine.
Throughput is measured from the first event consumed (any process) until every event is
processed, by scraping each process's /metrics. Writes bench/results/scaleout.json.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import urllib.request

from bench.common import ensure_log, ensure_model, filled_topic, save
from stream.broker import EmbeddedBroker, free_port


def consumed(port: int) -> float:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return 0.0
    for line in text.splitlines():
        if line.startswith("seqsentry_windows_scored_total "):
            return float(line.split()[1])
    return 0.0


def run(broker: EmbeddedBroker, topics: dict, n: int, model, procs: int) -> dict:
    ports = [free_port() for _ in range(procs)]
    threads = max(1, (os.cpu_count() or 2) // procs)
    env = {**os.environ, "SEQSENTRY_TORCH_THREADS": str(threads)}
    group = f"scale{procs}-{time.time()}"
    ps = [subprocess.Popen([sys.executable, "-m", "stream.cli", "run", "-b", broker.bootstrap, "--model", str(model),
                            "--topic", topics["topic"], "--alerts-topic", topics["alerts_topic"], "--dlq-topic",
                            topics["dlq_topic"], "--group", group, "--metrics-port", str(p)], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for p in ports]
    t_first = None
    try:
        deadline = time.monotonic() + 1800
        while time.monotonic() < deadline:
            total = sum(consumed(p) for p in ports)
            if t_first is None and total > 0:
                t_first = time.monotonic()
            if total >= n:
                break
            time.sleep(0.2)
        secs = time.monotonic() - t_first
        per_proc = [consumed(p) for p in ports]
    finally:
        for p in ps:
            p.terminate()
        for p in ps:
            p.wait(60)
    return {"processes": procs, "torch_threads_each": threads, "events": n, "seconds": secs,
            "events_per_s": n / secs, "windows_per_process": per_proc}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=40_000)
    args = ap.parse_args()
    model = ensure_model()
    log = ensure_log(args.events, seed=7)
    with EmbeddedBroker() as broker:
        one = run(broker, filled_topic(broker, log), args.events, model, 1)
        two = run(broker, filled_topic(broker, log), args.events, model, 2)
    res = {"command": f"python -m bench scaleout --events {args.events}", "one": one, "two": two,
           "speedup": two["events_per_s"] / one["events_per_s"]}
    save("scaleout", res)
    print(f"1 process: {one['events_per_s']:,.0f} ev/s; 2 processes: {two['events_per_s']:,.0f} ev/s "
          f"(x{res['speedup']:.2f}); per-process windows {two['windows_per_process']}")


if __name__ == "__main__":
    main()
