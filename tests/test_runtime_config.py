"""Settings: precedence flags > SEQSENTRY_* > YAML > defaults, every field typed and validated."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from stream.commands.service import resolve_config
from stream.runtime.config import ServiceConfig, field_names

EXAMPLE = Path(__file__).parent.parent / "seqsentry.example.yaml"

# One value per setting, each different from its default, as the environment spells it.
EVERY_FIELD_FROM_ENV = {
    "bootstrap": ("kafka-1:9092", "kafka-1:9092"),
    "topic": ("ev", "ev"),
    "alerts_topic": ("al", "al"),
    "dlq_topic": ("dl", "dl"),
    "group": ("grp", "grp"),
    "offset_reset": ("latest", "latest"),
    "registry": ("/srv/registry", Path("/srv/registry")),
    "model": ("/srv/model", Path("/srv/model")),
    "shadow": ("/srv/shadow", Path("/srv/shadow")),
    "kafka_options": ('{"security.protocol": "SSL"}', {"security.protocol": "SSL"}),
    "device": ("cpu", "cpu"),
    "runtime": ("onnx", "onnx"),
    "max_batch_size": ("512", 512),
    "max_wait_ms": ("7.5", 7.5),
    "max_queue_windows": ("1000", 1000),
    "consume_batch": ("100", 100),
    "poll_wait_ms": ("2", 2.0),
    "commit_interval_ms": ("50", 50.0),
    "cooldown_s": ("30", 30.0),
    "coalesce": ("true", True),
    "max_message_bytes": ("4096", 4096),
    "max_clock_skew_s": ("120", 120.0),
    "metrics_host": ("0.0.0.0", "0.0.0.0"),
    "metrics_port": ("9200", 9200),
    "reload_interval_s": ("1.5", 1.5),
    "exactly_once": ("1", True),
    "transactional_id": ("tx-1", "tx-1"),
    "stall_timeout_s": ("30", 30.0),
    "ack_timeout_s": ("2.5", 2.5),
    "startup_timeout_s": ("0", 0.0),
    "explain_top": ("3", 3),
    "max_users": ("5000", 5000),
    "audit_log": ("/tmp/audit", Path("/tmp/audit")),
}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """No SEQSENTRY_* setting from the machine running the tests."""
    for name in field_names():
        monkeypatch.delenv(f"SEQSENTRY_{name.upper()}", raising=False)


def test_every_field_can_be_set_through_the_environment_with_its_type(monkeypatch):
    assert set(EVERY_FIELD_FROM_ENV) == field_names()  # a new setting must be added here too
    for name, (raw, _) in EVERY_FIELD_FROM_ENV.items():
        monkeypatch.setenv(f"SEQSENTRY_{name.upper()}", raw)
    cfg = resolve_config({}, None)
    for name, (_, expected) in EVERY_FIELD_FROM_ENV.items():
        value = getattr(cfg, name)
        assert value == expected and type(value) is type(expected), name


def test_a_number_from_the_environment_is_a_number(monkeypatch):
    monkeypatch.setenv("SEQSENTRY_MAX_USERS", "5000")
    assert resolve_config({"bootstrap": "k:9092"}, None).max_users == 5000


def test_config_resolution_prefers_flags_then_env_then_yaml(tmp_path, monkeypatch):
    cfg_file = tmp_path / "s.yaml"
    cfg_file.write_text("bootstrap: yaml:9092\nmax_batch_size: 64\nmax_wait_ms: 7\nkafka_options: {client.id: y}\n")
    monkeypatch.setenv("SEQSENTRY_MAX_BATCH_SIZE", "128")
    cfg = resolve_config({"max_wait_ms": 3.0, "kafka_options": {"security.protocol": "SSL"}}, cfg_file)
    assert (cfg.bootstrap, cfg.max_batch_size, cfg.max_wait_ms) == ("yaml:9092", 128, 3.0)
    assert cfg.kafka_options == {"client.id": "y", "security.protocol": "SSL"}


def test_unset_settings_take_their_defaults():
    cfg = resolve_config({"bootstrap": "k:9092"}, None)
    assert (cfg.topic, cfg.max_batch_size, cfg.registry, cfg.max_users) == ("events", 256, Path("registry"), None)


def test_flags_not_given_fall_through_to_the_next_source(monkeypatch):
    monkeypatch.setenv("SEQSENTRY_TOPIC", "from-env")
    assert resolve_config({"bootstrap": "k:9092", "topic": None}, None).topic == "from-env"


def test_kafka_options_merge_key_by_key_from_yaml_env_and_flags(tmp_path, monkeypatch):
    cfg_file = tmp_path / "s.yaml"
    cfg_file.write_text("bootstrap: k:9092\nkafka_options: {client.id: y, acks: '1'}\n")
    monkeypatch.setenv("SEQSENTRY_KAFKA_OPTIONS", '{"acks": "all", "linger.ms": "5"}')
    cfg = resolve_config({"kafka_options": {"linger.ms": "0"}}, cfg_file)
    assert cfg.kafka_options == {"client.id": "y", "acks": "all", "linger.ms": "0"}


def test_an_unknown_key_in_the_yaml_file_is_refused_in_one_line(tmp_path):
    cfg_file = tmp_path / "s.yaml"
    cfg_file.write_text("bootstrap: k:9092\nmax_batch: 5\n")
    with pytest.raises(ValueError) as err:
        resolve_config({}, cfg_file)
    assert str(err.value) == f"{cfg_file}: unknown settings ['max_batch']"


def test_an_unknown_setting_given_directly_is_refused():
    with pytest.raises(ValueError, match="max_batch"):
        ServiceConfig(bootstrap="k:9092", max_batch=5)


def test_a_value_of_the_wrong_type_is_refused_in_one_line_naming_the_setting(monkeypatch):
    monkeypatch.setenv("SEQSENTRY_MAX_USERS", "lots")
    with pytest.raises(ValueError) as err:
        resolve_config({"bootstrap": "k:9092"}, None)
    assert "\n" not in str(err.value) and str(err.value).startswith("invalid settings: SEQSENTRY_MAX_USERS:")


def test_a_value_out_of_range_is_refused(tmp_path):
    with pytest.raises(ValueError, match="--max-batch-size"):
        resolve_config({"bootstrap": "k:9092", "max_batch_size": 0}, None)


def test_a_bad_value_from_the_environment_names_the_variable(monkeypatch):
    monkeypatch.setenv("SEQSENTRY_MAX_BATCH_SIZE", "abc")
    with pytest.raises(ValueError) as err:
        resolve_config({"bootstrap": "k:9092"}, None)
    assert str(err.value).startswith("invalid settings: SEQSENTRY_MAX_BATCH_SIZE: Input should be a valid integer")
    assert str(err.value).endswith("(got 'abc')")


def test_a_bad_value_from_the_config_file_names_the_key_and_the_file(tmp_path):
    cfg_file = tmp_path / "s.yaml"
    cfg_file.write_text("bootstrap: k:9092\nmax_batch_size: abc\n")
    with pytest.raises(ValueError) as err:
        resolve_config({}, cfg_file)
    assert str(err.value).startswith(f"invalid settings: max_batch_size in {cfg_file}: Input should be a valid integer")


def test_a_bad_value_from_a_flag_names_the_flag():
    with pytest.raises(ValueError) as err:
        resolve_config({"bootstrap": "k:9092", "max_batch_size": 0}, None)
    assert str(err.value) == "invalid settings: --max-batch-size: Input should be greater than 0 (got 0)"


def test_a_bad_value_given_by_two_sources_names_the_one_that_was_used(tmp_path, monkeypatch):
    cfg_file = tmp_path / "s.yaml"
    cfg_file.write_text("bootstrap: k:9092\nmax_batch_size: 64\n")
    monkeypatch.setenv("SEQSENTRY_MAX_BATCH_SIZE", "-1")
    with pytest.raises(ValueError, match="^invalid settings: SEQSENTRY_MAX_BATCH_SIZE: "):
        resolve_config({}, cfg_file)


def test_a_bad_kafka_option_in_the_config_file_names_its_key_and_the_file_once(tmp_path):
    cfg_file = tmp_path / "s.yaml"
    cfg_file.write_text("bootstrap: k:9092\nkafka_options: {acks: [1]}\n")
    with pytest.raises(ValueError) as err:
        resolve_config({}, cfg_file)
    assert str(err.value).startswith(f"invalid settings: kafka_options.acks in {cfg_file}: Input should be a valid "
                                     "string or a valid integer")
    assert str(err.value).count("kafka_options.acks") == 1


def test_a_config_file_yaml_cannot_parse_is_one_line_naming_the_file_and_the_line(tmp_path):
    cfg_file = tmp_path / "s.yaml"
    cfg_file.write_text("bootstrap: k:9092\n  topic: events\n")  # a stray indent: a mapping inside a string
    with pytest.raises(ValueError) as err:
        resolve_config({}, cfg_file)
    assert str(err.value) == f"invalid config file {cfg_file}: mapping values are not allowed here, line 2"


def test_a_config_file_that_is_not_a_mapping_of_settings_is_one_line(tmp_path):
    cfg_file = tmp_path / "s.yaml"
    cfg_file.write_text("- bootstrap: k:9092\n- topic: events\n")
    with pytest.raises(ValueError) as err:
        resolve_config({}, cfg_file)
    assert str(err.value) == (f"invalid config file {cfg_file}: expected a mapping of settings (key: value lines), "
                              "got a list")


def test_kafka_options_in_the_config_file_that_are_not_a_mapping_are_one_line(tmp_path):
    cfg_file = tmp_path / "s.yaml"
    cfg_file.write_text("bootstrap: k:9092\nkafka_options: security.protocol=SSL\n")
    with pytest.raises(ValueError, match=f"^invalid config file {cfg_file}: kafka_options must be a mapping of "
                                         "librdkafka settings, .*got a str$"):
        resolve_config({}, cfg_file)


def test_a_missing_config_file_is_named():
    with pytest.raises(FileNotFoundError, match="^no such config file: nope.yaml$"):
        resolve_config({}, Path("nope.yaml"))


def test_the_offset_reset_can_be_set_in_the_config_file(tmp_path):
    cfg_file = tmp_path / "s.yaml"
    cfg_file.write_text("bootstrap: k:9092\noffset_reset: latest\n")
    assert resolve_config({}, cfg_file).offset_reset == "latest"


def test_an_unknown_offset_reset_is_refused_naming_the_flag():
    with pytest.raises(ValueError, match="^invalid settings: --offset-reset: Input should be 'earliest' or 'latest'"):
        resolve_config({"bootstrap": "k:9092", "offset_reset": "newest"}, None)


def _example_settings() -> list[str]:
    """The example file's setting lines (``# name: value  # comment``), uncommented."""
    return [m.group(1) for line in EXAMPLE.read_text().splitlines() if (m := re.match(r"# ([a-z_]+: .*)$", line))]


