"""A newcomer's first hour (issue 21): each friction, run the way the README shows the command."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from datetime import UTC, datetime

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stream import logs, replay
from stream.cli import main

# DIGINETICA's item views: its own user_id column is mostly "NA" (anonymous sessions)
DIGINETICA = """session_id;user_id;item_id;timeframe;eventdate
1;NA;81766;526309;2016-05-09
1;NA;31331;1031018;2016-05-09
2;;32118;243569;2016-05-10
3;7;9654;75848;2016-05-10
3;7;33043;1112408;2016-05-10
"""


def _score(log, tiny_model, tmp_path, *flags):
    return main(["score", str(log), *flags, "--model", str(tiny_model[0].artifact), "--out", str(tmp_path / "a.jsonl"),
                 "-q", "--device", "cpu"])


def test_map_session_id_to_user_id_wins_over_the_files_own_user_id_column(tiny_model, tmp_path, capsys):
    log = tmp_path / "diginetica.csv"
    log.write_text(DIGINETICA)
    # README: seqsentry score diginetica.csv --map session_id=user_id --map eventdate=ts --set type=view
    assert _score(log, tiny_model, tmp_path, "--map", "session_id=user_id", "--map", "eventdate=ts",
                  "--set", "type=view") == 0
    stats = json.loads(capsys.readouterr().out.splitlines()[0])
    assert stats["events"] == 5 and stats["rejected"] == 0
    spec = logs.LogSpec(columns={"session_id": "user_id", "eventdate": "ts"}, constants={"type": "view"})
    events = [e for res in logs.iter_events(log, spec) for e in res.events.events]
    assert [e.user_id for e in events] == ["1", "1", "2", "3", "3"]  # keyed by the session, not the user


def test_an_iso_date_or_datetime_column_is_a_timestamp(tiny_model, tmp_path, capsys):
    log = tmp_path / "dated.csv"
    log.write_text("user_id,ts,type\nu1,2016-05-09,view\nu1,2016-05-10,view\n")
    assert _score(log, tiny_model, tmp_path) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["rejected"] == 0
    day = int(datetime(2016, 5, 9, tzinfo=UTC).timestamp() * 1000)
    for text, want in (("2016-05-09", day), ("2016-05-09 01:00:00", day + 3_600_000),
                       ("2016-05-09T01:00:00Z", day + 3_600_000), ("2016-05-09T03:00:00+02:00", day + 3_600_000)):
        log.write_text(f"user_id,ts,type\nu1,{text},view\n")
        (event,) = [e for res in logs.iter_events(log) for e in res.events.events]
        assert event.ts == want, text
    table = tmp_path / "dated.parquet"  # typed columns: naive timestamps are UTC, like naive ISO strings
    pq.write_table(pa.table({"user_id": ["u1", "u1"], "type": ["view", "cart"],
                             "ts": pa.array([datetime(2016, 5, 9), datetime(2016, 5, 9, 1)], pa.timestamp("ms"))}), table)
    assert [e.ts for res in logs.iter_events(table) for e in res.events.events] == [day, day + 3_600_000]


def test_a_txt_log_is_told_the_real_format_choices(tmp_path, capsys):
    log = tmp_path / "clicks.txt"
    log.write_text("u1\t1793491200000\tview\n")
    assert main(["score", str(log), "--out", str(tmp_path / "a.jsonl"), "-q"]) == 2
    err = capsys.readouterr().err
    suggested = re.search(r"--format (\S+)", err).group(1).split("|")
    assert suggested == ["jsonl", "csv", "parquet"]  # exactly --format's choices: no `tsv`
    assert "--format csv" in err


def test_topics_take_b_after_the_action(broker, capsys):
    # README: seqsentry topics create -b localhost:9092 clicks / topics describe -b localhost:9092 clicks
    assert main(["topics", "create", "-b", broker.bootstrap, "first-hour-a", "--partitions", "2"]) == 0
    assert main(["topics", "describe", "-b", broker.bootstrap, "first-hour-a"]) == 0
    assert "first-hour-a: 2 partitions" in capsys.readouterr().out
    assert main(["topics", "-b", broker.bootstrap, "list"]) == 0  # before the action still works
    assert "first-hour-a\t2 partitions" in capsys.readouterr().out
    assert main(["topics", "describe", "first-hour-a", "-b", broker.bootstrap]) == 0


def test_replay_advice_for_a_missing_topic_is_a_command_that_works(broker, tmp_path, capsys):
    log = tmp_path / "x.jsonl"
    log.write_text('{"user_id": "u", "ts": 1793491200000, "type": "view"}\n')
    assert main(["replay", str(log), "-b", broker.bootstrap, "-t", "first-hour-missing", "-q"]) == 2
    advice = re.search(r"`seqsentry (topics create [^`]*)`", capsys.readouterr().err).group(1)
    assert f"-b {broker.bootstrap}" in advice
    assert main(advice.split()) == 0
    assert main(["replay", str(log), "-b", broker.bootstrap, "-t", "first-hour-missing", "-q"]) == 0


def test_alerts_from_beginning_shows_the_alerts_already_there(broker, topic, capsys):
    from stream import kafka

    prod = kafka.producer(broker.bootstrap)
    for i in range(2):
        alert = {"user_id": f"u{i}", "severity": "high", "score": 0.99, "event_time": 1793491200000,
                 "model_version": "m", "explanation": [{"type": "view"}]}
        prod.produce(topic, orjson.dumps(alert), f"u{i}".encode())
    assert prod.flush(10) == 0
    # README: seqsentry alerts -b localhost:9092 --from-beginning
    assert main(["alerts", "-b", broker.bootstrap, "-t", topic, "--from-beginning", "--json", "--idle-exit", "3"]) == 0
    shown = [json.loads(line)["user_id"] for line in capsys.readouterr().out.splitlines()]
    assert sorted(shown) == ["u0", "u1"]


def test_paced_replay_prints_progress_while_it_runs(broker, topic, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(replay, "PROGRESS_LINE_S", 0.3)  # (30 s in real use)
    log = tmp_path / "minute.jsonl"  # one event a second for two minutes: 2 s at 60x
    log.write_text("".join(json.dumps({"user_id": f"u{i % 7}", "ts": 1793491200000 + i * 1000, "type": "view"}) + "\n"
                           for i in range(121)))
    # README: seqsentry replay traffic.jsonl.gz -b localhost:9092 --speed 60
    assert main(["replay", str(log), "-b", broker.bootstrap, "-t", topic, "--speed", "60"]) == 0
    err = capsys.readouterr().err
    assert "pacing" in err and "60x faster than recorded" in err
    lines = [line for line in err.splitlines() if line.startswith("replay: ") and "events sent at 60x" in line]
    assert len(lines) >= 3, err  # during the replay, not only at its end
    assert "event time 2026-" in lines[-1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_demo_runs_on_a_broker_made_by_seqsentry_broker(tiny_model, tmp_path, capsys):
    port = _free_port()  # `seqsentry broker` makes events-dlq with 4 partitions; the demo's own would have 1
    proc = subprocess.Popen([sys.executable, "-m", "stream.cli", "broker", "--port", str(port)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert "topics: events, events-dlq, alerts" in proc.stdout.readline()
        _, reg = tiny_model
        # README: seqsentry demo -b localhost:9092 (here small, on the tiny model)
        code = main(["demo", "-b", f"127.0.0.1:{port}", "--events", "1500", "--rate", "0", "--no-live",
                     "--registry", str(reg), "--out", str(tmp_path / "demo"), "--metrics-port", "0", "--device", "cpu"])
        assert code == 0, capsys.readouterr().err[-2000:]
        summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
        assert summary["events_replayed"] == 1500 and summary["events_consumed"] >= 1500
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize("argv", [["topics", "describe", "--help"], ["topics", "create", "--help"]])
def test_topics_actions_have_their_own_help(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: seqsentry {' '.join(argv[:2])}" in out and "--bootstrap" in out


@pytest.mark.parametrize("command", ["run", "faust"])
def test_a_settings_error_is_told_before_the_runtime_loads(command):
    # README: a value of the wrong type or range stops the command with one line naming it
    code = ("import sys; from stream.cli import main; "
            f"code = main([{command!r}, '--max-batch-size', '-1', '-b', 'localhost:1']); "
            "print(code, sorted(m for m in ('torch', 'transformers', 'faust', 'onnxruntime') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "2 []", proc.stdout + proc.stderr  # seconds of torch import before the line
    assert "--max-batch-size: Input should be greater than 0" in proc.stderr


def test_topics_count_every_message_just_replayed(broker, topic, tmp_path, capsys):
    from training import synth

    log = tmp_path / "traffic.jsonl"
    logs.write_log(log, [synth.generate_list(events=3000, seed=5)])
    # README: seqsentry replay traffic.jsonl.gz -b localhost:9092 -t events, then topics list / describe
    assert main(["replay", str(log), "-b", broker.bootstrap, "-t", topic, "-q"]) == 0
    assert main(["topics", "list", "-b", broker.bootstrap]) == 0
    assert f"{topic}\t4 partitions\t3,000 messages" in capsys.readouterr().out  # not the broker's lagging marks
    assert main(["topics", "describe", "-b", broker.bootstrap, topic]) == 0
    ends = [int(m.replace(",", "")) for m in re.findall(r"offsets 0 \.\. ([\d,]+)", capsys.readouterr().out)]
    assert len(ends) == 4 and sum(ends) == 3000
