"""Outputs without a broker: the dead-letter contract, alerts tied to their tickets, delivery failures."""

from __future__ import annotations

import hashlib

import orjson
from confluent_kafka import KafkaError, KafkaException

from stream.dead_letter import DEFAULT_MESSAGE_MAX_BYTES, dead_letter_headers
from stream.metrics import Metrics
from stream.runtime.broker_health import BrokerErrors
from stream.runtime.commits import Ticket
from stream.runtime.outputs import Outputs
from tests.doubles import FakeProducer, pending

CONTRACT = ["seqsentry.reason", "seqsentry.detail", "seqsentry.topic", "seqsentry.partition", "seqsentry.offset"]


def outputs(producer: FakeProducer) -> Outputs:
    return Outputs(producer, alerts_topic="alerts", dlq_topic="dlq", metrics=Metrics(), errors=BrokerErrors())


def test_dead_letter_headers_are_the_five_of_the_contract_in_order():
    headers = dead_letter_headers("too-late", "more than 60000 ms behind", "events", 3, 1234)
    assert [k for k, _ in headers] == CONTRACT
    assert dict(headers) == {"seqsentry.reason": b"too-late", "seqsentry.detail": b"more than 60000 ms behind",
                             "seqsentry.topic": b"events", "seqsentry.partition": b"3", "seqsentry.offset": b"1234"}


def test_a_dead_letter_detail_is_cut_to_500_characters():
    headers = dict(dead_letter_headers("not-json", "x" * 5000, "events", 0, 0))
    assert len(headers["seqsentry.detail"]) == 500


def test_a_dead_letter_keeps_the_original_bytes_and_key_and_carries_the_contract_headers():
    producer = FakeProducer()
    out, ticket = outputs(producer), Ticket({})
    out.dead_letter(ticket, b"\xff\xfe", b"u1", "bad-encoding", "not UTF-8", topic="events", partition=2, offset=77)
    [msg] = producer.sent
    assert (msg["topic"], msg["value"], msg["key"]) == ("dlq", b"\xff\xfe", b"u1")
    assert msg["headers"] == dead_letter_headers("bad-encoding", "not UTF-8", "events", 2, 77)


def test_a_dead_letter_holds_its_ticket_open_until_the_broker_acknowledges_it():
    producer = FakeProducer()
    out, ticket = outputs(producer), Ticket({})
    out.dead_letter(ticket, b"x", None, "not-json", "", topic="events", partition=0, offset=0)
    ticket.done()  # the consumer's hold
    assert not ticket.complete
    producer.poll()
    assert ticket.complete and ticket.error is None


def test_a_failed_delivery_fails_the_ticket():
    producer = FakeProducer(fail="broker said no")
    out, ticket = outputs(producer), Ticket({})
    out.dead_letter(ticket, b"x", None, "not-json", "", topic="events", partition=0, offset=0)
    ticket.done()
    producer.poll()
    assert ticket.complete and ticket.error == "delivery to dlq failed: broker said no"


def test_alerts_are_published_keyed_by_user_and_release_the_windows_hold_on_the_ticket():
    producer = FakeProducer()
    out, ticket = outputs(producer), Ticket({})
    ticket.add()  # the window's hold, taken when it was handed to the worker
    ticket.done()  # the consumer's hold
    alert = {"user_id": "u1", "severity": "high", "trigger": {"offset": 42}}
    out.publish(pending(ticket), [alert])  # polls the producer: the alert is acknowledged
    [msg] = producer.sent
    assert (msg["topic"], msg["key"], orjson.loads(msg["value"])) == ("alerts", b"u1", alert)
    assert ticket.complete
    assert out.metrics.registry.get_sample_value("seqsentry_alerts_total", {"severity": "high"}) == 1
    assert len(out.latencies) == 1 and out.latencies[0][0] == 1_700_000_000_000


def _size(msg: dict) -> int:
    return len(msg["value"] or b"") + len(msg["key"] or b"") + sum(len(k) + len(v) for k, v in msg["headers"] or [])


def test_an_oversized_dead_letter_is_cut_to_fit_the_producer_limit_and_says_so():
    producer = FakeProducer()
    out, ticket = outputs(producer), Ticket({})
    original = b"x" * 999_900  # passes a default producer; the contract headers would push it over
    out.dead_letter(ticket, original, b"u1", "too-large", "999900 bytes", topic="events", partition=0, offset=5)
    [msg] = producer.sent
    headers = dict(msg["headers"])
    assert _size(msg) < DEFAULT_MESSAGE_MAX_BYTES
    assert original.startswith(msg["value"]) and len(msg["value"]) > 900_000
    assert headers["seqsentry.truncated"] == b"true"
    assert headers["seqsentry.original-size"] == b"999900"
    assert headers["seqsentry.original-sha256"] == hashlib.sha256(original).hexdigest().encode()
    assert headers["seqsentry.reason"] == b"too-large"


def test_a_dead_letter_that_fits_carries_no_truncation_headers():
    producer = FakeProducer()
    outputs(producer).dead_letter(Ticket({}), b"x" * 100_000, b"u1", "too-large", "", topic="events", partition=0,
                                  offset=0)
    [msg] = producer.sent
    assert len(msg["value"]) == 100_000 and "seqsentry.truncated" not in dict(msg["headers"])


def test_a_refused_produce_fails_the_ticket_and_the_detector_instead_of_raising():
    producer = FakeProducer(raises=[KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))])
    out, ticket = outputs(producer), Ticket({})
    out.dead_letter(ticket, b"x", None, "not-json", "", topic="events", partition=0, offset=0)  # does not raise
    ticket.done()
    assert ticket.complete and ticket.error is not None and "cannot produce to dlq" in ticket.error
    assert out.errors.fatal == ticket.error and "\n" not in ticket.error


def test_a_retriable_produce_error_is_retried_until_the_message_is_accepted():
    retriable = KafkaException(KafkaError(KafkaError._TRANSPORT, retriable=True))
    producer = FakeProducer(raises=[retriable, retriable])
    out, ticket = outputs(producer), Ticket({})
    out.dead_letter(ticket, b"x", None, "not-json", "", topic="events", partition=0, offset=0)
    ticket.done()
    producer.poll()
    assert len(producer.sent) == 1 and ticket.complete and ticket.error is None and out.errors.fatal is None


def test_a_refused_alert_fails_its_ticket_without_raising_on_the_worker():
    producer = FakeProducer(raises=[KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))])
    out, ticket = outputs(producer), Ticket({})
    ticket.add()
    ticket.done()
    out.publish(pending(ticket), [{"user_id": "u1", "severity": "high", "trigger": {"offset": 42}}])
    assert ticket.complete and "cannot produce to alerts" in ticket.error
