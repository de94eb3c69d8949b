"""How to read a log: :class:`LogSpec`, the parsers behind ``--map``/``--set``/``--map-values``,
and applying a spec to one decoded record.

Real logs rarely use the contract's column names: ``columns`` maps source names onto
contract fields (``{"visitorid": "user_id", "event": "type", "timestamp": "ts"}``) and
``ts_unit`` says how numeric timestamps are expressed. Nothing here touches a file or
pyarrow; the readers are :mod:`stream.log_readers`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Any, NamedTuple

from stream.errors import SeqsentryError

CONTRACT_FIELDS = (
    "user_id", "ts", "type", "event_id", "item_id", "category_id", "price", "quantity",
    "session_id", "device_id", "ip", "label", "attack",
)  # fmt: skip
TS_UNITS = {"ms": 1, "s": 1000, "us": 0.001, "ns": 0.000001}


class LogFormatError(SeqsentryError, ValueError):
    """A log's format or columns cannot be read; the message says what to pass instead."""


class Label(NamedTuple):
    """One user's row of a labels file."""

    label: int  # 1 abuse, 0 legitimate
    attack: str | None = None  # the kind of abuse
    since: int | None = None  # event time (ms) an abuse label applies from; earlier events stay normal


@dataclass
class LogSpec:
    """How to read a log: format, column mapping, timestamp unit, optional labels."""

    fmt: str | None = None
    columns: dict[str, str] = field(default_factory=dict)  # source column -> contract field
    column_names: list[str] | None = None  # for CSVs without a header row
    delimiter: str | None = None  # CSV; detected from the first line when None
    # auto: the unit is read off the magnitude - unambiguous for the contract's years 2000-2100,
    # where seconds, ms, us and ns each fill their own, non-overlapping range
    ts_unit: str = "auto"  # auto | ms | s | us | ns
    labels: dict[str, Label] | None = None  # stream.log_readers.read_labels
    chunk_size: int = 20_000
    constants: dict[str, str] = field(default_factory=dict)  # contract field -> value for every record
    value_maps: dict[str, dict[str, str]] = field(default_factory=dict)  # field -> {source value: value}

    def __post_init__(self) -> None:
        if self.ts_unit not in (*TS_UNITS, "auto"):
            raise LogFormatError(f"unknown ts unit {self.ts_unit!r}; use one of ms, s, us, ns, auto")
        bad = sorted((set(self.columns.values()) | set(self.constants) | set(self.value_maps)) - set(CONTRACT_FIELDS))
        if bad:
            raise LogFormatError(f"cannot map onto unknown contract field(s) {bad}; fields are {', '.join(CONTRACT_FIELDS)}")


def _pairs(items: Iterable[str], what: str, shape: str) -> dict[str, str]:
    """``["a=b", ...]`` -> ``{"a": "b", ...}``; ``what`` and ``shape`` name the option and its form in errors."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise LogFormatError(f"{what} {item!r} must look like {shape}")
        out[key] = value
    return out


def parse_column_map(items: Iterable[str]) -> dict[str, str]:
    """``["visitorid=user_id", "event=type"]`` -> ``{"visitorid": "user_id", "event": "type"}``."""
    return _pairs(items, "column mapping", "SOURCE=FIELD, e.g. visitorid=user_id")


def parse_constants(items: Iterable[str]) -> dict[str, str]:
    """``["type=click"]`` -> ``{"type": "click"}`` (a field set to one value on every record)."""
    return _pairs(items, "--set", "FIELD=VALUE, e.g. type=click")


def parse_value_maps(items: Iterable[str]) -> dict[str, dict[str, str]]:
    """``["type:pv=view,buy=purchase"]`` -> ``{"type": {"pv": "view", "buy": "purchase"}}``."""
    out: dict[str, dict[str, str]] = {}
    for item in items:
        name, sep, pairs = item.partition(":")
        mapping = dict(p.partition("=")[::2] for p in pairs.split(",")) if sep else {}
        if not name or not mapping or any(not k or not v for k, v in mapping.items()):
            raise LogFormatError(f"--map-values {item!r} must look like FIELD:FROM=TO[,FROM=TO...], e.g. type:pv=view")
        out.setdefault(name, {}).update(mapping)
    return out


def target(spec: LogSpec, column: str) -> str | None:
    """The contract field a log's ``column`` becomes under ``spec``: its mapping, else its own name -
    or None when another column is mapped onto that name (``--map session_id=user_id`` wins over a
    file's own ``user_id`` column, which is then dropped)."""
    if column in spec.columns:
        return spec.columns[column]
    return None if column in spec.columns.values() else column


def _convert_ts(value: Any, unit: str) -> Any:
    """A numeric timestamp in ``unit`` (integer or float), or a date/datetime (what CSV and Parquet
    readers make of an ISO date column; naive is UTC) -> integer epoch ms; anything else unchanged."""
    if isinstance(value, date):
        if not isinstance(value, datetime):
            value = datetime.combine(value, time())
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return int(round(value.timestamp() * 1000))
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    if unit == "auto":
        mag = abs(value)
        unit = "s" if mag < 1e11 else "ms" if mag < 1e14 else "us" if mag < 1e17 else "ns"
    scale = TS_UNITS[unit]
    if scale == 1 and isinstance(value, int):
        return value
    ms = value * scale
    return int(round(ms)) if ms == ms and abs(ms) < 1e18 else value  # NaN / huge: left for validation to refuse


def apply_spec(rec: dict[str, Any], spec: LogSpec) -> dict[str, Any]:
    """One decoded record as ``spec`` makes it: columns renamed, constants set, values mapped,
    ``ts`` converted to epoch ms, label (and attack) looked up."""
    if spec.columns:  # a column mapped onto a name wins over a column of that name (see target())
        mapped = spec.columns
        rec = {mapped.get(k, k): v for k, v in rec.items() if k in mapped or k not in mapped.values()}
    if spec.constants:
        rec.update(spec.constants)
    for name, mapping in spec.value_maps.items():
        value = rec.get(name)
        if value is not None:
            rec[name] = mapping.get(str(value), value)
    if "ts" in rec:
        rec["ts"] = _convert_ts(rec["ts"], spec.ts_unit)
    if spec.labels is not None and "user_id" in rec:
        label, attack, since = spec.labels.get(str(rec["user_id"]), (0, None, None))
        if label == 1 and since is not None and isinstance(rec.get("ts"), int) and rec["ts"] < since:
            label, attack = 0, None  # before the abuse began: a taken-over account's owner is still the owner
        rec["label"] = label
        if attack:
            rec["attack"] = attack
    return rec
