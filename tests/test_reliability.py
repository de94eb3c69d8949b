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
from confluent_kafka import Producer

from bench.crash import committed_offsets, crash_run
from stream import logs, replay
from stream.broker import EmbeddedBroker
from stream.service import DetectorFailed
from tests.test_service import Stack, read_topic, wait_for

SEQSENTRY = [sys.executable, "-m", "stream.cli"]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["at-least-once", "exactly-once"])
def test_kill_9_at_random_points_loses_nothing(broker, tiny_model, traffic, offline_alerts_for_traffic, tmp_path, mode):
    log = tmp_path / "t.jsonl"
    logs.write_log(log, [traffic])
    # the tiny model scores a batch in a few ms: commit often, so that kills land between commits, not
    # only before the first
    res = crash_run(broker.bootstrap, tiny_model[0].artifact, log, tmp_path, kills=5, mode=mode, kill_after=(0.1, 0.18),
                    offline_alerts=offline_alerts_for_traffic, timeout=300, run_args=("--commit-interval-ms", "10"))
    # duplicates are counted, not asserted away: at-least-once allows them, and the embedded broker hands
    # aborted transactional records to read_committed readers (see test_broker.py)
    print(res)
    assert res.kills == 5 and res.events == len(traffic)
    assert res.committed_at_kills[-1] < len(traffic)  # every kill struck mid-stream
    assert res.scored_events == len(traffic)
    if mode == "at-least-once":  # exactly-once: the embedded broker drops offsets-only transactions (crash.finished)
        assert res.committed == len(traffic)
    assert res.committed_but_unscored == 0  # no offset committed for an event that was not scored
    assert res.users_missed == 0
    # exactly the alert ids of an uninterrupted offline run: the cooldown is rebuilt with the windows
    assert (res.extra_alert_ids, res.missing_alert_ids) == (0, 0)


def test_exactly_once_mode_commits_alerts_and_offsets_together(broker, tiny_model, traffic,
                                                            offline_alerts_for_traffic, tmp_path):
    stack = Stack(broker, tiny_model[1], exactly_once=True, transactional_id="eos-happy")
    svc = stack.start()
    log = tmp_path / "t.jsonl"
    logs.write_log(log, [traffic])
    replay.replay(log, broker.bootstrap, stack.topics["topic"])
    wait_for(lambda: stack.settled(len(traffic)), 120, "all events processed and committed")
    offsets = committed_offsets(broker.bootstrap, stack.cfg.group, stack.topics["topic"])
    assert sum(offsets.values()) == len(traffic)  # committed through send_offsets_to_transaction
    assert svc.metrics.registry.get_sample_value("seqsentry_offset_commits_total") >= 1
    alerts = [orjson.loads(m.value())
              for m in read_topic(broker.bootstrap, stack.topics["alerts_topic"], isolation="read_committed")]
    assert sorted(a["alert_id"] for a in alerts) == sorted(a["alert_id"] for a in offline_alerts_for_traffic)
    stack.stop()


@pytest.mark.xfail(strict=False, reason="known open race: on a loaded 2-core machine the fenced detector sometimes "
                   "outlives 180 s (failed 1 of the last 3 full-suite runs after cbdb463); still run, and reported")
def test_a_fenced_exactly_once_detector_stops_instead_of_writing(broker, tiny_model, traffic, tmp_path):
    stack = Stack(broker, tiny_model[1], exactly_once=True, transactional_id="eos-fenced")
    stack.start()
    successor = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": "eos-fenced"})
    successor.init_transactions(30)  # a newer incarnation with the same id takes over
    log = tmp_path / "t.jsonl"
    logs.write_log(log, [traffic[:2000]])
    replay.replay(log, broker.bootstrap, stack.topics["topic"])
    # usually seconds; once in four full-suite runs on a loaded 2-core machine it took past 60 s
    # (the fenced producer still inside a flush slice when librdkafka's fatal error arrived)
    wait_for(lambda: not stack.thread.is_alive(), 180, "the fenced detector to stop")
    assert isinstance(stack.error, DetectorFailed) and "fenced" in str(stack.error).lower()
    offsets = committed_offsets(broker.bootstrap, stack.cfg.group, stack.topics["topic"])
    assert sum(offsets.values()) == 0  # nothing it processed after being fenced was committed


