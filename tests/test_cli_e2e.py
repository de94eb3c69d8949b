"""What a newcomer runs: the demo, the alert tail, `run` under SIGTERM, and one-line errors."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from stream import logs, replay
from stream.cli import main

SEQSENTRY = [sys.executable, "-m", "stream.cli"]


@pytest.mark.slow
def test_demo_runs_end_to_end_and_summarises(tmp_path):
    proc = subprocess.run(
        [*SEQSENTRY, "demo", "--events", "6000", "--rate", "0", "--train-events", "20000", "--no-live",
         "--registry", str(tmp_path / "reg"), "--out", str(tmp_path / "demo"), "--metrics-port", "0"],
        capture_output=True, text=True, timeout=900, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "seqsentry demo summary" in proc.stdout
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    # every event's window is scored, and every ended session's window once more
    assert summary["events_consumed"] == 6000 and summary["windows_scored"] > 6000
    assert summary["alerts"] > 0 and summary["attackers_alerted"] >= 1
    assert (tmp_path / "demo" / "latency.png").is_file()
    assert (tmp_path / "reg" / "current").exists()  # it trained and published a model


def test_alerts_tail_filters_by_severity_and_prints_json(broker, topic, capsys):
    p = Producer({"bootstrap.servers": broker.bootstrap})
    for i, sev in enumerate(["low", "high", "critical", "medium"]):
        p.produce(topic, orjson.dumps({"user_id": f"u{i}", "severity": sev, "score": 0.9, "event_time": 0,
                                       "model_version": "v", "explanation": []}), f"u{i}".encode())
    p.flush()
    assert main(["alerts", "-b", broker.bootstrap, "-t", topic, "--from-beginning", "--json", "--severity", "high",
                 "--idle-exit", "2"]) == 0
    shown = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted(a["severity"] for a in shown) == ["critical", "high"]


@pytest.mark.slow
def test_run_stops_cleanly_on_sigterm_and_commits_everything(broker, tiny_model, traffic, tmp_path):
    res, _ = tiny_model
    n = 2000
    names = {"topic": "sig-events", "alerts": "sig-alerts", "dlq": "sig-dlq"}
    broker.create_topics({names["topic"]: 2, names["alerts"]: 1, names["dlq"]: 1})
    proc = subprocess.Popen(
        [*SEQSENTRY, "run", "-b", broker.bootstrap, "--model", str(res.artifact), "--topic", names["topic"],
         "--alerts-topic", names["alerts"], "--dlq-topic", names["dlq"], "--group", "sig", "--metrics-port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert "consuming" in proc.stdout.readline()
    log = tmp_path / "l.jsonl"
    logs.write_log(log, [traffic[:n]])
    replay.replay(log, broker.bootstrap, names["topic"])
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "sig"})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        committed = c.committed([TopicPartition(names["topic"], p) for p in range(2)], timeout=5)
        if sum(max(tp.offset, 0) for tp in committed) >= n:
            break
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0
    committed = c.committed([TopicPartition(names["topic"], p) for p in range(2)], timeout=5)
    c.close()
    assert sum(tp.offset for tp in committed) == n


def one_line_error(args, capsys) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1
    return err


def test_unreachable_broker_is_one_line(capsys, tmp_path):
    assert "cannot reach Kafka" in one_line_error(["run", "-b", "127.0.0.1:1", "--registry", str(tmp_path),
                                                               "--startup-timeout-s", "0"], capsys)


def test_missing_model_is_one_line(broker, capsys, tmp_path):
    broker.create_topics({"events": 1, "alerts": 1, "events-dlq": 1})
    err = one_line_error(["run", "-b", broker.bootstrap, "--registry", str(tmp_path / "empty")], capsys)
    assert "no model in registry" in err and "seqsentry train" in err


def test_missing_topic_is_one_line(broker, capsys, tmp_path):
    err = one_line_error(["run", "-b", broker.bootstrap, "--topic", "nope", "--registry", str(tmp_path),
                                "--startup-timeout-s", "0"], capsys)
    assert "does not exist" in err


def test_unknown_log_format_is_one_line(capsys, tmp_path):
    (tmp_path / "x.xlsx").write_text("")
    assert "--format" in one_line_error(["score", str(tmp_path / "x.xlsx"), "--registry", str(tmp_path)], capsys)


def test_cuda_asked_for_but_absent_is_one_line(tiny_model, capsys, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    (tmp_path / "x.jsonl").write_text("")
    err = one_line_error(["score", str(tmp_path / "x.jsonl"), "--model", str(tiny_model[0].artifact), "--device", "cuda"], capsys)
    assert "no CUDA device" in err


def test_metrics_port_in_use_is_one_line(broker, tiny_model, capsys):
    broker.create_topics({"events": 1, "alerts": 1, "events-dlq": 1})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        err = one_line_error(["run", "-b", broker.bootstrap, "--model", str(tiny_model[0].artifact),
                              "--metrics-port", str(s.getsockname()[1])], capsys)
    assert "--metrics-port" in err


def test_offline_score_writes_alerts_and_dead_letters(tiny_model, traffic, tmp_path, capsys):
    log = tmp_path / "t.jsonl"
    logs.write_log(log, [traffic[:3000]])
    with open(log, "ab") as f:
        f.write(b"garbage\n")
    assert main(["score", str(log), "--model", str(tiny_model[0].artifact), "--out", str(tmp_path / "a.jsonl"),
                 "--dead-letters", str(tmp_path / "dlq.jsonl"), "-q", "--device", "cpu"]) == 0
    stats = json.loads(capsys.readouterr().out.splitlines()[0])
    assert stats["events"] == 3001 and stats["rejected"] == 1
    assert stats["windows"] == 3000 + stats["sessions_ended"]  # one per event, one more per ended session
    dead = [json.loads(x) for x in (tmp_path / "dlq.jsonl").read_text().splitlines()]
    assert dead == [{"reason": "not-json", "detail": dead[0]["detail"], "value": "garbage"}]