def test_the_example_config_file_loads_as_it_is():
    assert resolve_config({"bootstrap": "k:9092"}, EXAMPLE) == ServiceConfig(bootstrap="k:9092")


def test_the_example_config_file_names_every_setting():
    assert [line.split(":")[0] for line in _example_settings()] == list(ServiceConfig.model_fields)


def test_the_example_config_file_states_every_default_truly(tmp_path):
    uncommented = tmp_path / "all.yaml"
    uncommented.write_text("\n".join(_example_settings()) + "\n")  # bootstrap's example value, the flag overrides
    assert resolve_config({"bootstrap": "k:9092"}, uncommented) == ServiceConfig(bootstrap="k:9092")


def test_an_unknown_runtime_is_refused():
    with pytest.raises(ValueError, match="runtime"):
        resolve_config({"bootstrap": "k:9092", "runtime": "tensorrt"}, None)


def test_missing_bootstrap_servers_say_how_to_give_them():
    with pytest.raises(ValueError, match="pass --bootstrap, set SEQSENTRY_BOOTSTRAP, or put bootstrap: in --config"):
        resolve_config({}, None)


def test_a_config_built_in_code_ignores_the_environment(monkeypatch):
    # tests, benchmarks and the demo build their ServiceConfig explicitly: a stray variable must not leak in
    monkeypatch.setenv("SEQSENTRY_TOPIC", "from-env")
    assert ServiceConfig(bootstrap="k:9092").topic == "events"
