"""Outputs without a broker: the dead-letter contract, alerts tied to their tickets, delivery failures."""

from __future__ import annotations

import numpy as np
import orjson

from stream.detector import Pending
from stream.metrics import Metrics
from stream.runtime.commits import Ticket
from stream.runtime.outputs import BrokerErrors, Outputs, dead_letter_headers
from stream.windows import Windows

CONTRACT = ["seqsentry.reason", "seqsentry.detail", "seqsentry.topic", "seqsentry.partition", "seqsentry.offset"]


class FakeProducer:
    """Records messages; acknowledges them (or fails them) when polled, as librdkafka does."""

    def __init__(self, fail: str | None = None) -> None:
        self.sent: list[dict] = []
        self._callbacks: list = []
        self.fail = fail

    def produce(self, topic, value, key, headers=None, on_delivery=None):
        self.sent.append({"topic": topic, "value": value, "key": key, "headers": headers})
        self._callbacks.append(on_delivery)

    def poll(self, timeout=0.0):
        callbacks, self._callbacks = self._callbacks, []
        for cb in callbacks:
            cb(self.fail, None)
        return len(callbacks)

    def flush(self, timeout):
        self.poll()
        return 0


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


def _pending(ticket: Ticket) -> Pending:
    windows = Windows(user_id=["u1"], ts=np.zeros((1, 1), np.int64), type=np.zeros((1, 1), np.uint16),
                      item=np.zeros((1, 1), np.uint32), price=np.zeros((1, 1), np.float32),
                      label=np.zeros((1, 1), np.int8), length=np.array([1]))
    return Pending(windows=windows, type_names=["view"], event_time=np.array([1_000]), trigger_event=["e"],
                   event_ids=[None], topic="events", partition=0, offsets=np.array([42]),
                   kafka_ts=np.array([1_700_000_000_000]), ticket=ticket)


def test_alerts_are_published_keyed_by_user_and_release_the_windows_hold_on_the_ticket():
    producer = FakeProducer()
    out, ticket = outputs(producer), Ticket({})
    ticket.add()  # the window's hold, taken when it was handed to the worker
    ticket.done()  # the consumer's hold
    alert = {"user_id": "u1", "severity": "high", "trigger": {"offset": 42}}
    out.publish(_pending(ticket), [alert])  # polls the producer: the alert is acknowledged
    [msg] = producer.sent
    assert (msg["topic"], msg["key"], orjson.loads(msg["value"])) == ("alerts", b"u1", alert)
    assert ticket.complete
    assert out.metrics.value("seqsentry_alerts_total", {"severity": "high"}) == 1
    assert len(out.latencies) == 1 and out.latencies[0][0] == 1_700_000_000_000
