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
