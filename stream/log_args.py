"""The command-line options that describe a recorded log, shared by every command that reads one.

(`seqsentry replay`, `score`, `train`, `evaluate`): one definition, so a log is described
the same way to each of them.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stream.logs import LogSpec


def log_args(p: argparse.ArgumentParser) -> None:
    """Add --format, --map, --columns, --delimiter, --ts-unit and --labels to ``p``."""
    p.add_argument("--format", dest="fmt", choices=["jsonl", "csv", "parquet"], help="log format (default: from file name)")
    p.add_argument("--map", dest="column_map", action="append", default=[], metavar="SRC=FIELD",
                   help="map a source column onto a contract field, e.g. --map visitorid=user_id (repeatable)")
    p.add_argument("--columns", help="comma-separated column names for a CSV without a header row")
    p.add_argument("--delimiter", help="CSV delimiter (default: detected)")
    p.add_argument("--ts-unit", default="ms", choices=["ms", "s", "us", "ns", "auto"], help="unit of numeric timestamps")
    p.add_argument("--labels", type=Path, help="CSV with user_id,label[,attack] giving labels by user")


def log_spec(args: argparse.Namespace) -> LogSpec:
    """The :class:`~stream.logs.LogSpec` the options of :func:`log_args` describe."""
    from stream import logs  # pyarrow & co. load only for commands that read a log

    return logs.LogSpec(
        fmt=args.fmt,
        columns=logs.parse_column_map(args.column_map),
        column_names=args.columns.split(",") if args.columns else None,
        delimiter=args.delimiter,
        ts_unit=args.ts_unit,
        labels=logs.read_labels(args.labels) if args.labels else None,
    )
