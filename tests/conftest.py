"""Shared fixtures: one embedded broker and one tiny trained model per test session."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from stream.broker import EmbeddedBroker  # noqa: E402

_topic_ids = itertools.count()


@pytest.fixture(scope="session")
def broker():
    """A real Kafka-protocol broker (Tansu) on a free loopback port, for the whole session."""
    log = os.environ.get("SEQSENTRY_TEST_BROKER_LOG")  # keep the broker's own log when debugging a session
    b = EmbeddedBroker(log_path=Path(log) if log else None).start()
    yield b
    b.stop()


@pytest.fixture
def topic(broker, request):
    """A fresh 4-partition topic name on the session broker."""
    name = f"t{next(_topic_ids)}-{request.node.name[:40]}".replace("[", "-").replace("]", "")
    broker.create_topics({name: 4})
    return name


@pytest.fixture(scope="session")
def traffic():
    """Labelled synthetic traffic with every attack kind (shared by model and service tests)."""
    from training import synth

    return synth.generate_list(events=15_000, seed=3, attacker_fraction=0.08)


@pytest.fixture(scope="session")
def traffic_log(traffic, tmp_path_factory):
    """``traffic`` written once as a JSONL log (for offline scoring and replays)."""
    from stream import logs

    path = tmp_path_factory.mktemp("traffic-log") / "traffic.jsonl"
    logs.write_log(path, [traffic])
    return path


@pytest.fixture(scope="session")
def tiny_model(traffic, tmp_path_factory):
    """A tiny classifier trained for a few steps on ``traffic``, published in a registry."""
    from stream.model import ModelSize
    from stream.windows import WindowConfig
    from training import dataset, train

    cfg = train.TrainConfig(size=ModelSize(layers=1, hidden=32, heads=2, intermediate=64),
                            window=WindowConfig(max_events=32), pretrain_steps=30, finetune_epochs=2,
                            max_train_windows=4000, batch_size=64, user_alert_rate=0.02)
    reg = tmp_path_factory.mktemp("registry")
    res = train.train(lambda: dataset.batches_from_records(traffic), tmp_path_factory.mktemp("runs"), cfg,
                      registry_dir=reg, show=False)
    return res, reg
