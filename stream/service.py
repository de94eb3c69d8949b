"""`seqsentry run`: wires consumer -> windows -> inference worker -> alerts -> commits.

Delivery guarantee: at-least-once, nothing lost. Each consumed batch gets a commit
*ticket* that counts its outstanding work - windows waiting for inference, alerts and
dead letters waiting for the broker's ack. Offsets are committed only for the prefix of
tickets whose work is entirely done, so a crash at any point replays, never skips.
With ``exactly_once`` the producer is transactional instead: every commit interval the
worker drains and the outputs plus the offsets they cover commit as one transaction, so
read_committed readers of the alert topic see each alert once even across kill -9.

Partition state: one window store per assigned partition. On assignment the store is
rebuilt by re-reading the input topic from (time of the last committed event - window
span - allowed lateness) up to the committed offset, without scoring - the input topic
is the changelog. On revocation in-flight work is finished and committed first.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from stream import events, kafka, registry
from stream.batcher import InferenceWorker
from stream.detector import Detector, Pending
from stream.errors import SeqsentryError
from stream.metrics import Metrics
from stream.model import ArtifactError, Scorer, serving_threads
from stream.windows import WindowStore

log = logging.getLogger("seqsentry.service")


class DetectorFailed(SeqsentryError):
    """The detector stopped because continuing could lose or duplicate work; a restart resumes safely."""


@dataclass
class ServiceConfig:
    """Everything `seqsentry run` can be told (flags, SEQSENTRY_* variables or a YAML file)."""

    bootstrap: str
    topic: str = "events"
    alerts_topic: str = "alerts"
    dlq_topic: str = "events-dlq"
    group: str = "seqsentry"
    registry: Path | None = Path("registry")
    model: Path | None = None  # an explicit artifact overrides the registry (and disables hot reload)
    shadow: Path | None = None
    kafka_options: dict = field(default_factory=dict)
    device: str = "auto"
    runtime: str = "auto"  # torch | onnx | auto (ONNX Runtime for classifiers on CPU when installed)
    max_batch_size: int = 256
    max_wait_ms: float = 20.0
    max_queue_windows: int = 20_000
    consume_batch: int = 2_000
    poll_wait_ms: float = 5.0  # consume() returns after this even with fewer than consume_batch messages
    commit_interval_ms: float = 200.0  # completed work is committed at most this often (and on revoke/stop)
    cooldown_s: float = 600.0
    coalesce: bool = False
    max_message_bytes: int = events.DEFAULT_MAX_BYTES
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9108
    reload_interval_s: float = 5.0
    exactly_once: bool = False  # Kafka transactions: alerts, dead letters and offsets commit atomically
    transactional_id: str | None = None  # stable per instance; default seqsentry-<group>-<hostname>
    stall_timeout_s: float = 120.0  # /healthz fails when behind yet consuming nothing this long
    startup_timeout_s: float = 60.0  # keep retrying an unreachable cluster / missing topics this long
    explain_top: int = 5
    max_users: int | None = None  # per partition; default: the model's window config
    audit_log: Path | None = None  # append "partition offset" of every scored event (crash tests)


class Ticket:
    """Outstanding work of one consumed batch; its offsets may be committed when it reaches 0."""

    def __init__(self, offsets: dict[tuple[str, int], int]) -> None:
        self.offsets = offsets
        self._pending = 1  # held by the consumer until it has handed everything on
        self._lock = threading.Lock()
        self.error: str | None = None

    def add(self, n: int = 1) -> None:
        with self._lock:
            self._pending += n

    def done(self, n: int = 1) -> None:
        with self._lock:
            self._pending -= n

    def fail(self, reason: str) -> None:
        self.error = reason
        self.done()

    @property
    def complete(self) -> bool:
        return self._pending == 0


class Service:
    """The live detector. ``run()`` blocks until stopped (SIGTERM/SIGINT or :meth:`stop`)."""

    def __init__(self, cfg: ServiceConfig, metrics: Metrics | None = None) -> None:
        self.cfg = cfg
        self.metrics = metrics or Metrics()
        self._stopping = threading.Event()
        self._stores: dict[int, WindowStore] = {}
        self._tickets: deque[Ticket] = deque()
        self._paused = False
        self._last_ts: dict[int, int] = {}
        self._broker_error_at = 0.0
        self._heartbeat = time.monotonic()
        self._last_commit = 0.0
        self._progress_at = time.monotonic()
        self._consumed_seen = 0.0
        self._fatal: str | None = None
        self._assigned: list[TopicPartition] = []
        self._bad_versions: set[str] = set()
        self.serving_version: str | None = None
        self.http: ThreadingHTTPServer | None = None
        # (trigger's Kafka timestamp ms, event-to-alert seconds) of recent alerts: demo summary, benchmarks
        self.latencies: deque[tuple[int, float]] = deque(maxlen=100_000)
        self._audit = open(cfg.audit_log, "a") if cfg.audit_log else None  # noqa: SIM115

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
        """Check the cluster and topics, load the model(s), start the metrics server."""
        cfg = self.cfg
        kafka.wait_for_topics(cfg.bootstrap, (cfg.topic, cfg.alerts_topic, cfg.dlq_topic), cfg.kafka_options,
                              timeout=cfg.startup_timeout_s)
        scorer = self._load(self._model_path())
        serving_threads(scorer.device)
        shadow = self._load(cfg.shadow) if cfg.shadow else None
        self.serving_version = scorer.artifact.version
        self.metrics.model_info.info({"version": scorer.artifact.version, "kind": scorer.artifact.meta.kind})
        self.detector = Detector(scorer, cooldown_ms=int(cfg.cooldown_s * 1000), explain_top=cfg.explain_top,
                                 coalesce=cfg.coalesce, shadow=shadow, metrics=self.metrics, max_users=cfg.max_users)
        # alerts are few and each is waited for: no linger (a user's -X linger.ms still wins)
        txn = {"transactional.id": self.transactional_id} if cfg.exactly_once else {}
        self.producer = kafka.producer(cfg.bootstrap, cfg.kafka_options, error_cb=self._on_error,
                                       **{"linger.ms": 0, **txn})
        if cfg.exactly_once:  # fences a previous incarnation with the same id and aborts its open transaction
            self.producer.init_transactions(cfg.startup_timeout_s)
        self.worker = InferenceWorker(self.detector, self._on_scored, max_batch_size=cfg.max_batch_size,
                                      max_wait_ms=cfg.max_wait_ms, max_queue_windows=cfg.max_queue_windows,
                                      metrics=self.metrics)
        self.consumer: Consumer = kafka.consumer(cfg.bootstrap, cfg.group, cfg.kafka_options, error_cb=self._on_error)
        self._start_http()
        log.info("serving model %s on %s (%s), consuming %s as group %s", self.serving_version,
                 self.detector.scorer.device, self.detector.scorer.runtime, cfg.topic, cfg.group)

    @property
    def transactional_id(self) -> str:
        # Stable across restarts of one instance, so a restarted detector fences its crashed
        # predecessor at once instead of read_committed readers waiting out its transaction.
        return self.cfg.transactional_id or f"seqsentry-{self.cfg.group}-{socket.gethostname()}"

    def _fatal_reason(self, error: BaseException | str | None) -> str:
        """The root cause behind a failure: librdkafka reports a fatal error (e.g. fencing)
        through the error callback, while produce() only raises a generic _FATAL and the
        messages it purged afterwards fail delivery with _PURGE_QUEUE."""
        deadline = time.monotonic() + 2.0
        while self._fatal is None and isinstance(error, (KafkaException, str)) and time.monotonic() < deadline:
            self._poll_producer(0.1)
        return self._fatal or str(error or "inference did not drain in time")

    def _poll_producer(self, timeout: float = 0.0) -> None:
        try:
            self.producer.poll(timeout)
        except KafkaException as exc:  # a fatal error (fencing) is raised from poll(), once
            err = exc.args[0] if exc.args else None
            self._fatal = err.str() if isinstance(err, KafkaError) else str(exc)

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():  # e.g. PRODUCER_FENCED: this client may never write again
            self._fatal = str(err)
        if err.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT, KafkaError._RESOLVE,
                          KafkaError._TIMED_OUT, KafkaError._MSG_TIMED_OUT, KafkaError.REQUEST_TIMED_OUT):
            self._broker_error_at = time.monotonic()
        log.warning("kafka: %s", err)

    # ---- HTTP: /metrics /healthz /readyz ---------------------------------------------------------
    @property
    def ready(self) -> bool:
        return (bool(self._assigned) and time.monotonic() - self._broker_error_at > 5.0
                and not self._stopping.is_set())

    @property
    def healthy(self) -> bool:
        """Loop alive, worker alive, and not stalled: behind on the topic yet consuming nothing
        for ``stall_timeout_s`` (a wedged fetcher or inference) - a restart resumes safely."""
        return (time.monotonic() - self._heartbeat < 30.0 and self.worker.error is None
                and time.monotonic() - self._progress_at < self.cfg.stall_timeout_s)

    def _start_http(self) -> None:
        svc = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                path = self.path.split("?")[0]
                if path == "/metrics":
                    body, ctype, code = generate_latest(svc.metrics.registry), CONTENT_TYPE_LATEST, 200
                elif path in ("/healthz", "/readyz"):
                    ok = svc.healthy if path == "/healthz" else svc.ready
                    body, ctype, code = (b"ok\n" if ok else b"not ok\n"), "text/plain", 200 if ok else 503
                else:
                    body, ctype, code = b"not found\n", "text/plain", 404
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        try:
            self.http = ThreadingHTTPServer((self.cfg.metrics_host, self.cfg.metrics_port), Handler)
        except OSError as exc:
            raise SeqsentryError(f"cannot serve metrics on {self.cfg.metrics_host}:{self.cfg.metrics_port} "
                                         f"({exc.strerror}); choose another with --metrics-port") from None
        threading.Thread(target=self.http.serve_forever, name="seqsentry-http", daemon=True).start()

    @property
    def metrics_url(self) -> str:
        assert self.http is not None
        host, port = self.http.server_address[:2]
        return f"http://{host}:{port}"

    # ---- rebalance -----------------------------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.metrics.rebalances.labels("assign").inc()
        committed = consumer.committed(partitions, timeout=10)
        for tp in committed:
            self._stores[tp.partition] = store = self.detector.new_store()
            if tp.offset is not None and tp.offset > 0:
                self._rebuild(tp, store)
        self._assigned += partitions
        log.info("assigned partitions %s", [tp.partition for tp in partitions])

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.metrics.rebalances.labels("revoke").inc()
        self._finish_in_flight()
        for tp in partitions:
            self._stores.pop(tp.partition, None)
        self._assigned = [p for p in self._assigned if p.partition not in {tp.partition for tp in partitions}]
        log.info("revoked partitions %s", [tp.partition for tp in partitions])

    def _rebuild(self, tp: TopicPartition, store: WindowStore) -> None:
        """Re-read [committed time - span - lateness, committed) into ``store``, without scoring."""
        cfg = self.cfg
        win = store.config
        reader = kafka.consumer(cfg.bootstrap, f"{cfg.group}-rebuild", cfg.kafka_options)
        try:
            reader.assign([TopicPartition(tp.topic, tp.partition, tp.offset - 1)])
            last = [m for m in reader.consume(1, timeout=10) if not m.error()]
            start = OFFSET_BEGINNING
            if last and last[0].timestamp()[1] > 0:
                since = last[0].timestamp()[1] - win.span_ms - win.allowed_lateness_ms
                found = reader.offsets_for_times([TopicPartition(tp.topic, tp.partition, since)], timeout=10)
                start = found[0].offset if found and found[0].offset >= 0 else OFFSET_BEGINNING
            reader.assign([TopicPartition(tp.topic, tp.partition, start)])
            n = 0
            done = False
            idle_since = time.monotonic()
            while not done and time.monotonic() - idle_since < 10:
                msgs = [m for m in reader.consume(5000, timeout=0.5) if not m.error()]
                if msgs:
                    idle_since = time.monotonic()
                keep = [m for m in msgs if m.offset() < tp.offset]
                done = len(keep) < len(msgs) or (bool(keep) and keep[-1].offset() >= tp.offset - 1)
                res = events.parse_batch([m.value() for m in keep], cfg.max_message_bytes)
                store.add(res.events)
                n += len(keep)
            self.metrics.rebuilt_events.inc(n)
            log.info("partition %d: rebuilt %d users' windows from %d events (offsets %s..%d)", tp.partition,
                     store.users, n, start, tp.offset - 1)
        finally:
            reader.close()

    # ---- the loop ------------------------------------------------------------------------------
    def _dead_letter(self, ticket: Ticket, msg: Message, reason: str, detail: str) -> None:
        headers = [("seqsentry.reason", reason.encode()), ("seqsentry.detail", detail[:500].encode()),
                   ("seqsentry.topic", msg.topic().encode()), ("seqsentry.partition", str(msg.partition()).encode()),
                   ("seqsentry.offset", str(msg.offset()).encode())]
        ticket.add()
        self._produce(self.cfg.dlq_topic, msg.value(), msg.key(), headers, ticket, None)

    def _produce(self, topic: str, value: bytes | None, key: bytes | None, headers: list | None, ticket: Ticket,
                 kafka_ts_ms: int | None) -> None:
        m = self.metrics

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                ticket.fail(f"delivery to {topic} failed: {err}")
                return
            if kafka_ts_ms is not None:
                latency = max(0.0, time.time() - kafka_ts_ms / 1000.0)
                m.event_to_alert.observe(latency)
                self.latencies.append((kafka_ts_ms, latency))
            ticket.done()

        while True:
            try:
                self.producer.produce(topic, value, key, headers=headers, on_delivery=delivered)
                return
            except BufferError:
                self._poll_producer(0.05)

    def _on_scored(self, p: Pending, found: list[dict]) -> None:
        """Worker thread: publish a group's alerts, then release its hold on the ticket."""
        ticket = p.ticket
        assert isinstance(ticket, Ticket)
        if self._audit is not None and p.offsets is not None:
            self._audit.write("".join(f"{p.partition} {o}\n" for o in p.offsets.tolist()))
            self._audit.flush()  # in the OS before the commit can happen: survives kill -9
        for a in found:
            ticket.add()
            self.metrics.alerts.labels(a["severity"]).inc()
            offset = a["trigger"]["offset"]
            idx = int(np.flatnonzero(p.offsets == offset)[0]) if p.offsets is not None else None
            kts = int(p.kafka_ts[idx]) if p.kafka_ts is not None and idx is not None else None
            self._produce(self.cfg.alerts_topic, orjson.dumps(a), a["user_id"].encode(), None, ticket, kts)
        ticket.done()
        self._poll_producer()

    def _handle(self, msgs: list[Message]) -> None:
        m = self.metrics
        by_part: dict[int, list[Message]] = {}
        offsets: dict[tuple[str, int], int] = {}
        for msg in msgs:
            if msg.error():
                if msg.error().code() != KafkaError._PARTITION_EOF:
                    log.warning("consume error: %s", msg.error())
                continue
            by_part.setdefault(msg.partition(), []).append(msg)
            offsets[(msg.topic(), msg.partition())] = msg.offset()
        ticket = Ticket(offsets)
        self._tickets.append(ticket)
        for part, pm in by_part.items():
            m.events_consumed.inc(len(pm))
            self._last_ts[part] = pm[-1].timestamp()[1]
            res = events.parse_batch([x.value() for x in pm], self.cfg.max_message_bytes)
            m.events_valid.inc(len(res.events))
            for r in res.rejects:
                m.events_rejected.labels(r.reason).inc()
                self._dead_letter(ticket, pm[r.index], r.reason, r.detail)
            batch = res.events
            keys = [pm[i].key() for i in batch.index.tolist()]
            mismatched = sum(k != u.encode() for k, u in zip(keys, batch.user_id, strict=True))
            if mismatched:
                m.key_mismatch.inc(mismatched)
            store = self._stores.get(part)
            if store is None:  # assignment callback not seen (should not happen); be safe, not silent
                store = self._stores[part] = self.detector.new_store()
            pending, too_late = self.detector.ingest(
                store, batch, topic=pm[0].topic(), partition=part,
                offsets=np.array([x.offset() for x in pm], dtype=np.int64),
                kafka_ts=np.array([x.timestamp()[1] for x in pm], dtype=np.int64))
            for row in too_late.tolist():
                m.events_late.inc()
                self._dead_letter(ticket, pm[int(batch.index[row])], "too-late",
                                  f"more than {store.config.allowed_lateness_ms} ms behind the user's newest event")
            for p in pending:
                p.ticket = ticket
                ticket.add()
                self.worker.submit(p)
        ticket.done()

    def _commit_ready(self, force: bool = True) -> None:
        # A synchronous commit costs a broker round trip; paying it every few-ms loop would
        # take the consumer thread's time from fetching. Deferring it only widens replay.
        now = time.monotonic()
        if not force and now - self._last_commit < self.cfg.commit_interval_ms / 1000:
            return
        self._last_commit = now
        if self.cfg.exactly_once:
            self._commit_transaction()
            return
        done: dict[tuple[str, int], int] = {}
        while self._tickets and self._tickets[0].complete:
            t = self._tickets.popleft()
            if t.error:
                raise DetectorFailed(f"cannot commit past failed work: {self._fatal_reason(t.error)}")
            done.update(t.offsets)
        if done:
            self.consumer.commit(offsets=[TopicPartition(t, p, o + 1) for (t, p), o in done.items()],
                                 asynchronous=False)
            self.metrics.commits.inc()

    def _commit_transaction(self, timeout: float = 60.0) -> None:
        """Exactly-once: commit every output so far together with the offsets they cover.

        A transaction may hold only finished work, so consumption waits while the worker
        drains; that pause, once per commit interval, is the price of exactly-once. Any
        failure stops the detector: its open transaction is aborted (by the broker, or by
        the restarted instance fencing it) and the restart resumes from the last commit.
        """
        if not self._tickets:
            return
        if not self.worker.drain(timeout):
            raise DetectorFailed(f"transaction not committed: {self._fatal_reason(self.worker.error)}")
        if self.producer.flush(timeout):
            raise DetectorFailed("transaction not committed: alerts not acknowledged within the commit timeout")
        done: dict[tuple[str, int], int] = {}
        while self._tickets:
            t = self._tickets.popleft()
            if t.error or not t.complete:
                raise DetectorFailed(f"transaction not committed: {self._fatal_reason(t.error or 'work incomplete')}")
            done.update(t.offsets)
        try:
            self.producer.send_offsets_to_transaction([TopicPartition(t, p, o + 1) for (t, p), o in done.items()],
                                                      self.consumer.consumer_group_metadata(), timeout)
            self.producer.commit_transaction(timeout)
            self.producer.begin_transaction()
        except KafkaException as exc:
            raise DetectorFailed(f"transaction not committed ({exc.args[0].str() if exc.args else exc}); "
                                 "the restart resumes from the last committed transaction") from None
        self.metrics.commits.inc()

    def _finish_in_flight(self, timeout: float = 60.0) -> None:
        self.worker.drain(timeout)
        self.producer.flush(timeout)
        self._commit_ready()

    def _backpressure(self) -> None:
        # Holding back consume() instead of Consumer.pause()/resume(): in a soak here librdkafka
        # once never fetched the resumed partitions again (lag grew, nothing arrived; cf.
        # librdkafka #5111). Meanwhile its prefetch queue is bounded by queued.max.messages.kbytes,
        # heartbeats continue on its own thread, and the queue drains in seconds, far inside
        # max.poll.interval.ms.
        if not self._paused and self.worker.full:
            self._paused = True
        elif self._paused and self.worker.drained_enough:
            self._paused = False
        self.metrics.paused.set(len(self._assigned) if self._paused else 0)

    def _observe(self) -> None:
        m = self.metrics
        m.tracked_users.set(sum(s.users for s in self._stores.values()))
        m.ready.set(1 if self.ready else 0)
        now_ms = time.time() * 1000
        behind = 0
        for tp in self.consumer.assignment():
            try:
                lo, hi = self.consumer.get_watermark_offsets(tp, cached=True)
                pos = self.consumer.position([tp])[0].offset
            except Exception:
                continue
            if hi >= 0 and pos >= 0:
                m.lag.labels(tp.topic, str(tp.partition)).set(max(0, hi - pos))
                behind += max(0, hi - pos)
            if tp.partition in self._last_ts:
                m.lag_seconds.labels(tp.topic, str(tp.partition)).set(max(0.0, (now_ms - self._last_ts[tp.partition]) / 1000))
        consumed = m.events_consumed._value.get()
        if consumed != self._consumed_seen or behind == 0:
            self._consumed_seen, self._progress_at = consumed, time.monotonic()
        if self.detector.scorer.device.startswith("cuda"):
            import torch

            m.gpu_memory.set(torch.cuda.memory_allocated())
            with contextlib.suppress(Exception):  # NVML missing: leave the series at 0, never fail the loop
                m.gpu_utilization.set(torch.cuda.utilization() / 100.0)
        evicted = {"idle": sum(s.evicted_idle for s in self._stores.values()),
                   "lru": sum(s.evicted_lru for s in self._stores.values())}
        for cause, n in evicted.items():
            c = m.evicted.labels(cause)
            delta = n - c._value.get()
            if delta > 0:
                c.inc(delta)

    def _watch_registry(self) -> None:
        cfg = self.cfg
        while not self._stopping.wait(cfg.reload_interval_s):
            version = registry.current_version(cfg.registry) if cfg.registry else None
            if not version or version == self.serving_version or version in self._bad_versions:
                continue
            try:
                scorer = Scorer.load(registry.current(cfg.registry), cfg.device, cfg.runtime)
                if scorer.artifact.window_config != self.detector.window_config:
                    raise ArtifactError(f"window config {scorer.artifact.window_config} differs from the serving "
                                        f"model's {self.detector.window_config}; restart to change windows")
            except Exception as exc:
                self._bad_versions.add(version)
                self.metrics.model_loads.labels("error").inc()
                log.error("refusing model %s, still serving %s: %s", version, self.serving_version, exc)
                continue
            self.metrics.model_loads.labels("ok").inc()
            self.detector.request_swap(scorer)
            self.serving_version = version
            log.info("hot reload: model %s loaded, swapping between batches", version)

    def stop(self) -> None:
        self._stopping.set()

    def run(self, install_signals: bool = True) -> None:
        """Consume until stopped; then drain, flush, commit and close."""
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: self.stop())
        if self.cfg.exactly_once:
            self.producer.begin_transaction()
        self.worker.start()
        if self.cfg.model is None and self.cfg.registry is not None:
            threading.Thread(target=self._watch_registry, name="seqsentry-reload", daemon=True).start()
        self.consumer.subscribe([self.cfg.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        last_observe = 0.0
        try:
            while not self._stopping.is_set():
                self._heartbeat = time.monotonic()
                if self._fatal is not None:
                    raise DetectorFailed(f"fatal Kafka error, stopping: {self._fatal}")
                if self.worker.error is not None:
                    raise DetectorFailed(f"inference worker failed: {self._fatal_reason(self.worker.error)}")
                # consume() waits for a full batch or the timeout: the timeout is latency under light load
                if self._paused:
                    msgs = []
                    time.sleep(self.cfg.poll_wait_ms / 1000)
                else:
                    msgs = self.consumer.consume(self.cfg.consume_batch, timeout=self.cfg.poll_wait_ms / 1000)
                if msgs:
                    self._handle(msgs)
                self._poll_producer()
                self._backpressure()
                self._commit_ready(force=False)
                if time.monotonic() - last_observe > 1.0:
                    self._observe()
                    last_observe = time.monotonic()
            log.info("stopping: draining in-flight work")
            self._finish_in_flight()
        finally:  # each step runs even if an earlier one fails: a consumer left open would hold its partitions
            with contextlib.suppress(Exception):
                self.worker.stop()
                self.worker.join(30)
            self.consumer.close()
            self.producer.flush(10)
            if self.http is not None:
                self.http.shutdown()
                self.http.server_close()
            self.metrics.ready.set(0)
            if self._audit is not None:
                self._audit.close()
            log.info("stopped")
