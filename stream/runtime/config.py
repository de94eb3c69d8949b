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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, InitSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from stream import events
from stream.kafka import is_secret
from stream.runtime import defaults

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
    topic: str = defaults.TOPIC
    alerts_topic: str = defaults.ALERTS_TOPIC
    dlq_topic: str = defaults.DLQ_TOPIC
    group: str = defaults.GROUP
    # what a group without committed offsets reads first (librdkafka's auto.offset.reset; a -X one wins)
    offset_reset: Literal["earliest", "latest"] = defaults.OFFSET_RESET
    registry: Path | None = defaults.REGISTRY
    model: Path | None = None  # an explicit artifact overrides the registry (and disables hot reload)
    shadow: Path | None = None
    kafka_options: dict[str, KafkaValue] = Field(default_factory=dict)
    device: str = defaults.DEVICE
    # auto: ONNX Runtime for classifiers on CPU when installed
    runtime: Literal["auto", "torch", "onnx"] = defaults.RUNTIME
    max_batch_size: int = Field(defaults.MAX_BATCH_SIZE, gt=0)
    max_wait_ms: float = Field(defaults.MAX_WAIT_MS, ge=0)
    max_queue_windows: int = Field(defaults.MAX_QUEUE_WINDOWS, gt=0)
    consume_batch: int = Field(defaults.CONSUME_BATCH, gt=0)
    # consume() returns after this even with fewer than consume_batch
    poll_wait_ms: float = Field(defaults.POLL_WAIT_MS, ge=0)
    # completed work is committed at most this often
    commit_interval_ms: float = Field(defaults.COMMIT_INTERVAL_MS, ge=0)
    cooldown_s: float = Field(defaults.COOLDOWN_S, ge=0)
    coalesce: bool = defaults.COALESCE
    max_message_bytes: int = Field(events.DEFAULT_MAX_BYTES, gt=0)
    # an event dated further than this after it was received (pipeline.trusted_clock) is dead-lettered (bad-timestamp)
    max_clock_skew_s: float = Field(defaults.MAX_CLOCK_SKEW_S, gt=0)
    metrics_host: str = defaults.METRICS_HOST
    metrics_port: int = Field(defaults.METRICS_PORT, ge=0, le=65535)
    reload_interval_s: float = Field(defaults.RELOAD_INTERVAL_S, gt=0)
    # Kafka transactions: alerts, dead letters and offsets commit atomically
    exactly_once: bool = defaults.EXACTLY_ONCE
    transactional_id: str | None = None  # stable per instance; default seqsentry-<group>-<hostname>
    # /healthz fails when behind yet consuming nothing this long
    stall_timeout_s: float = Field(defaults.STALL_TIMEOUT_S, gt=0)
    # /readyz fails once an alert or dead letter has waited this long for the broker's ack
    ack_timeout_s: float = Field(defaults.ACK_TIMEOUT_S, gt=0)
    # keep retrying an unreachable cluster / missing topics
    startup_timeout_s: float = Field(defaults.STARTUP_TIMEOUT_S, ge=0)
    explain_top: int = Field(defaults.EXPLAIN_TOP, ge=0)
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


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """yaml's complaint in one line, with the (1-based) line it points at."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"{problem}, line {mark.line + 1}" if mark is not None else problem


def read_config_file(path: Path) -> dict[str, Any]:
    """The settings of a YAML file; a file yaml cannot parse, or one that is not a mapping of
    settings, or unknown keys are refused in one line naming the file."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise FileNotFoundError(f"no such config file: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"invalid config file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        values = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"invalid config file {path}: {_yaml_problem(exc)}") from None
    if not isinstance(values, dict):
        raise ValueError(f"invalid config file {path}: expected a mapping of settings (key: value lines), "
                         f"got a {type(values).__name__}")
    unknown = set(values) - field_names()
    if unknown:
        raise ValueError(f"{path}: unknown settings {sorted(map(str, unknown))}")
    options = values.get("kafka_options")
    if options is not None and not isinstance(options, dict):
        raise ValueError(f"invalid config file {path}: kafka_options must be a mapping of librdkafka settings, "
                         f"e.g. {{security.protocol: SASL_SSL}}, got a {type(options).__name__}")
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


