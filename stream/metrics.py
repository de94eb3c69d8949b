"""Every Prometheus series seqsentry exports, in one place.

Conventions: ``seqsentry_`` prefix, base units (seconds, bytes), ``_total`` counters,
and never a user id (or any other unbounded value) as a label.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from stream.events import REJECT_REASONS
from stream.severities import SEVERITIES
from stream.tally import Tally

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)


@dataclass
class Metrics:
    """The detector's series, registered on their own registry (several can coexist in tests).

    The counts that code decides on are also kept in :attr:`tally` (stream.tally): count them
    with the ``count_*`` methods, which add to both; read them from ``tally.counts()``.
    """

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    tally: Tally = field(default_factory=Tally)

    def __post_init__(self) -> None:
        r = self.registry
        self.events_consumed = Counter("seqsentry_events_consumed", "Messages read from the events topic.", registry=r)
        self.events_valid = Counter("seqsentry_events_valid", "Messages that passed the event contract.", registry=r)
        self.events_rejected = Counter("seqsentry_events_rejected", "Messages dead-lettered, by reason.",
                                       ["reason"], registry=r)
        self.events_late = Counter("seqsentry_events_late", "Valid events outside the allowed lateness (dead-lettered).",
                                   registry=r)
        self.key_mismatch = Counter("seqsentry_key_mismatch", "Messages whose key differs from the payload user_id.",
                                    registry=r)
        self.sessions_ended = Counter("seqsentry_sessions_ended", "Windows of ended sessions handed to scoring "
                                      "(scored on top of one window per valid event).", registry=r)
        self.windows_scored = Counter("seqsentry_windows_scored", "Windows scored by the serving model.", registry=r)
        self.alerts = Counter("seqsentry_alerts", "Alerts published, by severity.", ["severity"], registry=r)
        self.alerts_suppressed = Counter("seqsentry_alerts_suppressed", "Alerts withheld by the per-user cooldown.",
                                         registry=r)
        self.batch_size = Histogram("seqsentry_batch_size_windows", "Windows per inference batch.",
                                    buckets=BATCH_BUCKETS, registry=r)
        self.batch_wait = Histogram("seqsentry_batch_wait_seconds", "Time the oldest window of a batch waited.",
                                    buckets=LATENCY_BUCKETS, registry=r)
        self.inference = Histogram("seqsentry_inference_seconds", "Encode + model time per inference batch.",
                                   buckets=LATENCY_BUCKETS, registry=r)
        self.event_to_alert = Histogram("seqsentry_event_to_alert_seconds",
                                        "From the trigger message's Kafka timestamp to the alert's broker ack.",
                                        buckets=LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("seqsentry_queue_depth_windows", "Windows waiting for inference.", registry=r)
        self.paused = Gauge("seqsentry_paused_partitions", "Partitions paused by backpressure.", registry=r)
        # consumer lag, tracked users, readiness and the GPU are computed at scrape time
        # (stream.runtime.gauges, registered by `seqsentry run`)
        self.evicted = Counter("seqsentry_users_evicted", "Users evicted from the window store, by cause.", ["cause"],
                               registry=r)
        self.rebalances = Counter("seqsentry_rebalances", "Partition assignments and revocations.", ["kind"], registry=r)
        self.rebuilt_events = Counter("seqsentry_rebuilt_events", "Events re-read to rebuild windows on assignment.",
                                      registry=r)
        self.data_loss = Counter("seqsentry_broker_data_loss", "Times the broker was found to have lost data already "
                                 "consumed (restarted empty, topic recreated, log truncated).", registry=r)
        self.commits = Counter("seqsentry_offset_commits", "Offset commits made after work was safely done.", registry=r)
        self.model_info = Info("seqsentry_model", "The model version serving.", registry=r)
        self.model_loads = Counter("seqsentry_model_loads", "Model load attempts, by result.", ["result"], registry=r)
        self.shadow_windows = Counter("seqsentry_shadow_windows", "Windows scored by the shadow model.", registry=r)
        self.shadow_agree = Counter("seqsentry_shadow_agreements", "Windows where shadow and serving model agree.",
                                    registry=r)
        for reason in REJECT_REASONS:
            self.events_rejected.labels(reason)  # export zeros so rates work from the start
        for cause in ("idle", "lru"):
            self.evicted.labels(cause)
        for kind in ("assign", "revoke"):
            self.rebalances.labels(kind)
        for result in ("ok", "error"):
            self.model_loads.labels(result)
        for sev in SEVERITIES:
            self.alerts.labels(sev)

    def count_consumed(self, n: int) -> None:
        """``n`` messages read from the input topic."""
        self.events_consumed.inc(n)
        self.tally.add(consumed=n)

    def count_rejected(self, reasons: list[str]) -> None:
        """Messages refused by the event contract, one reason each."""
        for reason in reasons:
            self.events_rejected.labels(reason).inc()
        self.tally.add(rejected=len(reasons))

    def count_late(self, n: int) -> None:
        """``n`` valid events outside the allowed lateness."""
        self.events_late.inc(n)
        self.tally.add(late=n)

    def count_scored(self, n: int) -> None:
        """``n`` windows scored by the serving model."""
        self.windows_scored.inc(n)
        self.tally.add(scored=n)

    def count_alert(self, severity: str) -> None:
        """One alert the broker acknowledged."""
        self.alerts.labels(severity).inc()
        self.tally.add(alerts=1)