@pytest.fixture(scope="module")
def offline_alerts_for_traffic(tiny_model, traffic, tmp_path_factory):
    from stream.detector import Detector
    from stream.model import Scorer
    from stream.offline import score_log

    d = tmp_path_factory.mktemp("off")
    logs.write_log(d / "t.jsonl", [traffic])
    score_log(d / "t.jsonl", Detector(Scorer.load(tiny_model[0].artifact, "cpu")), d / "a.jsonl")
    return [orjson.loads(x) for x in (d / "a.jsonl").read_bytes().splitlines()]


@pytest.mark.slow
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
        assert svc.metrics.registry.get_sample_value("seqsentry_events_consumed_total") == 6000
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
                           "-X", "sasl.username=svc", "-X", "sasl.password=hunter2-secret", "--startup-timeout-s", "2"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "retrying" in proc.stderr  # the start-up retries were logged ...
    assert "hunter2" not in proc.stdout + proc.stderr  # ... and nothing anywhere shows the password


@pytest.mark.slow
def test_sasl_settings_reach_an_authenticating_broker_and_a_refused_login_is_named(tmp_path):
    """Tansu's --authentication: the -X SASL settings drive a real SCRAM exchange with the broker.

    (Its in-memory store cannot hold users before authentication is required, so the login is
    refused; a successful login and TLS cannot be shown with this broker build - see docs/reliability.md.)
    """
    log = tmp_path / "broker.log"
    with EmbeddedBroker(authentication=True, log_path=log, log_level="info") as secured:
        proc = subprocess.run([*SEQSENTRY, "run", "-b", secured.bootstrap, "--registry", str(tmp_path),
                               "-X", "security.protocol=SASL_PLAINTEXT", "-X", "sasl.mechanism=SCRAM-SHA-512",
                               "-X", "sasl.username=alice", "-X", "sasl.password=hunter2-secret",
                               "--startup-timeout-s", "0"], capture_output=True, text=True, timeout=60)
        unauthenticated = subprocess.run([*SEQSENTRY, "run", "-b", secured.bootstrap, "--registry", str(tmp_path),
                                          "--startup-timeout-s", "0"], capture_output=True, text=True, timeout=60)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and len(err) == 1
    assert "refused the connection's security" in err[0] and "SCRAM authentication failed" in err[0]
    assert "hunter2" not in proc.stdout + proc.stderr
    assert 'mechanism: "SCRAM-SHA-512"' in log.read_text(errors="replace")  # the broker saw our SASL settings
    assert unauthenticated.returncode != 0 and "cannot reach Kafka" in unauthenticated.stderr


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

    from stream.artifact import ArtifactError, load_artifact

    bad = tmp_path / "odd"
    shutil.copytree(tiny_model[0].artifact, bad)
    meta = json.loads((bad / "meta.json").read_text())
    meta["kind"] = "onnx"
    (bad / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="unknown model kind"):
        load_artifact(bad)


class _WedgedConsumer:
    """The real consumer, except that fetching has silently stopped (as librdkafka once did here after a resume)."""

    def __init__(self, real):
        self._real = real

    def consume(self, num_messages=1, timeout=-1):
        time.sleep(min(timeout, 0.05))
        return []

    def __getattr__(self, name):
        return getattr(self._real, name)


@pytest.mark.slow
def test_a_detector_that_stops_consuming_while_behind_fails_its_health_check(broker, tiny_model, traffic, tmp_path):
    stack = Stack(broker, tiny_model[1], stall_timeout_s=3.0)
    svc = stack.start()
    first = tmp_path / "first.jsonl"
    logs.write_log(first, [traffic[:500]])
    replay.replay(first, broker.bootstrap, stack.topics["topic"])
    wait_for(lambda: stack.settled(500), 60, "first events")
    health = svc.metrics_url + "/healthz"
    assert urllib.request.urlopen(health, timeout=5).status == 200
    svc.consumer = _WedgedConsumer(svc.consumer)
    time.sleep(4.0)  # idle and caught up: not a stall
    assert urllib.request.urlopen(health, timeout=5).status == 200
    more = tmp_path / "more.jsonl"
    logs.write_log(more, [traffic[500:1500]])
    replay.replay(more, broker.bootstrap, stack.topics["topic"])

    def unhealthy():
        try:
            urllib.request.urlopen(health, timeout=5)
            return False
        except urllib.error.HTTPError as exc:
            return exc.code == 503

    wait_for(unhealthy, 30, "/healthz to report the stall")
    svc.consumer = svc.consumer._real
    stack.stop()


