"""Faust runtime: the same detector as a faust-streaming agent.

For teams that already operate Faust apps. Parsing, windows, encoding, model, alert
building and cooldown are the very same objects as in `seqsentry run`
(stream.events / stream.detector); Faust supplies consumption, batching
(``stream.take_events``), offset commits and rebalancing. Differences from the main
runtime, by design of Faust rather than of seqsentry:

* batching is Faust's ``take_events(max_batch_size, within=max_wait_ms)``;
* windows are not rebuilt from the input topic after a rebalance (they refill as events
  arrive), and there is no backpressure pause beyond Faust's own flow control;
* throughput is lower (see docs/benchmarks.md for the measured ratio).

At-least-once holds: the agent awaits the broker's ack of every alert and dead letter of
a batch before asking for the next one, and Faust commits only acknowledged events.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from concurrent.futures import ThreadPoolExecutor

import faust
import numpy as np
import orjson
from prometheus_client import start_http_server

from stream import events
from stream.detector import Detector
from stream.metrics import Metrics
from stream.service import ServiceConfig
from stream.windows import WindowStore

log = logging.getLogger("seqsentry.faust")


def build_app(cfg: ServiceConfig, detector: Detector, metrics: Metrics) -> faust.App:
    """A Faust app whose single agent runs the seqsentry pipeline on ``cfg.topic``."""
    app = faust.App(
        cfg.group, broker=f"kafka://{cfg.bootstrap}", store="memory://", web_enabled=False,
        datadir=tempfile.mkdtemp(prefix="seqsentry-faust-"),  # Faust's working files, never in the cwd
        key_serializer="raw", value_serializer="raw", topic_allow_declare=False, topic_disable_leader=True,
        broker_session_timeout=6.0, broker_heartbeat_interval=0.5, consumer_auto_offset_reset="earliest",
    )
    source = app.topic(cfg.topic, key_type=bytes, value_type=bytes)
    alerts_topic = app.topic(cfg.alerts_topic, key_type=bytes, value_type=bytes)
    dlq = app.topic(cfg.dlq_topic, key_type=bytes, value_type=bytes)
    stores: dict[int, WindowStore] = {}
    scoring = ThreadPoolExecutor(max_workers=1, thread_name_prefix="seqsentry-score")  # Detector.score: one thread

    @app.agent(source)
    async def detect(stream: faust.StreamT) -> None:
        loop = asyncio.get_running_loop()
        async for batch in stream.take_events(cfg.max_batch_size, within=cfg.max_wait_ms / 1000.0):
            sends = []
            by_part: dict[int, list] = {}
            for ev in batch:
                by_part.setdefault(ev.message.partition, []).append(ev)
            for part, evs in by_part.items():
                values = [e.value for e in evs]
                metrics.events_consumed.inc(len(evs))
                res = events.parse_batch(values, cfg.max_message_bytes)
                metrics.events_valid.inc(len(res.events))
                for r in res.rejects:
                    metrics.events_rejected.labels(r.reason).inc()
                    m = evs[r.index].message
                    sends.append(await dlq.send(key=evs[r.index].key, value=values[r.index], headers={
                        "seqsentry.reason": r.reason.encode(), "seqsentry.detail": r.detail[:500].encode(),
                        "seqsentry.topic": m.topic.encode(), "seqsentry.partition": str(m.partition).encode(),
                        "seqsentry.offset": str(m.offset).encode()}))
                store = stores.setdefault(part, detector.new_store())
                offsets = np.array([e.message.offset for e in evs], dtype=np.int64)
                kts = np.array([int(e.message.timestamp * 1000) for e in evs], dtype=np.int64)
                pending, too_late = detector.ingest(store, res.events, topic=cfg.topic, partition=part,
                                                    offsets=offsets, kafka_ts=kts)
                for row in too_late.tolist():
                    metrics.events_late.inc()
                    i = int(res.events.index[row])
                    sends.append(await dlq.send(key=evs[i].key, value=values[i],
                                                headers={"seqsentry.reason": b"too-late"}))
                found = await loop.run_in_executor(scoring, detector.score, pending)
                for group in found:
                    for a in group:
                        metrics.alerts.labels(a["severity"]).inc()
                        sends.append(await alerts_topic.send(key=a["user_id"].encode(), value=orjson.dumps(a)))
            # at-least-once: this batch is acked (and so committable) only after the broker has every output
            await asyncio.gather(*sends)

    return app


def run(cfg: ServiceConfig, loglevel: str = "warn") -> None:
    """Run the Faust worker until SIGTERM/SIGINT."""
    from stream import registry
    from stream.model import Scorer

    metrics = Metrics()
    scorer = Scorer.load(cfg.model or registry.current(cfg.registry), cfg.device, cfg.runtime)
    metrics.model_info.info({"version": scorer.artifact.version, "kind": scorer.artifact.meta.kind})
    detector = Detector(scorer, cooldown_ms=int(cfg.cooldown_s * 1000), explain_top=cfg.explain_top, metrics=metrics)
    start_http_server(cfg.metrics_port, cfg.metrics_host, registry=metrics.registry)
    app = build_app(cfg, detector, metrics)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()
