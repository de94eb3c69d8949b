"""Typed settings of `seqsentry run` / `seqsentry faust`, resolved by pydantic-settings.

pydantic-settings (over a hand-written merge): every value is parsed by its annotation
whichever source it came from (``SEQSENTRY_MAX_USERS=5000`` is an int, not a string),
validated by the same rules, and the sources' precedence is one declared tuple instead
of an if-chain per field. Precedence: command-line flag > ``SEQSENTRY_*`` variable >
YAML file (``--config``) > default. ``kafka_options`` is merged key by key across the
sources (the YAML file's settings, then the environment's JSON object, then -X flags).
"""

from __future__ import annotations

import json
import os
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, InitSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from stream import events

ENV_PREFIX = "SEQSENTRY_"
KafkaValue = str | int | float | bool

# The file's values while resolve_config() runs. Outside it a ServiceConfig is built from its
# arguments and defaults only, as a plain value object (tests, benchmarks, the demo), so a
# stray SEQSENTRY_* variable cannot change what such code asked for.
_RESOLVING: ContextVar[dict[str, Any] | None] = ContextVar("seqsentry_config_file_values", default=None)


class ServiceConfig(BaseSettings):
    """Everything `seqsentry run` can be told (flags, SEQSENTRY_* variables or a YAML file)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", validate_assignment=True)

    bootstrap: str = Field(min_length=1)
    topic: str = "events"
    alerts_topic: str = "alerts"
    dlq_topic: str = "events-dlq"
    group: str = "seqsentry"
    registry: Path | None = Path("registry")
    model: Path | None = None  # an explicit artifact overrides the registry (and disables hot reload)
    shadow: Path | None = None
    kafka_options: dict[str, KafkaValue] = Field(default_factory=dict)
    device: str = "auto"
    runtime: Literal["auto", "torch", "onnx"] = "auto"  # auto: ONNX Runtime for classifiers on CPU when installed
    max_batch_size: int = Field(256, gt=0)
    max_wait_ms: float = Field(20.0, ge=0)
    max_queue_windows: int = Field(20_000, gt=0)
    consume_batch: int = Field(2_000, gt=0)
    poll_wait_ms: float = Field(5.0, ge=0)  # consume() returns after this even with fewer than consume_batch
    commit_interval_ms: float = Field(200.0, ge=0)  # completed work is committed at most this often
    cooldown_s: float = Field(600.0, ge=0)
    coalesce: bool = False
    max_message_bytes: int = Field(events.DEFAULT_MAX_BYTES, gt=0)
    # an event dated further than this after its message's broker timestamp is dead-lettered (bad-timestamp)
    max_clock_skew_s: float = Field(3600.0, gt=0)
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(9108, ge=0, le=65535)
    reload_interval_s: float = Field(5.0, gt=0)
    exactly_once: bool = False  # Kafka transactions: alerts, dead letters and offsets commit atomically
    transactional_id: str | None = None  # stable per instance; default seqsentry-<group>-<hostname>
    stall_timeout_s: float = Field(120.0, gt=0)  # /healthz fails when behind yet consuming nothing this long
    startup_timeout_s: float = Field(60.0, ge=0)  # keep retrying an unreachable cluster / missing topics
    explain_top: int = Field(5, ge=0)
    max_users: int | None = Field(None, gt=0)  # per partition; default: the model's window config
    audit_log: Path | None = None  # append "partition offset" of every scored event (crash tests)

    @property
    def max_clock_skew_ms(self) -> int:
        """``max_clock_skew_s`` in the milliseconds of event and broker timestamps."""
        return int(self.max_clock_skew_s * 1000)

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource) -> tuple[PydanticBaseSettingsSource, ...]:
        file_values = _RESOLVING.get()
        if file_values is None:
            return (init_settings,)
        return init_settings, env_settings, InitSettingsSource(settings_cls, init_kwargs=file_values)


def field_names() -> set[str]:
    """The setting names (also the YAML keys and, upper-cased with SEQSENTRY_, the variables)."""
    return set(ServiceConfig.model_fields)


def read_config_file(path: Path) -> dict[str, Any]:
    """The settings of a YAML file; unknown keys are refused in one line."""
    values = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping of settings, got {type(values).__name__}")
    unknown = set(values) - field_names()
    if unknown:
        raise ValueError(f"{path}: unknown settings {sorted(unknown)}")
    return values


def _env_kafka_options() -> dict[str, Any]:
    raw = os.environ.get(f"{ENV_PREFIX}KAFKA_OPTIONS")
    if raw is None:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise ValueError(f"{ENV_PREFIX}KAFKA_OPTIONS must be a JSON object, e.g. '{{\"security.protocol\": \"SSL\"}}'")
    return value


def _one_line(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        name = ".".join(str(x) for x in err["loc"]) or "settings"
        parts.append(f"{name}: {err['msg']} (got {err['input']!r})" if err["type"] != "missing" else f"{name}: required")
    return "invalid settings: " + "; ".join(parts)


def resolve_config(flags: dict[str, Any], config_file: Path | None) -> ServiceConfig:
    """Merge flag values (None = not given), SEQSENTRY_* variables and a YAML file into a ServiceConfig.

    Errors (unknown keys, a value of the wrong type or range, no bootstrap servers) are
    raised as one-line ``ValueError``s naming the setting.
    """
    file_values = read_config_file(config_file) if config_file is not None else {}
    given = {k: v for k, v in flags.items() if v is not None and k != "kafka_options"}
    unknown = set(given) - field_names()
    if unknown:
        raise ValueError(f"unknown settings {sorted(unknown)}")
    options = {**(file_values.get("kafka_options") or {}), **_env_kafka_options(), **(flags.get("kafka_options") or {})}
    given["kafka_options"] = options  # merged above, key by key: no source replaces another's whole dict
    token = _RESOLVING.set({k: v for k, v in file_values.items() if k != "kafka_options"})
    try:
        return ServiceConfig(**given)
    except ValidationError as exc:
        if any(e["loc"] == ("bootstrap",) and e["type"] == "missing" for e in exc.errors()):
            raise ValueError("no Kafka bootstrap servers: pass --bootstrap, set SEQSENTRY_BOOTSTRAP, "
                             "or put bootstrap: in --config") from None
        raise ValueError(_one_line(exc)) from None
    finally:
        _RESOLVING.reset(token)
