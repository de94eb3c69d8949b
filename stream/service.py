"""`seqsentry run`: wires consumer -> windows -> inference worker -> alerts -> commits.

The jobs live in ``stream.runtime`` (one module each); this module only builds them,
starts and stops their threads, and offers the public view of a running detector
(readiness, health, progress). Thread ownership:

* consumer thread (the caller of :meth:`Service.run`): the consumer loop, rebalance
  callbacks and window rebuilds, the window stores, commit tickets and commits;
* ``seqsentry-inference``: scoring and alert publishing (:class:`~stream.batcher.InferenceWorker`);
* ``seqsentry-reload``: watching the registry and loading models; the swap is atomic in
  :meth:`Detector.request_swap`;
* ``seqsentry-http``: /metrics, /healthz, /readyz (read-only);
* librdkafka's threads: error callbacks (:class:`~stream.runtime.broker_health.BrokerErrors`).

Delivery guarantee: at-least-once, nothing lost (see stream.runtime.commits); with
``exactly_once``, Kafka transactions.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Consumer

from stream import kafka, registry
from stream.artifact import check_model_dir
from stream.batcher import InferenceWorker
from stream.dead_letter import DEFAULT_MESSAGE_MAX_BYTES
from stream.detector import Detector
from stream.metrics import Metrics
from stream.model import Scorer, serving_threads
from stream.runtime import http
from stream.runtime.broker_health import BrokerErrors
from stream.runtime.commits import CommitTracker, DetectorFailed
from stream.runtime.config import ServiceConfig
from stream.runtime.consumer import ConsumerLoop
from stream.runtime.gauges import RuntimeGauges
from stream.runtime.outputs import Outputs
from stream.runtime.rebuild import Partitions
from stream.runtime.reload import RegistryWatcher
from stream.shadow import ShadowRecorder

__all__ = ["DetectorFailed", "Progress", "Service", "ServiceConfig"]
log = logging.getLogger(__name__)
BROKER_QUIET_S = 5.0  # readiness returns this long after the last broker-down error
HEARTBEAT_S = 30.0  # liveness: the consumer loop must turn at least this often


@dataclass(frozen=True, slots=True)
class Progress:
    """How far a running detector has got (a snapshot; safe to read from any thread)."""

    consumed: int  # messages read from the events topic
    scored: int  # windows scored by the serving model
    uncommitted_batches: int  # consumed batches whose offsets are not committed yet
    queued_windows: int  # windows waiting for inference

    @property
    def idle(self) -> bool:
        """Nothing in flight: every consumed batch committed and no window waiting."""
        return self.uncommitted_batches == 0 and self.queued_windows == 0


def group_consumer(cfg: ServiceConfig, **overrides: object) -> Consumer:
    """The consumer of ``cfg.group``: seqsentry's defaults, then ``--offset-reset``, then the -X
    settings (an explicit ``-X auto.offset.reset`` wins: pass-through settings always do)."""
    return kafka.consumer(cfg.bootstrap, cfg.group, cfg.kafka_options,
                          **{"auto.offset.reset": cfg.offset_reset, **overrides})


class Service:
    """The live detector. ``run()`` blocks until stopped (SIGTERM/SIGINT or :meth:`stop`)."""

    def __init__(self, cfg: ServiceConfig, metrics: Metrics | None = None) -> None:
        self.cfg = cfg
        self.metrics = metrics or Metrics()
        self.errors = BrokerErrors()
        self._stopping = threading.Event()
        self.serving_version: str | None = None  # written only where the model is (re)placed
        self.http = None
        self.loop: ConsumerLoop | None = None

    # ---- set-up -------------------------------------------------------------------------------
    def _load(self, path: Path) -> Scorer:
        scorer = Scorer.load(path, self.cfg.device, self.cfg.runtime)
        self.metrics.model_loads.labels("ok").inc()
        return scorer

    def _model_path(self) -> Path:
        if self.cfg.model is not None:
            return self.cfg.model
        if self.cfg.registry is None:
            raise registry.RegistryError("give --model DIR or --registry DIR")
        return registry.current(self.cfg.registry)

    def setup(self) -> None:
        """Check the cluster and topics, load the model(s), build the runtime, start the metrics server."""
        cfg, m = self.cfg, self.metrics
        for path in (cfg.model, cfg.shadow):  # a mistyped path fails now, not after waiting for the cluster
            if path is not None:
                check_model_dir(path)
        kafka.wait_for_topics(cfg.bootstrap, (cfg.topic, cfg.alerts_topic, cfg.dlq_topic), cfg.kafka_options,
                              timeout=cfg.startup_timeout_s)
        scorer = self._load(self._model_path())
        serving_threads(scorer.device)
        shadow = self._load(cfg.shadow) if cfg.shadow else None
        self.serving_version = scorer.artifact.version
        m.model_info.info({"version": scorer.artifact.version, "kind": scorer.artifact.meta.kind})
        # with a shadow model, the users each model crosses its threshold for are recorded (stream.shadow)
        self.detector = (ShadowRecorder if shadow is not None else Detector)(
            scorer, cooldown_ms=int(cfg.cooldown_s * 1000), explain_top=cfg.explain_top, coalesce=cfg.coalesce,
            shadow=shadow, metrics=m, max_users=cfg.max_users)
        # alerts are few and each is waited for: no linger (a user's -X linger.ms still wins)
        txn = {"transactional.id": self.transactional_id} if cfg.exactly_once else {}
        producer = kafka.producer(cfg.bootstrap, cfg.kafka_options, error_cb=self.errors.on_error,
                                  **{"linger.ms": 0, **txn})
        if cfg.exactly_once:  # fences a previous incarnation with the same id and aborts its open transaction
            producer.init_transactions(cfg.startup_timeout_s)
        max_bytes = int(cfg.kafka_options.get("message.max.bytes", DEFAULT_MESSAGE_MAX_BYTES))
        self.outputs = Outputs(producer, alerts_topic=cfg.alerts_topic, dlq_topic=cfg.dlq_topic, metrics=m,
                               errors=self.errors, audit_log=cfg.audit_log, max_message_bytes=max_bytes)
        self.worker = InferenceWorker(self.detector, self.outputs.publish, max_batch_size=cfg.max_batch_size,
                                      max_wait_ms=cfg.max_wait_ms, max_queue_windows=cfg.max_queue_windows, metrics=m)
        self.commits = CommitTracker(m, commit_interval_ms=cfg.commit_interval_ms,
                                     fatal_reason=self.outputs.fatal_reason, fatal=lambda: self.errors.fatal)
        consumer = group_consumer(cfg, error_cb=self.errors.on_error)
        self.partitions = Partitions(cfg, self.detector, m, finish=lambda: self.loop.finish_in_flight())
        self.loop = ConsumerLoop(cfg, consumer, self.detector, self.worker, self.outputs, self.commits,
                                 self.partitions, m)
        m.registry.register(RuntimeGauges(cfg.topic, self.partitions, ready=lambda: self.ready,
                                          lag=lambda: self.loop.lag_messages, device=lambda: self.detector.scorer.device))
        self.http = http.serve(cfg.metrics_host, cfg.metrics_port, m.registry, healthy=lambda: self.healthy,
                               ready=lambda: self.ready)
        log.info("serving model %s on %s (%s), consuming %s as group %s", self.serving_version,
                 self.detector.scorer.device, self.detector.scorer.runtime, cfg.topic, cfg.group)

    @property
    def transactional_id(self) -> str:
        # Stable across restarts of one instance, so a restarted detector fences its crashed
        # predecessor at once instead of read_committed readers waiting out its transaction.
        return self.cfg.transactional_id or f"seqsentry-{self.cfg.group}-{socket.gethostname()}"

    @property
    def consumer(self) -> Consumer:
        """The group consumer (owned by the consumer thread; replaceable before or during a run in tests)."""
        assert self.loop is not None
        return self.loop.consumer

    @consumer.setter
    def consumer(self, value: Consumer) -> None:
        assert self.loop is not None
        self.loop.consumer = value

    @property
    def latencies(self) -> deque[tuple[int, float]]:
        """(trigger's Kafka timestamp ms, event-to-alert seconds) of recent alerts."""
        return self.outputs.latencies

    # ---- the public view: readiness, health, progress --------------------------------------------
    @property
    def ready(self) -> bool:
        """Partitions assigned, the broker reachable and taking outputs lately (no broker-down error,
        failed delivery, vanished topic or lost data for ``BROKER_QUIET_S``), no output waiting for its
        ack longer than ``ack_timeout_s``, no output refused for good, not stopping."""
        now = time.monotonic()
        return (self.loop is not None and bool(self.partitions.assigned) and self.errors.fatal is None
                and now - self.errors.last_problem_at > BROKER_QUIET_S
                and self.outputs.unacked.oldest_age(now) <= self.cfg.ack_timeout_s and not self._stopping.is_set())

    @property
    def healthy(self) -> bool:
        """Loop alive, worker alive, and not stalled for ``stall_timeout_s``: neither behind on the
        topic yet consuming nothing (a wedged fetcher or inference) nor holding consumed batches
        none of which completes (outputs the broker never acknowledges) - a restart resumes safely."""
        assert self.loop is not None
        now = time.monotonic()
        return (now - self.loop.heartbeat < HEARTBEAT_S and self.worker.error is None
                and now - self.loop.progress_at < self.cfg.stall_timeout_s
                and now - self.commits.progress_at < self.cfg.stall_timeout_s)

    def progress(self) -> Progress:
        """Consumed, scored and still-in-flight work, read without touching the loop's state."""
        counts = self.metrics.tally.counts()
        return Progress(consumed=counts.consumed, scored=counts.scored,
                        uncommitted_batches=self.commits.outstanding, queued_windows=self.worker.queued_windows)

    @property
    def idle(self) -> bool:
        """Every consumed batch committed and no window waiting for inference."""
        return self.progress().idle

    @property
    def metrics_url(self) -> str:
        assert self.http is not None
        return http.url(self.http)

    # ---- running ----------------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the loop to stop (any thread; a signal handler too)."""
        self._stopping.set()

    def _set_serving_version(self, version: str) -> None:
        self.serving_version = version

    def run(self, install_signals: bool = True) -> None:
        """Consume until stopped; then drain, flush, commit and close."""
        assert self.loop is not None, "call setup() first"
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: self.stop())
        if self.cfg.exactly_once:
            self.outputs.producer.begin_transaction()
        self.worker.start()
        if self.cfg.model is None and self.cfg.registry is not None:
            RegistryWatcher(self.cfg, self.detector, self.metrics, serving_version=lambda: self.serving_version,
                            on_swapped=self._set_serving_version).start(self._stopping)
        try:
            self.loop.run(self._stopping)
        finally:  # each step runs even if an earlier one fails: a consumer left open would hold its partitions
            with contextlib.suppress(Exception):
                self.worker.stop()
                self.worker.join(30)
            self.loop.consumer.close()
            self.outputs.flush(10)
            http.shutdown(self.http)
            self.outputs.close()
            log.info("stopped")
