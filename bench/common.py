"""Shared benchmark plumbing: a broker with a pre-filled topic, seqsentry runs, results files."""

from __future__ import annotations

import itertools
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from stream import events, logs, replay
from stream.broker import EmbeddedBroker
from stream.encoding import Encoded
from stream.model import Scorer
from stream.service import Service, ServiceConfig

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
_ids = itertools.count()


def sample(metrics, name: str, labels: dict[str, str] | None = None) -> float:
    """One exported sample of a Metrics registry; a name it does not export is an error, not 0."""
    v = metrics.registry.get_sample_value(name, labels or {})
    if v is None:
        raise KeyError(f"no sample {name} {labels or ''} (renamed?)")
    return v


def machine() -> dict:
    return {"cpu": platform.processor() or platform.machine(), "cores": __import__("os").cpu_count(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"}


def save(name: str, data: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **data}, indent=2, default=float))
    return path


def ensure_log(n: int, seed: int = 0) -> Path:
    """A generated JSONL log of n events (cached under runs/bench/)."""
    from training import synth

    path = ROOT / "runs" / "bench" / f"traffic-{n}-{seed}.jsonl"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        logs.write_log(path, synth.generate(events=n, seed=seed))
    return path


def ensure_model() -> Path:
    """The registry model used by benchmarks (runs/bench/registry), trained once on generated traffic."""
    from stream import registry
    from training.train import train_on_generated

    reg = ROOT / "runs" / "bench" / "registry"
    if registry.current_version(reg) is None:
        train_on_generated(reg, show=True)
    return registry.current(reg)


def filled_topic(broker: EmbeddedBroker, log: Path, partitions: int = 4) -> dict[str, str]:
    n = next(_ids)
    topics = {"topic": f"bench-ev{n}", "alerts_topic": f"bench-al{n}", "dlq_topic": f"bench-dlq{n}"}
    broker.create_topics({topics["topic"]: partitions, topics["alerts_topic"]: partitions, topics["dlq_topic"]: 1})
    replay.replay(log, broker.bootstrap, topics["topic"])
    return topics


def start_replayer(log: Path, bootstrap: str, topic: str, rate: float, limit: int) -> subprocess.Popen:
    """`seqsentry replay` at ``rate`` in its own process, as a producer would be in production
    (in the detector's process it would share the GIL and add its own stalls to what is measured)."""
    return subprocess.Popen([sys.executable, "-m", "stream.cli", "replay", str(log), "-b", bootstrap, "-t", topic,
                             "--rate", str(rate), "--limit", str(limit), "--quiet"], stdout=subprocess.DEVNULL)


# Consumer fetch settings of every pre-filled-topic run, the ceiling's and seqsentry's alike.
# Tansu holds each fetch for the full wait and answers at most 5 MB, so the detector's
# default 500 ms (Kafka's) would cap ingest here at ~10 MB/s; 50 ms is safe on these topics,
# which the replayer fills in large batches (the short-wait starvation needs ~15k+ batches a
# partition, see docs/reliability.md).
FETCH_OPTIONS = {"fetch.wait.max.ms": 50}


def run_seqsentry(broker: EmbeddedBroker, topics: dict[str, str], n: int, model: Path, *, mode: str = "model",
                  coalesce: bool = False, timeout: float = 3600, **cfg: object) -> dict:
    """Consume n pre-filled events with the in-process service; time from first consumed to all done.

    mode: "model" (real scoring), "trivial" (cheap numpy score: pipeline overhead), "off" (no scoring).
    """
    cfg.setdefault("kafka_options", FETCH_OPTIONS)
    svc = Service(ServiceConfig(bootstrap=broker.bootstrap, model=model, group=f"bench{next(_ids)}", metrics_port=0,
                                coalesce=coalesce, **topics, **cfg))
    svc.setup()
    if mode == "trivial":
        svc.detector.scorer = TrivialScorer(svc.detector.scorer)
    elif mode == "off":
        svc.detector.score = lambda pendings: [[] for _ in pendings]  # ingest + windows only
    import threading

    th = threading.Thread(target=svc.run, kwargs={"install_signals": False}, daemon=True)
    th.start()
    m = svc.metrics
    t_first = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        progress = svc.progress()
        if t_first is None and progress.consumed > 0:
            t_first = time.monotonic()
        if progress.consumed >= n and progress.idle:
            break
        time.sleep(0.005)
    t_last = time.monotonic()
    windows = sample(m, "seqsentry_windows_scored_total")
    lat = np.array(svc.latencies) if svc.latencies else np.array([])
    svc.stop()
    th.join(60)
    secs = t_last - (t_first or t_last)
    return {"events": n, "seconds": secs, "events_per_s": n / secs if secs else None, "windows": windows,
            "windows_per_s": windows / secs if secs else None, "alerts_latency_samples": len(lat)}


class TrivialScorer:
    """A scorer that costs ~nothing (share of distinct items): measures pipeline overhead."""

    def __init__(self, real: Scorer) -> None:
        self.artifact = real.artifact
        self.device = "cpu"

    def score(self, enc: Encoded, batch_size: int = 0) -> np.ndarray:
        p = self.artifact.vocab.parts(enc.input_ids)
        return (1.0 - (p.repeat & p.is_event).sum(1) / np.maximum(p.is_event.sum(1), 1)).astype(np.float32)

    def explain(self, enc: Encoded, row: int, top: int = 5) -> list:
        return []

    def explain_many(self, enc: Encoded, rows: list[int], top: int = 5) -> list[list]:
        return [[] for _ in rows]


def ingest_ceiling(broker: EmbeddedBroker, topic: str, n: int, partitions: int = 4) -> dict:
    """Raw confluent-kafka consume + contract parse of n events: the ceiling for ingest."""
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"ceiling{next(_ids)}", **FETCH_OPTIONS,
                  "enable.auto.commit": False})
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    got, t_first = 0, None
    while got < n:
        msgs = c.consume(2000, timeout=1.0)
        if msgs and t_first is None:
            t_first = time.monotonic()
        events.parse_batch([m.value() for m in msgs if not m.error()])
        got += len(msgs)
    secs = time.monotonic() - t_first
    c.close()
    return {"events": got, "seconds": secs, "events_per_s": got / secs}
