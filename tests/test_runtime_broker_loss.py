"""Broker loss without a broker: readiness, liveness, acknowledged-only alert counts, one line per problem."""

from __future__ import annotations

import logging
import threading
import time
from types import SimpleNamespace

from confluent_kafka import KafkaError

from stream.metrics import Metrics
from stream.runtime.commits import CommitTracker, Ticket
from stream.runtime.outputs import BrokerErrors, Outputs
from stream.service import Service, ServiceConfig
from tests.test_runtime_outputs import FakeProducer, _pending


class HeldProducer(FakeProducer):
    """A producer whose broker has not answered yet: deliveries are reported only by :meth:`answer`."""

    def poll(self, timeout=0.0):
        return 0

    def answer(self) -> None:
        FakeProducer.poll(self)


def _service(errors: BrokerErrors, commits: CommitTracker | None = None, stall_timeout_s: float = 120.0) -> Service:
    """A Service past set-up as far as the probes look: one partition assigned, loop and worker alive."""
    svc = Service(ServiceConfig(bootstrap="unused:9092", stall_timeout_s=stall_timeout_s))
    svc.errors = errors
    now = time.monotonic()
    svc.loop = SimpleNamespace(heartbeat=now, progress_at=now)
    svc.partitions = SimpleNamespace(assigned={0})
    svc.worker = SimpleNamespace(error=None)
    svc.commits = commits or CommitTracker(Metrics())
    return svc


def _alert(ticket: Ticket) -> tuple:
    ticket.add()
    ticket.done()
    return _pending(ticket), [{"user_id": "u1", "severity": "high", "trigger": {"offset": 42}}]


def test_an_alert_is_counted_only_once_the_broker_acknowledges_it():
    producer = HeldProducer()
    out = Outputs(producer, alerts_topic="alerts", dlq_topic="dlq", metrics=Metrics(), errors=BrokerErrors())
    out.publish(*_alert(Ticket({})))
    assert out.metrics.value("seqsentry_alerts_total", {"severity": "high"}) == 0
    producer.answer()
    assert out.metrics.value("seqsentry_alerts_total", {"severity": "high"}) == 1


def test_an_alert_the_broker_never_took_is_not_counted():
    producer = FakeProducer(fail="Local: Message timed out")
    out = Outputs(producer, alerts_topic="alerts", dlq_topic="dlq", metrics=Metrics(), errors=BrokerErrors())
    out.publish(*_alert(Ticket({})))
    assert out.metrics.value("seqsentry_alerts_total", {"severity": "high"}) == 0


def test_readiness_fails_at_once_when_a_delivery_fails():
    errors = BrokerErrors()
    svc = _service(errors)
    assert svc.ready
    out = Outputs(FakeProducer(fail="Local: Message timed out"), alerts_topic="alerts", dlq_topic="dlq",
                  metrics=Metrics(), errors=errors)
    out.publish(*_alert(Ticket({})))
    assert not svc.ready


def test_readiness_fails_when_the_input_topic_vanishes():
    errors = BrokerErrors()
    svc = _service(errors)
    errors.on_consume_error(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART))
    assert not svc.ready


def test_readiness_fails_once_an_output_is_refused_for_good():
    errors = BrokerErrors()
    svc = _service(errors)
    errors.fatal = "cannot produce to alerts: Broker: Topic authorization failed"
    assert not svc.ready


def test_liveness_fails_when_consumed_work_waits_and_none_completes():
    commits = CommitTracker(Metrics())
    svc = _service(BrokerErrors(), commits, stall_timeout_s=0.2)
    ticket = commits.open({("events", 0): 5})
    ticket.add()  # an alert the broker never acknowledges
    ticket.done()
    time.sleep(0.3)
    svc.loop.heartbeat = svc.loop.progress_at = time.monotonic()  # the loop turns and has fetched everything
    commits.take_completed()
    assert not svc.healthy


def test_liveness_holds_while_idle_with_nothing_waiting():
    commits = CommitTracker(Metrics())
    svc = _service(BrokerErrors(), commits, stall_timeout_s=0.2)
    time.sleep(0.3)
    svc.loop.heartbeat = svc.loop.progress_at = time.monotonic()
    commits.take_completed()
    assert svc.healthy


def test_a_burst_of_failed_deliveries_logs_one_line(caplog):
    out = Outputs(FakeProducer(fail="Local: Message timed out"), alerts_topic="alerts", dlq_topic="dlq",
                  metrics=Metrics(), errors=BrokerErrors())
    with caplog.at_level(logging.WARNING, logger="stream.runtime.outputs"):
        for _ in range(100):
            out.publish(*_alert(Ticket({})))
    [line] = [r for r in caplog.records if "not delivered" in r.getMessage()]
    assert "alerts" in line.getMessage() and "Message timed out" in line.getMessage()


def test_broker_errors_are_recorded_from_librdkafkas_threads():
    errors = BrokerErrors()
    t = threading.Thread(target=errors.on_error, args=(KafkaError(KafkaError._ALL_BROKERS_DOWN),))
    t.start()
    t.join()
    assert time.monotonic() - errors.last_problem_at < 5
