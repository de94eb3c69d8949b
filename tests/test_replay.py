"""Replay a log into Kafka and record it back: nothing lost, nothing changed, order kept."""

from __future__ import annotations

import gzip
import time
from collections import defaultdict

import orjson
import pytest

from stream import kafka, logs, replay
from stream.cli import main
from training.synth import generate


@pytest.fixture(scope="module")
def big_log(tmp_path_factory):
    path = tmp_path_factory.mktemp("logs") / "traffic.jsonl.gz"
    logs.write_log(path, generate(events=100_000, seed=11))
    return path


def per_user(lines):
    out = defaultdict(list)
    for line in lines:
        out[orjson.loads(line)["user_id"]].append(line)
    return out


def test_100k_generated_events_replay_and_record_back_identical(broker, topic, big_log, tmp_path):
    stats = replay.replay(big_log, broker.bootstrap, topic)
    assert stats.sent == 100_000 and stats.unkeyed == 0
    out = tmp_path / "recorded.jsonl"
    assert replay.record(broker.bootstrap, topic, out, max_messages=100_000) == 100_000
    original = gzip.decompress(big_log.read_bytes()).splitlines()
    recorded = out.read_bytes().splitlines()
    assert sorted(recorded) == sorted(original)
    # keyed by user: each user's events arrive in the order they were written
    assert per_user(recorded) == per_user(original)


def test_malformed_lines_are_replayed_as_they_are(broker, topic, tmp_path):
    log = tmp_path / "dirty.jsonl"
    log.write_bytes(b'{"user_id":"a","ts":1700000000000,"type":"view"}\nnot json at all\n')
    stats = replay.replay(log, broker.bootstrap, topic)
    assert (stats.sent, stats.unkeyed) == (2, 1)
    out = tmp_path / "back.jsonl"
    replay.record(broker.bootstrap, topic, out, max_messages=2)
    assert sorted(out.read_bytes().splitlines()) == sorted(log.read_bytes().splitlines())


def test_paced_replay_follows_recorded_time_times_speed(broker, topic, tmp_path):
    log = tmp_path / "paced.jsonl"
    log.write_bytes(b"".join(orjson.dumps({"user_id": "u", "ts": 1_700_000_000_000 + i * 1000, "type": "view"}) + b"\n"
                             for i in range(5)))
    t0 = time.monotonic()
    replay.replay(log, broker.bootstrap, topic, speed=4.0)  # 4 s of events at 4x -> ~1 s
    assert 0.9 < time.monotonic() - t0 < 5


def test_csv_rows_are_replayed_as_contract_json(broker, topic, tmp_path):
    log = tmp_path / "events.csv"
    log.write_text("visitorid,event,timestamp\n7,view,1700000000000\n")
    spec = logs.LogSpec(columns={"visitorid": "user_id", "event": "type", "timestamp": "ts"})
    replay.replay(log, broker.bootstrap, topic, spec=spec)
    out = tmp_path / "back.jsonl"
    replay.record(broker.bootstrap, topic, out, max_messages=1)
    assert orjson.loads(out.read_bytes()) == {"user_id": "7", "type": "view", "ts": 1700000000000}


def test_client_settings_pass_through_to_librdkafka(broker, topic, tmp_path):
    log = tmp_path / "one.jsonl"
    log.write_bytes(b'{"user_id":"a","ts":1700000000000,"type":"view"}\n')
    # a bogus security setting must reach librdkafka and be refused by it
    with pytest.raises(Exception, match="security.protocol"):
        replay.replay(log, broker.bootstrap, topic, options={"security.protocol": "bogus"})


def test_secrets_are_redacted_from_configs():
    red = kafka.redact({"sasl.password": "hunter2", "ssl.key.password": "x", "bootstrap.servers": "h:1"})
    assert red == {"sasl.password": "***", "ssl.key.password": "***", "bootstrap.servers": "h:1"}


def test_cli_replay_and_record_round_trip(broker, topic, tmp_path, capsys):
    log = tmp_path / "small.jsonl"
    assert main(["synth", str(log), "--events", "500", "-q"]) == 0
    assert main(["replay", str(log), "-b", broker.bootstrap, "-t", topic, "-q"]) == 0
    out = tmp_path / "rec.jsonl"
    assert main(["record", str(out), "-b", broker.bootstrap, "-t", topic, "--count", "500", "-q"]) == 0
    assert sorted(out.read_bytes().splitlines()) == sorted(log.read_bytes().splitlines())
    assert "replayed 500 events" in capsys.readouterr().out


def test_cli_missing_topic_is_one_line_not_a_traceback(broker, tmp_path, capsys):
    log = tmp_path / "small.jsonl"
    log.write_bytes(b'{"user_id":"a","ts":1700000000000,"type":"view"}\n')
    assert main(["replay", str(log), "-b", broker.bootstrap, "-t", "no-such-topic", "-q"]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err


@pytest.mark.slow
def test_cli_unreachable_broker_is_one_line(tmp_path, capsys):
    log = tmp_path / "small.jsonl"
    log.write_bytes(b'{"user_id":"a","ts":1700000000000,"type":"view"}\n')
    assert main(["replay", str(log), "-b", "127.0.0.1:1", "-t", "x", "-q"]) == 2
    assert "cannot reach Kafka" in capsys.readouterr().err


def test_cli_record_with_headers_keeps_each_dead_letters_reason(broker, topic, tmp_path):
    from stream.dead_letter import dead_letter_headers

    prod = kafka.producer(broker.bootstrap)
    prod.produce(topic, b'{"user_id": "u1", "ts": ', b"u1", partition=2,
                 headers=dead_letter_headers("bad-json", "unexpected end of data", "events", 3, 41))
    assert prod.flush(10) == 0
    out = tmp_path / "dead-letters.jsonl"
    assert main(["record", str(out), "-b", broker.bootstrap, "-t", topic, "--headers", "--count", "1", "-q"]) == 0
    assert orjson.loads(out.read_bytes()) == {
        "value": '{"user_id": "u1", "ts": ', "key": "u1", "partition": 2, "offset": 0,
        "headers": {"seqsentry.reason": "bad-json", "seqsentry.detail": "unexpected end of data",
                    "seqsentry.topic": "events", "seqsentry.partition": "3", "seqsentry.offset": "41"}}


class Message:
    """The parts of a consumed confluent_kafka.Message that record() reads."""

    def __init__(self, value: bytes | None, headers: list | None = None) -> None:
        self._value, self._headers = value, headers

    def value(self):
        return self._value

    def key(self):
        return None

    def headers(self):
        return self._headers

    def partition(self):
        return 0

    def offset(self):
        return 7


def test_a_recorded_json_value_is_written_as_json_beside_its_headers():
    line = replay.message_line(Message(b'{"user_id": "u1", "ts": "yesterday"}', [("seqsentry.reason", b"bad-ts")]))
    assert orjson.loads(line) == {"value": {"user_id": "u1", "ts": "yesterday"}, "key": None,
                                  "headers": {"seqsentry.reason": "bad-ts"}, "partition": 0, "offset": 7}


def test_a_recorded_message_without_headers_or_value_is_still_one_object():
    assert orjson.loads(replay.message_line(Message(None))) == {"value": None, "key": None, "headers": {},
                                                                  "partition": 0, "offset": 7}
