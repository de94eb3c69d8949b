"""Gauges computed when Prometheus scrapes, not polled from the consumer loop.

A scrape (the HTTP thread) reads what the loop's owners publish as plain values: the
partitions' window stores and last message timestamps (:class:`~stream.runtime.rebuild.Partitions`),
readiness, and the consumer lag the loop measures - the one number that needs the consumer,
which only the consumer thread may touch, so the loop publishes a fresh dict each second and
a scrape reads the latest. Consumer lag in seconds is computed at the scrape itself, so it
keeps growing while a partition is silent. Evictions stay a counter the loop feeds: the
stores of revoked partitions take their counts with them, and a counter must never drop.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from stream.runtime.rebuild import Partitions

NAMES = ("seqsentry_tracked_users", "seqsentry_ready", "seqsentry_consumer_lag_messages",
         "seqsentry_consumer_lag_seconds", "seqsentry_gpu_memory_allocated_bytes", "seqsentry_gpu_utilization_ratio")


class RuntimeGauges(Collector):
    """``seqsentry_tracked_users``, ``_ready``, ``_consumer_lag_messages``, ``_consumer_lag_seconds``
    and, on CUDA, the GPU gauges."""

    def __init__(self, topic: str, partitions: Partitions, ready: Callable[[], bool],
                 lag: Callable[[], dict[int, int]], device: Callable[[], str]) -> None:
        self.topic = topic
        self.partitions = partitions
        self.ready = ready
        self.lag = lag
        self.device = device

    @staticmethod
    def describe() -> Iterator[GaugeMetricFamily]:
        """Every series this collector can export, without values (the GPU ones only on CUDA)."""
        for name in NAMES:
            yield GaugeMetricFamily(name, name)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        stores = list(self.partitions.stores.values())  # one atomic copy: a rebalance may swap the dict's entries
        yield GaugeMetricFamily("seqsentry_tracked_users", "Users with a window in memory.",
                                value=sum(s.users for s in stores))
        yield GaugeMetricFamily("seqsentry_ready", "1 when the detector is consuming and the broker is reachable.",
                                value=1 if self.ready() else 0)
        lag = GaugeMetricFamily("seqsentry_consumer_lag_messages", "High watermark minus position, per partition.",
                                labels=["topic", "partition"])
        for partition, n in sorted(self.lag().items()):
            lag.add_metric([self.topic, str(partition)], n)
        yield lag
        now_ms = time.time() * 1000
        behind = GaugeMetricFamily("seqsentry_consumer_lag_seconds",
                                   "Now minus the Kafka timestamp of the last message consumed, per partition.",
                                   labels=["topic", "partition"])
        assigned = {tp.partition for tp in list(self.partitions.assigned)}
        for partition, ts in sorted(dict(self.partitions.last_ts).items()):
            if partition in assigned:
                behind.add_metric([self.topic, str(partition)], max(0.0, (now_ms - ts) / 1000))
        yield behind
        if self.device().startswith("cuda"):
            import torch

            yield GaugeMetricFamily("seqsentry_gpu_memory_allocated_bytes", "GPU memory held by torch (CUDA only).",
                                    value=torch.cuda.memory_allocated())
            with contextlib.suppress(Exception):  # NVML missing: no utilisation series, never a failed scrape
                yield GaugeMetricFamily("seqsentry_gpu_utilization_ratio",
                                        "GPU busy fraction, 0..1 (CUDA + NVML only).",
                                        value=torch.cuda.utilization() / 100.0)
