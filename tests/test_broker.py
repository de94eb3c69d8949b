"""Embedded broker: starts, creates topics, fails with one clear line."""

from __future__ import annotations

import socket

import pytest
from confluent_kafka.admin import AdminClient

from stream.broker import BrokerError, EmbeddedBroker, find_binary


def test_session_broker_serves_metadata_and_creates_partitioned_topics(broker):
    broker.create_topics({"broker-test": 3})
    md = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=5)
    assert len(md.topics["broker-test"].partitions) == 3


def test_creating_an_existing_topic_is_harmless(broker):
    broker.create_topics({"twice": 2})
    broker.create_topics({"twice": 2})


def test_a_missing_binary_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("SEQSENTRY_BROKER_BIN", "/nonexistent/tansu")
    with pytest.raises(BrokerError, match="SEQSENTRY_BROKER_BIN"):
        find_binary()


def test_a_port_in_use_is_one_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(BrokerError, match="in use"):
            EmbeddedBroker(port=s.getsockname()[1]).start()


def test_stop_ends_the_process():
    b = EmbeddedBroker().start()
    pid = b.pid
    b.stop()
    with pytest.raises(ProcessLookupError):
        import os

        os.kill(pid, 0)
