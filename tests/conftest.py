"""Shared fixtures: one embedded broker per test session, offline Hugging Face."""

from __future__ import annotations

import itertools
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from stream.broker import EmbeddedBroker  # noqa: E402

_topic_ids = itertools.count()


@pytest.fixture(scope="session")
def broker():
    """A real Kafka-protocol broker (Tansu) on a free loopback port, for the whole session."""
    b = EmbeddedBroker().start()
    yield b
    b.stop()


@pytest.fixture
def topic(broker, request):
    """A fresh 4-partition topic name on the session broker."""
    name = f"t{next(_topic_ids)}-{request.node.name[:40]}".replace("[", "-").replace("]", "")
    broker.create_topics({name: 4})
    return name
