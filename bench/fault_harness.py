"""What the fault benchmarks share (bench/faults.py, bench/faults_evasion.py): a tiny registry,
a Service running on fresh topics, and the markers of their tables in docs/reliability.md."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition

from bench.common import ROOT
from stream.broker import EmbeddedBroker
from stream.service import Service, ServiceConfig

DOC = ROOT / "docs" / "reliability.md"
BEGIN, END = "<!-- faults:begin -->", "<!-- faults:end -->"
_ids = iter(range(1_000_000))


def tiny_registry(tmp: Path) -> Path:
    """A registry with a tiny classifier trained for a few steps on generated traffic."""
    from stream.model import ModelSize
    from stream.windows import WindowConfig
    from training import dataset, synth, train

    traffic = synth.generate_list(events=4000, seed=3, attacker_fraction=0.08)
    cfg = train.TrainConfig(size=ModelSize(layers=1, hidden=32, heads=2, intermediate=64),
                            window=WindowConfig(max_events=16), pretrain_steps=5, finetune_epochs=1,
                            max_train_windows=1000, batch_size=64, user_alert_rate=0.02)
    reg = tmp / "registry"
    train.train(lambda: dataset.batches_from_records(traffic), tmp / "runs", cfg, registry_dir=reg, show=False)
    return reg


class Running:
    """A Service on fresh topics, run on a thread."""

    def __init__(self, broker: EmbeddedBroker, reg: Path, **overrides: object) -> None:
        n = next(_ids)
        self.topics = {"topic": f"fev{n}", "alerts_topic": f"fal{n}", "dlq_topic": f"fdlq{n}"}
        broker.create_topics({self.topics["topic"]: 1, self.topics["alerts_topic"]: 1, self.topics["dlq_topic"]: 1})
        self.broker = broker
        self.cfg = ServiceConfig(bootstrap=broker.bootstrap, group=f"fg{n}", registry=reg, metrics_port=0,
                                 max_wait_ms=10, **self.topics, **overrides)
        self.svc = Service(self.cfg)
        self.svc.setup()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        wait(lambda: self.svc.ready, 30)

    def _run(self) -> None:
        try:
            self.svc.run(install_signals=False)
        except BaseException as exc:  # recorded as the scenario's result
            self.error = exc

    def produce(self, values: list[tuple[bytes, bytes]]) -> None:
        p = Producer({"bootstrap.servers": self.broker.bootstrap})
        for value, key in values:
            p.produce(self.topics["topic"], value, key)
        p.flush(30)

    def settle(self, n: int, timeout: float = 60) -> bool:
        return wait(lambda: self.svc.progress().consumed >= n and self.svc.idle, timeout)

    def stop(self) -> None:
        self.svc.stop()
        self.thread.join(60)

    def dead_letters(self) -> list:
        """Every message of the dead-letter topic, up to its high watermark."""
        c = Consumer({"bootstrap.servers": self.broker.bootstrap, "group.id": f"fr{next(_ids)}", "fetch.wait.max.ms": 50})
        tp = TopicPartition(self.topics["dlq_topic"], 0)
        lo, hi = c.get_watermark_offsets(tp, timeout=10)
        c.assign([TopicPartition(tp.topic, 0, lo)])
        out: list = []
        deadline = time.monotonic() + 10
        while len(out) < hi - lo and time.monotonic() < deadline:
            out += [m for m in c.consume(100, timeout=0.5) if not m.error()]
        c.close()
        return out


def wait(cond, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return False