def _env_name(name: str) -> str | None:
    """The variable that sets ``name``, as spelt in the environment (pydantic-settings ignores case)."""
    wanted = f"{ENV_PREFIX}{name}".upper()
    return next((k for k in os.environ if k.upper() == wanted), None)


@dataclass(frozen=True)
class _Sources:
    """What each source gave, to name where a refused value came from in the user's own words."""

    flags: dict[str, Any]
    flag_options: dict[str, Any]
    env_options: dict[str, Any]
    file_values: dict[str, Any]
    config_file: Path | None

    def name(self, loc: tuple[str | int, ...]) -> str:
        """The flag (``--max-batch-size``), variable (``SEQSENTRY_MAX_BATCH_SIZE``) or file key
        (``max_batch_size in seqsentry.yaml``) that gave the value at ``loc``; flags win, then the
        environment, then the file, so the first that has it is the one whose value was used."""
        field = str(loc[0]) if loc else "settings"
        if field == "kafka_options" and len(loc) > 1:  # merged key by key: name the key's source
            key = str(loc[1])
            if key in self.flag_options:
                return f"-X {key}"
            if key in self.env_options:
                return f"{ENV_PREFIX}KAFKA_OPTIONS[{key!r}]"
            return f"kafka_options.{key} in {self.config_file}"
        if field in self.flags:
            return "--" + field.replace("_", "-")
        env = _env_name(field)
        if env is not None:
            return env
        if field in self.file_values:
            return f"{field} in {self.config_file}"
        return ".".join(str(x) for x in loc)


def _one_line(exc: ValidationError, sources: _Sources) -> str:
    found: dict[str, list] = {}
    for err in exc.errors():
        found.setdefault(sources.name(err["loc"]), []).append(err)
    parts = []
    for name, errs in found.items():
        if errs[0]["type"] == "missing":
            parts.append(f"{name}: required")
            continue
        # each member of a union (a kafka_options value) refuses the value: one clause for all of them
        msgs = [errs[0]["msg"], *(e["msg"].removeprefix("Input should be ") for e in errs[1:])]
        parts.append(f"{name}: {' or '.join(msgs)} ({_shown_input(errs[0]['loc'], errs[0]['input'])})")
    return "invalid settings: " + "; ".join(parts)


def _shown_input(loc: tuple[str | int, ...], value: object) -> str:
    """How a refused value is quoted: a secret setting's value, whatever its type (a number, a list
    holding the password), is never echoed - only its type; nor is a whole librdkafka settings map."""
    if loc and loc[0] == "kafka_options" and (len(loc) < 2 or is_secret(str(loc[1]))):
        return f"got a {type(value).__name__}; the value is not shown: it may hold a secret"
    return f"got {value!r}"


def resolve_config(flags: dict[str, Any], config_file: Path | None) -> ServiceConfig:
    """Merge flag values (None = not given), SEQSENTRY_* variables and a YAML file into a ServiceConfig.

    Errors (unknown keys, a value of the wrong type or range, no bootstrap servers) are
    raised as one-line ``ValueError``s naming where the value came from: the flag, the
    variable, or the file and its key.
    """
    file_values = read_config_file(config_file) if config_file is not None else {}
    given = {k: v for k, v in flags.items() if v is not None and k != "kafka_options"}
    unknown = set(given) - field_names()
    if unknown:
        raise ValueError(f"unknown settings {sorted(unknown)}")
    sources = _Sources(dict(given), flags.get("kafka_options") or {}, _env_kafka_options(), file_values, config_file)
    options = {**(file_values.get("kafka_options") or {}), **sources.env_options, **sources.flag_options}
    given["kafka_options"] = options  # merged above, key by key: no source replaces another's whole dict
    token = _RESOLVING.set({k: v for k, v in file_values.items() if k != "kafka_options"})
    try:
        return ServiceConfig(**given)
    except ValidationError as exc:
        if any(e["loc"] == ("bootstrap",) and e["type"] == "missing" for e in exc.errors()):
            raise ValueError("no Kafka bootstrap servers: pass --bootstrap, set SEQSENTRY_BOOTSTRAP, "
                             "or put bootstrap: in --config") from None
        raise ValueError(_one_line(exc, sources)) from None
    finally:
        _RESOLVING.reset(token)
