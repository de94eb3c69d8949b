"""Log rate limits: one line per kind every interval, saying how many were held back."""

from __future__ import annotations

import logging

from confluent_kafka import KafkaError

from stream.ratelimit import RateLimit, RateLimitFilter
from stream.runtime.broker_health import BrokerErrors


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_one_line_per_kind_per_interval_and_the_next_says_how_many_were_held_back():
    clock = Clock()
    limit = RateLimit(10.0, clock)
    assert [limit.allow("down") for _ in range(50)] == [0] + [None] * 49
    assert limit.allow("other") == 0  # another kind has its own budget
    clock.now = 10.0
    assert limit.allow("down") == 49


def test_a_broker_that_is_down_logs_one_line_per_error_kind_per_ten_seconds(caplog):
    errors = BrokerErrors()
    with caplog.at_level(logging.WARNING, logger="stream.runtime.broker_health"):
        for _ in range(50):
            errors.on_error(KafkaError(KafkaError._TRANSPORT))
            errors.on_error(KafkaError(KafkaError._ALL_BROKERS_DOWN))
    assert len(caplog.records) == 2


def test_librdkafkas_repeated_log_lines_are_rate_limited():
    clock = Clock()
    records = [logging.LogRecord("rdkafka", logging.WARNING, "x", 1, "%s [%s] %s", ("FAIL", "c1", f"down {i}"), None)
               for i in range(30)]
    f = RateLimitFilter(RateLimit(10.0, clock))
    assert sum(f.filter(r) for r in records) == 1
    clock.now = 11.0
    later = logging.LogRecord("rdkafka", logging.WARNING, "x", 1, "%s [%s] %s", ("FAIL", "c1", "down"), None)
    assert f.filter(later) and "29 more like this" in later.getMessage()
