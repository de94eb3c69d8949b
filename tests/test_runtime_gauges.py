"""Gauges computed at scrape time, without a broker: a real Partitions and window stores."""

from __future__ import annotations

import time

from confluent_kafka import TopicPartition

from stream.events import Event, EventBatch
from stream.metrics import Metrics
from stream.runtime.config import ServiceConfig
from stream.runtime.gauges import RuntimeGauges
from stream.runtime.rebuild import Partitions
from stream.windows import WindowConfig, WindowStore


def scraped(**kw) -> tuple[Metrics, Partitions, dict]:
    m = Metrics()
    parts = Partitions(ServiceConfig(bootstrap="k:9092"), detector=None, metrics=m, finish=lambda: None)  # type: ignore[arg-type]
    state = {"ready": True, "lag": {}, **kw}
    m.registry.register(RuntimeGauges("events", parts, ready=lambda: state["ready"], lag=lambda: state["lag"],
                                      device=lambda: "cpu"))
    return m, parts, state


def test_tracked_users_are_counted_over_every_store_when_scraped():
    m, parts, _ = scraped()
    for p, users in ((0, ["a", "b"]), (1, ["c"])):
        parts.stores[p] = WindowStore(WindowConfig())
        parts.stores[p].add(EventBatch.from_events([Event(u, 1_700_000_000_000, "view") for u in users]))
    assert m.registry.get_sample_value("seqsentry_tracked_users") == 3
    del parts.stores[1]  # a revoked partition's users are gone at the next scrape
    assert m.registry.get_sample_value("seqsentry_tracked_users") == 2


def test_readiness_is_read_at_the_scrape():
    m, _, state = scraped()
    assert m.registry.get_sample_value("seqsentry_ready") == 1
    state["ready"] = False
    assert m.registry.get_sample_value("seqsentry_ready") == 0


def test_lag_in_messages_is_the_loops_latest_measurement_and_lag_in_seconds_grows_while_silent():
    m, parts, state = scraped()
    parts.assigned = [TopicPartition("events", 0), TopicPartition("events", 3)]
    parts.last_ts = {0: int(time.time() * 1000) - 5_000, 2: 0}  # partition 2 was revoked
    state["lag"] = {0: 12, 3: 0}
    get = m.registry.get_sample_value
    assert get("seqsentry_consumer_lag_messages", {"topic": "events", "partition": "0"}) == 12
    assert get("seqsentry_consumer_lag_messages", {"topic": "events", "partition": "3"}) == 0
    first = get("seqsentry_consumer_lag_seconds", {"topic": "events", "partition": "0"})
    assert 4.5 < first < 60
    time.sleep(0.2)
    assert get("seqsentry_consumer_lag_seconds", {"topic": "events", "partition": "0"}) >= first + 0.15
    assert get("seqsentry_consumer_lag_seconds", {"topic": "events", "partition": "2"}) is None


def test_no_gpu_series_on_a_cpu():
    m, _, _ = scraped()
    assert m.registry.get_sample_value("seqsentry_gpu_memory_allocated_bytes") is None


def test_every_series_a_scrape_exports_is_described():
    m, parts, state = scraped()
    parts.assigned = [TopicPartition("events", 0)]
    parts.last_ts = {0: 1}
    state["lag"] = {0: 1}
    scraped_names = {fam.name for fam in m.registry.collect()}
    described = {fam.name for fam in RuntimeGauges.describe()}
    assert described - {"seqsentry_gpu_memory_allocated_bytes", "seqsentry_gpu_utilization_ratio"} <= scraped_names
    assert {"seqsentry_tracked_users", "seqsentry_ready", "seqsentry_consumer_lag_messages",
            "seqsentry_consumer_lag_seconds"} <= described