def test_a_one_megabyte_message_is_dead_lettered_truncated_and_the_stream_goes_on(broker, tiny_model, traffic):
    stack = Stack(broker, tiny_model[1])
    svc = stack.start()
    huge = b"{" + b"x" * 999_899  # 999,900 bytes: passes a default producer, too big with dead-letter headers
    p = Producer({"bootstrap.servers": broker.bootstrap})
    p.produce(stack.topics["topic"], huge, b"u1", partition=0)
    for r in traffic[:50]:
        p.produce(stack.topics["topic"], orjson.dumps(r), r["user_id"].encode(), partition=0)
    assert p.flush(30) == 0
    wait_for(lambda: stack.settled(51), 60, "the huge message and the valid ones after it")
    stack.stop()
    [dead] = read_topic(broker.bootstrap, stack.topics["dlq_topic"], partitions=1)
    headers = dict(dead.headers())
    assert headers["seqsentry.truncated"] == b"true" and headers["seqsentry.original-size"] == b"999900"
    assert huge.startswith(dead.value())
    assert stack.error is None and svc.worker.error is None
    assert committed_offsets(broker.bootstrap, stack.cfg.group, stack.topics["topic"])[0] == 51


# ---- issue 20: an attacker who controls `ts` (and the message timestamp) through the live consumer ---------
def _produce_stamped(broker, topic: str, rows: list[tuple[dict, int]]) -> None:
    """Produce events with the message timestamp (CreateTime) each one's producer chose."""
    p = Producer({"bootstrap.servers": broker.bootstrap})
    for record, create_time in rows:
        p.produce(topic, orjson.dumps(record), record["user_id"].encode(), timestamp=create_time)
    assert p.flush(30) == 0


def test_one_event_dated_50_minutes_ahead_does_not_switch_off_its_users_scoring(broker, tiny_model):
    stack = Stack(broker, tiny_model[1])
    svc = stack.start()
    ahead = {"user_id": "mallory", "ts": int(time.time() * 1000) + 50 * 60_000, "type": "view"}
    _produce_stamped(broker, stack.topics["topic"], [(ahead, ahead["ts"])])
    for _ in range(30):  # the user's next events, each dated (and stamped) when it is sent
        now = int(time.time() * 1000)
        _produce_stamped(broker, stack.topics["topic"], [({"user_id": "mallory", "ts": now, "type": "view"}, now)])
    wait_for(lambda: stack.settled(31), 60, "the user's events")
    m = svc.metrics
    stack.stop()
    assert m.registry.get_sample_value("seqsentry_events_late_total") == 0  # before the fix: all 30 later events too-late
    assert m.registry.get_sample_value("seqsentry_windows_scored_total") == 31


def test_a_forged_2099_message_timestamp_neither_evicts_nor_ends_anyones_session(broker, tiny_model):
    stack = Stack(broker, tiny_model[1])
    svc = stack.start()
    now = int(time.time() * 1000)
    users = [{"user_id": f"u{i}", "ts": now + i, "type": "view"} for i in range(100)]
    forged = {"user_id": "u0", "ts": 4_102_358_400_000, "type": "view"}  # ts and CreateTime both in 2099
    after = [{"user_id": f"u{i % 100}", "ts": now + 1_000 + i, "type": "view"} for i in range(500)]
    _produce_stamped(broker, stack.topics["topic"], [(r, r["ts"]) for r in users] + [(forged, forged["ts"])]
                     + [(r, r["ts"]) for r in after])
    wait_for(lambda: stack.settled(601), 60, "every event")
    time.sleep(1.5)  # one observation cycle: tracked users
    m = stack.scrape()
    stack.stop()
    assert m["seqsentry_sessions_ended_total"] == 0  # before the fix: 100 at once, then 499 of 500 events
    assert m["seqsentry_tracked_users"] == 100
    assert m.get(("seqsentry_users_evicted_total", (("cause", "idle"),)), 0) == 0
    assert m[("seqsentry_events_rejected_total", (("reason", "bad-timestamp"),))] == 1
    assert svc.metrics.registry.get_sample_value("seqsentry_events_late_total") == 0
