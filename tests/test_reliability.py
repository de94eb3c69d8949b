"""Reliability: kill -9, broker outages, hostile input on the consumer path, user floods, secrets."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import urllib.request

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from stream import logs, replay
from stream.broker import EmbeddedBroker, free_port
from tests.test_service import Stack, read_topic, wait_for

SEQSENTRY = [sys.executable, "-m", "stream.cli"]


def committed(bootstrap, group, topic, partitions=4):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        return {tp.partition: max(tp.offset, 0)
                for tp in c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=5)}
    finally:
        c.close()


def test_kill_9_at_random_points_loses_nothing(broker, tiny_model, traffic, offline_alerts_for_traffic, tmp_path):
    res, _ = tiny_model
    names = {"topic": "crash-ev", "alerts": "crash-al", "dlq": "crash-dlq"}
    broker.create_topics({names["topic"]: 4, names["alerts"]: 4, names["dlq"]: 1})
    log = tmp_path / "t.jsonl"
    logs.write_log(log, [traffic])
    replay.replay(log, broker.bootstrap, names["topic"])
    audit = tmp_path / "audit.txt"
    cmd = [*SEQSENTRY, "run", "-b", broker.bootstrap, "--model", str(res.artifact), "--topic", names["topic"],
           "--alerts-topic", names["alerts"], "--dlq-topic", names["dlq"], "--group", "crash", "--audit-log", str(audit),
           "--device", "cpu"]
    rng = random.Random(7)
    kills = 0
    for _ in range(5):
        proc = subprocess.Popen([*cmd, "--metrics-port", str(free_port())], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(4.0, 9.0))  # start-up + some processing, then the plug is pulled
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        kills += 1
    proc = subprocess.Popen([*cmd, "--metrics-port", str(free_port())], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: sum(committed(broker.bootstrap, "crash", names["topic"]).values()) >= len(traffic), 240,
                 "every event committed after the restarts")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    offsets = committed(broker.bootstrap, "crash", names["topic"])
    assert sum(offsets.values()) == len(traffic)
    scored = {tuple(map(int, line.split())) for line in audit.read_text().splitlines()}
    for part, upto in offsets.items():  # no offset committed for an event that was not scored
        assert all((part, o) in scored for o in range(upto))
    alerts = [orjson.loads(m.value()) for m in read_topic(broker.bootstrap, names["alerts"])]
    ids = [a["alert_id"] for a in alerts]
    print(f"{kills} kills; {len(ids)} alerts published, {len(ids) - len(set(ids))} duplicates (at-least-once)")
    # every user an uninterrupted run alerts on is still alerted (the per-user cooldown restarts empty after a
    # crash, so individual alert ids may shift within a cooldown period; the users may not)
    assert {a["user_id"] for a in offline_alerts_for_traffic} <= {a["user_id"] for a in alerts}


@pytest.fixture(scope="module")
def offline_alerts_for_traffic(tiny_model, traffic, tmp_path_factory):
    from stream.detector import Detector
    from stream.model import Scorer
    from stream.offline import score_log

    d = tmp_path_factory.mktemp("off")
    logs.write_log(d / "t.jsonl", [traffic])
    score_log(d / "t.jsonl", Detector(Scorer.load(tiny_model[0].artifact, "cpu")), d / "a.jsonl")
    return [orjson.loads(x) for x in (d / "a.jsonl").read_bytes().splitlines()]


def test_a_paused_broker_is_survived_and_shown_in_readiness(tiny_model, traffic, tmp_path):
    with EmbeddedBroker() as own:
        stack = Stack(own, tiny_model[1])
        svc = stack.start()
        first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
        logs.write_log(first, [traffic[:3000]])
        logs.write_log(second, [traffic[3000:6000]])
        replay.replay(first, own.bootstrap, stack.topics["topic"])
        wait_for(lambda: stack.settled(3000), 60, "first part")
        readiness = []
        os.kill(own.pid, signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            while time.monotonic() - t0 < 20:
                readiness.append(svc.ready)
                time.sleep(0.2)
        finally:
            os.kill(own.pid, signal.SIGCONT)
        replay.replay(second, own.bootstrap, stack.topics["topic"])
        wait_for(lambda: stack.settled(6000), 120, "second part after the outage")
        wait_for(lambda: svc.ready, 30, "ready again")
        assert stack.thread.is_alive()
        stack.stop()
        assert svc.metrics.events_consumed._value.get() == 6000
        assert readiness[0] is True and False in readiness  # the outage showed


def hostile_payloads(rng: random.Random) -> list[bytes]:
    base = {"user_id": "u1", "ts": 1793491200000, "type": "view"}
    out = [bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 200))) for _ in range(60)]
    out += [orjson.dumps({**base, k: v}) for k in ("user_id", "ts", "type", "price", "label")
            for v in ([], {}, True, "x" * 300 if k != "ts" else "soon", -1 if k != "user_id" else "")]
    out += [orjson.dumps({k: v for k, v in base.items() if k != drop}) for drop in base]
    out += [b'{"user_id":"u","ts":NaN,"type":"view"}', b'{"user_id":"u","ts":1793491200000,"type":"view","price":Infinity}',
            orjson.dumps({**base, "ts": -5}), orjson.dumps({**base, "ts": 99_999_999_999_999}),
            orjson.dumps({**base, "pad": "x" * 900_000}), b"\xed\xa0\x80\xff", b"[" * 50_000 + b"]" * 50_000,
            orjson.dumps({**base, "type": "y" * 100_000}), b"", b"null", b"42", b'"str"']
    return out


def test_hostile_input_is_dead_lettered_and_counts_reconcile(broker, tiny_model, traffic):
    rng = random.Random(3)
    bad = hostile_payloads(rng)
    good = [orjson.dumps(r) for r in traffic[:600]]
    mixed = list(good)  # valid events keep their order; hostile ones are slipped in at random places
    for b in bad:
        mixed.insert(rng.randint(0, len(mixed)), b)
    stack = Stack(broker, tiny_model[1])
    svc = stack.start()
    p = Producer({"bootstrap.servers": broker.bootstrap, "message.max.bytes": 2_000_000})
    for v in mixed:
        p.produce(stack.topics["topic"], v, b"u1")
    assert p.flush(30) == 0
    wait_for(lambda: stack.settled(len(mixed)), 60, "hostile batch processed")
    m = stack.scrape()
    stack.stop()
    rejected = sum(v for k, v in m.items() if isinstance(k, tuple) and k[0] == "seqsentry_events_rejected_total")
    dead = read_topic(broker.bootstrap, stack.topics["dlq_topic"], partitions=1)
    assert m["seqsentry_events_consumed_total"] == len(mixed) == m["seqsentry_events_valid_total"] + rejected
    assert len(dead) == rejected
    assert sorted(d.value() or b"" for d in dead) == sorted(bad)
    assert svc.worker.error is None


def test_a_flood_of_users_is_capped_and_shows_in_metrics(broker, tiny_model):
    stack = Stack(broker, tiny_model[1], max_users=50)
    stack.start()
    p = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(3000):
        u = f"flood{i}"
        p.produce(stack.topics["topic"], orjson.dumps({"user_id": u, "ts": 1793491200000 + i, "type": "view"}), u)
    p.flush()
    wait_for(lambda: stack.settled(3000), 60, "flood processed")
    time.sleep(1.5)  # one observation cycle
    m = stack.scrape()
    stack.stop()
    assert m["seqsentry_tracked_users"] <= 4 * 50
    assert m[("seqsentry_users_evicted_total", (("cause", "lru"),))] >= 3000 - 4 * 50


def test_secrets_never_reach_logs(tmp_path):
    proc = subprocess.run([*SEQSENTRY, "--log-level", "DEBUG", "run", "-b", "127.0.0.1:1", "--registry", str(tmp_path),
                           "-X", "security.protocol=SASL_PLAINTEXT", "-X", "sasl.mechanism=PLAIN",
                           "-X", "sasl.username=svc", "-X", "sasl.password=hunter2-secret"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "hunter2" not in proc.stdout + proc.stderr


def test_metrics_server_binds_to_the_configured_address(broker, tiny_model):
    stack = Stack(broker, tiny_model[1], metrics_host="127.0.0.2")
    svc = stack.start()
    try:
        assert svc.http.server_address[0] == "127.0.0.2"
        assert urllib.request.urlopen(svc.metrics_url + "/healthz", timeout=5).status == 200
    finally:
        stack.stop()


def test_unknown_artifact_kind_is_refused(tiny_model, tmp_path):
    import json
    import shutil

    from stream.model import ArtifactError, load_artifact

    bad = tmp_path / "odd"
    shutil.copytree(tiny_model[0].artifact, bad)
    meta = json.loads((bad / "meta.json").read_text())
    meta["kind"] = "onnx"
    (bad / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="unknown model kind"):
        load_artifact(bad)
