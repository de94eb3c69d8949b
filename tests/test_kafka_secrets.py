"""Kafka secrets: from a file or the environment, never echoed in errors or logs."""

from __future__ import annotations

import subprocess
import sys

import pytest

from stream import kafka


def test_a_secret_setting_is_read_from_the_file_its_value_names(tmp_path):
    secret = tmp_path / "kafka"
    secret.write_text("hunter2-secret\n")
    config = kafka.client_config("k:9092", {"sasl.password": f"@{secret}"})
    assert config["sasl.password"] == "hunter2-secret"


def test_a_setting_that_is_not_secret_keeps_a_leading_at_sign():
    assert kafka.client_config("k:9092", {"client.id": "@team"})["client.id"] == "@team"


def test_sasl_password_comes_from_the_environment_when_no_setting_gives_one(monkeypatch):
    monkeypatch.setenv("SEQSENTRY_KAFKA_SASL_PASSWORD", "from-env")
    assert kafka.client_config("k:9092", {})["sasl.password"] == "from-env"
    assert kafka.client_config("k:9092", {"sasl.password": "from-flag"})["sasl.password"] == "from-flag"


def test_an_unreadable_secret_file_is_one_line_naming_the_setting_and_path(tmp_path):
    with pytest.raises(ValueError, match=r"sasl.password=@.*missing: cannot read the secret file"):
        kafka.client_config("k:9092", {"sasl.password": f"@{tmp_path / 'missing'}"})


def test_a_malformed_option_is_refused_without_echoing_its_text():
    with pytest.raises(ValueError) as exc:
        kafka.parse_options(["security.protocol=SASL_SSL", "hunter2-secret"])
    assert "#2" in str(exc.value) and "hunter2" not in str(exc.value)


def test_a_setting_librdkafka_refuses_never_echoes_a_secret_value():
    with pytest.raises(ValueError) as exc:  # the password pasted into the wrong setting
        kafka.producer("k:9092", {"sasl.password": "hunter2-secret", "security.protocol": "hunter2-secret"})
    assert "invalid Kafka settings" in str(exc.value) and "hunter2" not in str(exc.value)


def test_sasl_jaas_config_is_refused_in_one_line_naming_the_librdkafka_settings(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "stream.cli", "run", "-b", "127.0.0.1:1", "--registry", str(tmp_path),
                           "-X", 'sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required '
                                 'username="svc" password="hunter2-secret";', "--startup-timeout-s", "0"],
                          capture_output=True, text=True, timeout=60)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and len(err) == 1 and "Traceback" not in proc.stderr
    assert "sasl.jaas.config is a Java client setting" in err[0] and "sasl.password=@" in err[0]
    assert "hunter2" not in proc.stdout + proc.stderr


# ---- a secret of the wrong type is never echoed either (issue 20, item 6) ---------------------------------
WRONG_TYPES = [["hunter2-secret"], {"value": "hunter2-secret"}, [{"nested": "hunter2-secret"}]]


@pytest.mark.parametrize("value", WRONG_TYPES, ids=["list", "mapping", "nested"])
def test_a_wrong_type_secret_in_the_config_file_is_refused_without_its_value(tmp_path, value):
    import json

    from stream.runtime.config import resolve_config

    cfg = tmp_path / "s.yaml"
    cfg.write_text(f"bootstrap: k:9092\nkafka_options: {{sasl.password: {json.dumps(value)}}}\n")
    with pytest.raises(ValueError) as exc:
        resolve_config({}, cfg)
    line = str(exc.value)
    assert "kafka_options.sasl.password" in line and "not shown" in line and "hunter2" not in line
    assert "\n" not in line


@pytest.mark.parametrize("value", WRONG_TYPES, ids=["list", "mapping", "nested"])
def test_a_wrong_type_secret_in_seqsentry_kafka_options_is_refused_without_its_value(monkeypatch, value):
    import json

    from stream.runtime.config import resolve_config

    monkeypatch.setenv("SEQSENTRY_KAFKA_OPTIONS", json.dumps({"ssl.key.password": value}))
    with pytest.raises(ValueError) as exc:
        resolve_config({"bootstrap": "k:9092"}, None)
    assert "ssl.key.password" in str(exc.value) and "hunter2" not in str(exc.value)


def test_a_wrong_type_ordinary_setting_is_still_quoted():
    from stream.runtime.config import resolve_config

    with pytest.raises(ValueError, match=r"-X acks: .*\(got \[1\]\)"):
        resolve_config({"bootstrap": "k:9092", "kafka_options": {"acks": [1]}}, None)


def test_a_numeric_secret_is_scrubbed_from_librdkafkas_complaints():
    with pytest.raises(ValueError) as exc:  # a number is a valid setting value, and a password can be one
        kafka.producer("k:9092", {"sasl.password": 73513217, "security.protocol": "73513217"})
    assert "invalid Kafka settings" in str(exc.value) and "73513217" not in str(exc.value)
