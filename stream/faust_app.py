"""Faust runtime: the same detector as a faust-streaming agent.

For teams that already operate Faust apps. Parsing, windows, encoding, model, alert
building and cooldown are the very same objects as in `seqsentry run`
(stream.pipeline / stream.detector); Faust supplies consumption, batching
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
import time
from concurrent.futures import ThreadPoolExecutor

import faust
import numpy as np
import orjson
from confluent_kafka import TIMESTAMP_CREATE_TIME, TIMESTAMP_LOG_APPEND_TIME
from prometheus_client import start_http_server

from stream import pipeline
from stream.dead_letter import dead_letter_headers, fit_dead_letter
from stream.detector import Detector
from stream.metrics import Metrics
from stream.progress_line import ProgressLine
from stream.runtime.config import ServiceConfig
from stream.windows import WindowStore

log = logging.getLogger(__name__)


AIOKAFKA_LOG_APPEND_TIME = 1  # aiokafka numbers timestamp types as the Kafka protocol does


def _timestamp(message: object) -> tuple[int, int]:
    """A Faust message's timestamp as confluent-kafka's ``Message.timestamp()`` pair (type, ms)."""
    kind = TIMESTAMP_LOG_APPEND_TIME if message.timestamp_type == AIOKAFKA_LOG_APPEND_TIME else TIMESTAMP_CREATE_TIME
    return kind, round(message.timestamp * 1000)


def build_app(cfg: ServiceConfig, detector: Detector, metrics: Metrics) -> faust.App:
    """A Faust app whose single agent runs the seqsentry pipeline on ``cfg.topic``."""
    app = faust.App(
        cfg.group, broker=f"kafka://{cfg.bootstrap}", store="memory://", web_enabled=False,
        datadir=tempfile.mkdtemp(prefix="seqsentry-faust-"),  # Faust's working files, never in the cwd
        key_serializer="raw", value_serializer="raw", topic_allow_declare=False, topic_disable_leader=True,
        broker_session_timeout=6.0, broker_heartbeat_interval=0.5, consumer_auto_offset_reset=cfg.offset_reset,
    )
    source = app.topic(cfg.topic, key_type=bytes, value_type=bytes)
    alerts_topic = app.topic(cfg.alerts_topic, key_type=bytes, value_type=bytes)
    dlq = app.topic(cfg.dlq_topic, key_type=bytes, value_type=bytes)
    stores: dict[int, WindowStore] = {}
    scoring = ThreadPoolExecutor(max_workers=1, thread_name_prefix="seqsentry-score")  # Detector.score: one thread

    # printed, not logged: the Faust worker owns logging and runs at --loglevel warn
    progress_line = ProgressLine(metrics.tally, lambda line: print(line, flush=True))

    @app.agent(source)
    async def detect(stream: faust.StreamT) -> None:
        loop = asyncio.get_running_loop()
        async for batch in stream.take_events(cfg.max_batch_size, within=cfg.max_wait_ms / 1000.0):
            received_ms = int(time.time() * 1000)  # the batch is here: nothing in it was produced later
            sends = []
            severities: list[str] = []
            by_part: dict[int, list] = {}
            for ev in batch:
                by_part.setdefault(ev.message.partition, []).append(ev)
            for part, evs in by_part.items():
                values = [e.value for e in evs]
                store = stores.setdefault(part, detector.new_store())
                res = pipeline.step(
                    detector, store, pipeline.parse(values, cfg.max_message_bytes), topic=cfg.topic, partition=part,
                    offsets=np.array([e.message.offset for e in evs], dtype=np.int64),
                    kafka_ts=np.array([round(e.message.timestamp * 1000) for e in evs], dtype=np.int64),
                    keys=[e.key for e in evs], metrics=metrics, max_clock_skew_ms=cfg.max_clock_skew_ms,
                    trusted_ts=pipeline.trusted_clock([_timestamp(e.message) for e in evs], received_ms))
                for d in res.dead_letters:  # the same headers as `seqsentry run`'s (README: the dead-letter contract)
                    m = evs[d.index].message
                    value, headers = fit_dead_letter(values[d.index], evs[d.index].key, dead_letter_headers(
                        d.reason, d.detail, m.topic, m.partition, m.offset))
                    sends.append(await dlq.send(key=evs[d.index].key, value=value, headers=dict(headers)))
                pending = res.pending
                found = await loop.run_in_executor(scoring, detector.score, pending)
                for group in found:
                    for a in group:
                        severities.append(a["severity"])
                        sends.append(await alerts_topic.send(key=a["user_id"].encode(), value=orjson.dumps(a)))
            # at-least-once: this batch is acked (and so committable) only after the broker has every output
            await asyncio.gather(*sends)
            for sev in severities:  # counted once the broker has them, as in `seqsentry run`
                metrics.count_alert(sev)
            progress_line.tick()

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
