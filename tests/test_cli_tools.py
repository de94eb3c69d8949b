"""A user's first hour: logs that mostly fail are refused loudly, topics can be managed, every
command or flag a message suggests exists, and help texts show defaults."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from stream import logs
from stream.cli import build_parser, main

STREAM = Path(__file__).resolve().parent.parent / "stream"
TAOBAO_ROWS = "1,2268318,2520377,pv,1511544070\n1,2333346,2520771,buy,1511561733\n" * 5


def test_score_of_a_mostly_rejected_log_exits_2_naming_the_fix(tiny_model, tmp_path, capsys):
    log = tmp_path / "swapped.csv"  # type and ts columns swapped: every ts is "pv"/"buy"
    log.write_text(TAOBAO_ROWS)
    code = main(["score", str(log), "--columns", "user_id,item_id,category_id,ts,type", "--model",
                 str(tiny_model[0].artifact), "--out", str(tmp_path / "a.jsonl"), "-q", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2
    assert "rejected 10 of 10 records" in err and "e.g." in err
    assert err.strip().splitlines()[-1].startswith("seqsentry score: error: 10 of 10 records rejected")


def test_score_warns_when_most_event_types_are_unknown_to_the_model(tiny_model, tmp_path, capsys):
    log = tmp_path / "taobao.csv"
    log.write_text(TAOBAO_ROWS)
    assert main(["score", str(log), "--columns", "user_id,item_id,category_id,type,ts", "--model",
                 str(tiny_model[0].artifact), "--out", str(tmp_path / "a.jsonl"), "-q", "--device", "cpu"]) == 0
    assert "never saw in training" in capsys.readouterr().err


def test_train_refuses_a_mostly_rejected_log_before_training(tmp_path, capsys):
    log = tmp_path / "taobao.csv"
    log.write_text(TAOBAO_ROWS)
    code = main(["train", str(log), "--columns", "user_id,ts,category_id,type,item_id", "--out", str(tmp_path),
                 "--no-registry", "-q"])
    assert code == 2
    assert "records rejected (mostly bad-timestamp" in capsys.readouterr().err


def test_a_log_refused_before_training_is_summarised_by_reason_with_an_example(tmp_path, capsys):
    log = tmp_path / "taobao.csv"
    log.write_text(TAOBAO_ROWS)
    main(["train", str(log), "--columns", "user_id,ts,category_id,type,item_id", "--out", str(tmp_path),
          "--no-registry", "-q"])
    err = capsys.readouterr().err
    assert "records (" in err and ": bad-timestamp - e.g. " in err  # the reason's line comes before the refusal
    assert err.index("bad-timestamp - e.g.") < err.index("records rejected (mostly bad-timestamp")


def test_replay_reports_what_the_detector_will_dead_letter(broker, topic, tmp_path, capsys):
    log = tmp_path / "x.jsonl"
    log.write_text('{"user_id": "u", "ts": "soon", "type": "view"}\n' * 4)
    assert main(["replay", str(log), "-b", broker.bootstrap, "-t", topic, "-q"]) == 2
    err = capsys.readouterr().err
    assert "rejected 4 of 4 records" in err and "bad-timestamp" in err


def test_topics_create_list_and_describe_with_offsets(broker, capsys):
    assert main(["topics", "create", "cli-topic-a", "--partitions", "2", "-b", broker.bootstrap]) == 0
    assert main(["topics", "list", "-b", broker.bootstrap]) == 0
    assert "cli-topic-a\t2 partitions\t0 messages" in capsys.readouterr().out
    assert main(["topics", "describe", "cli-topic-a", "-b", broker.bootstrap]) == 0
    out = capsys.readouterr().out
    assert "partition 0: offsets 0 .. 0" in out and "partition 1" in out


def test_describing_a_missing_topic_is_one_line(broker, capsys):
    assert main(["topics", "describe", "no-such-topic", "-b", broker.bootstrap]) == 2
    assert "seqsentry topics create no-such-topic" in capsys.readouterr().err


def _suggestions() -> list[tuple[str, str]]:
    """Every `seqsentry COMMAND ...` a message in the code suggests, with the file it is in."""
    found = []
    for path in STREAM.rglob("*.py"):
        for m in re.finditer(r"`seqsentry ([a-z]+)([^`]*)`", path.read_text()):
            found.append((path.name, m.group(0)))
    return found


@pytest.mark.parametrize("where,suggestion", _suggestions())
def test_every_suggested_command_and_flag_exists(where, suggestion):
    sub = next(a for a in build_parser()._actions if a.dest == "command")  # noqa: SLF001 - argparse's own API
    words = suggestion.strip("`").split()
    assert words[1] in sub.choices, f"{where}: {suggestion}"
    flags = {s for a in sub.choices[words[1]]._actions for s in a.option_strings}
    for flag in re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", " ".join(words[2:])):
        assert flag in flags, f"{where}: {suggestion} names {flag}"


def test_help_texts_show_defaults():
    text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()  # noqa: SLF001
    assert "(default: 0.005)" in text and "(default: auto)" in text


def _subcommand(name: str):
    return build_parser()._subparsers._group_actions[0].choices[name]  # noqa: SLF001 - argparse's own API


def test_run_help_states_the_true_defaults():
    from stream.runtime.config import ServiceConfig

    text = " ".join(_subcommand("run").format_help().split())  # argparse wraps lines anywhere
    for flag, name in (("--max-batch-size MAX_BATCH_SIZE", "max_batch_size"), ("--group GROUP", "group"),
                       ("--offset-reset {earliest,latest}", "offset_reset"), ("--cooldown-s COOLDOWN_S", "cooldown_s")):
        # " FLAG" is the option's own entry (the usage line has "[FLAG"); its default is the first after it
        stated = re.search(rf" {re.escape(flag)} .*?\(default: ([^)]*)\)", text).group(1)
        assert stated == str(ServiceConfig.model_fields[name].default), name


@pytest.mark.parametrize("command", ["run", "faust"])
def test_every_run_and_faust_option_states_the_settings_default(command):
    from stream.runtime.config import ServiceConfig

    for action in _subcommand(command)._actions:  # noqa: SLF001
        if action.dest == "help":
            continue
        # argparse's formatter adds a real argparse default; options defaulting to None must state theirs
        assert action.help and (action.default not in (None, []) or "(default: " in action.help), action.dest
        field = ServiceConfig.model_fields.get(action.dest)
        if field is not None and not field.is_required() and field.default is not None and not field.default_factory:
            assert action.help.endswith(f"(default: {field.default})"), action.dest  # the setting's, not a copy


def test_no_help_text_says_default_none():
    for name, parser in build_parser()._subparsers._group_actions[0].choices.items():  # noqa: SLF001
        assert "(default: None)" not in parser.format_help(), name


@pytest.mark.parametrize("command", ["run", "faust"])
def test_a_config_file_yaml_cannot_parse_is_one_line_not_a_traceback(command, tmp_path, capsys):
    cfg_file = tmp_path / "seqsentry.yaml"
    cfg_file.write_text("bootstrap: kafka-1:9092\n  topic: events\n")
    assert main([command, "--config", str(cfg_file)]) == 2
    assert capsys.readouterr().err == (f"seqsentry {command}: error: invalid config file {cfg_file}: "
                                       "mapping values are not allowed here, line 2\n")


def test_a_bad_number_in_the_environment_names_the_variable(monkeypatch, capsys):
    monkeypatch.setenv("SEQSENTRY_MAX_BATCH_SIZE", "abc")
    assert main(["run", "-b", "kafka-1:9092"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("seqsentry run: error: invalid settings: SEQSENTRY_MAX_BATCH_SIZE: ") and err.count("\n") == 1


@pytest.mark.parametrize("command", ["run", "faust"])
def test_a_missing_model_directory_is_named_before_kafka_is_waited_for(command, monkeypatch, capsys):
    from stream import kafka

    def no_kafka(*_args, **_kwargs):
        raise AssertionError("waited for Kafka before checking the model")

    monkeypatch.setattr(kafka, "wait_for_topics", no_kafka)
    monkeypatch.setattr(kafka, "check_reachable", no_kafka)
    assert main([command, "-b", "127.0.0.1:1", "--model", "nonexistent"]) == 2
    assert capsys.readouterr().err == f"seqsentry {command}: error: no such model directory: nonexistent\n"


@pytest.mark.parametrize("command", ["score", "evaluate"])
def test_a_missing_model_directory_is_named_offline(command, tmp_path, capsys):
    log = tmp_path / "events.jsonl"
    log.write_text('{"user_id": "u1", "ts": 1700000000000, "type": "view"}\n')
    assert main([command, str(log), "--model", "nonexistent", "--device", "cpu"]) == 2
    assert capsys.readouterr().err == f"seqsentry {command}: error: no such model directory: nonexistent\n"


def test_a_directory_without_meta_json_is_not_a_model_artifact(tmp_path, capsys):
    log = tmp_path / "events.jsonl"
    log.write_text('{"user_id": "u1", "ts": 1700000000000, "type": "view"}\n')
    assert main(["score", str(log), "--model", str(tmp_path), "--device", "cpu"]) == 2
    assert "is not a model artifact (no meta.json)" in capsys.readouterr().err


def test_log_options_reach_the_reader(tmp_path):
    args = build_parser().parse_args(["score", "x.csv", "--set", "type=click", "--map-values", "type:pv=view"])
    from stream.commands.log_options import log_spec

    spec = log_spec(args)
    assert spec.constants == {"type": "click"} and spec.value_maps == {"type": {"pv": "view"}}
    assert spec.ts_unit == "auto" and isinstance(spec, logs.LogSpec)


def test_the_embedded_broker_creates_the_topics_run_needs(capsys):
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "stream.cli", "broker", "--port", str(port), "--topic", "clicks"],
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "topics: clicks, clicks-dlq, alerts" in line
        assert main(["topics", "list", "-b", f"127.0.0.1:{port}"]) == 0
        listed = {row.split("\t")[0] for row in capsys.readouterr().out.splitlines()}
        assert {"clicks", "clicks-dlq", "alerts"} <= listed
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.slow
def test_ctrl_c_on_demo_stops_in_order_and_exits_130(tiny_model, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    _, reg = tiny_model
    proc = subprocess.Popen([sys.executable, "-m", "stream.cli", "demo", "--events", "40000", "--rate", "2000",
                             "--no-live", "--registry", str(reg), "--out", str(tmp_path / "demo"), "--metrics-port", "0",
                             "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = []
    deadline = time.monotonic() + 120
    for line in proc.stdout:
        seen.append(line)
        if "detector serving" in line or time.monotonic() > deadline:
            break
    time.sleep(3)
    proc.send_signal(signal.SIGINT)
    out = "".join(seen) + proc.communicate(timeout=90)[0]
    assert proc.returncode == 130, out[-2000:]
    assert "stopping: replay, then the detector" in out
    for bad in ("Traceback", "SystemError", "terminate called", "Connection refused"):
        assert bad not in out, out[-2000:]


def test_help_loads_no_heavy_library():
    import subprocess
    import sys

    code = ("import sys; from stream.cli import build_parser; build_parser().format_help(); "
            "print(sorted(m for m in ('torch', 'transformers', 'pydantic', 'numpy', 'pyarrow', 'rich.progress') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_train_warns_when_its_threshold_catches_none_of_the_injected_attackers():
    from stream.commands.train import catch_warning

    assert "none of the 12 attackers" in catch_warning({"attackers": 12, "detected": 0})
    assert catch_warning({"attackers": 12, "detected": 1}) is None
    assert catch_warning({"attackers": 0, "detected": 0}) is None  # nothing injected: nothing to say
