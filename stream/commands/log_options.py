"""The command-line options that describe a recorded log, shared by every command that reads one.

(`seqsentry replay`, `score`, `train`, `evaluate`): one definition, so a log is described
the same way to each of them.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stream.logs import LogSpec, RejectTally



def log_args(p: argparse.ArgumentParser) -> None:
    """Add --format, --map, --set, --map-values, --columns, --delimiter, --ts-unit, --labels and
    --max-reject-share to ``p``."""
    p.add_argument("--format", dest="fmt", choices=["jsonl", "csv", "parquet"], help="log format (default: from file name)")
    p.add_argument("--map", dest="column_map", action="append", default=[], metavar="SRC=FIELD",
                   help="map a source column onto a contract field, e.g. --map visitorid=user_id (repeatable)")
    p.add_argument("--set", dest="constants", action="append", default=[], metavar="FIELD=VALUE",
                   help="give every record this value, e.g. --set type=click for a clicks-only log (repeatable)")
    p.add_argument("--map-values", dest="value_maps", action="append", default=[], metavar="FIELD:FROM=TO,...",
                   help="rename values, e.g. --map-values type:pv=view,buy=purchase (repeatable)")
    p.add_argument("--columns", help="comma-separated column names for a CSV without a header row")
    p.add_argument("--delimiter", help="CSV delimiter (default: detected)")
    p.add_argument("--ts-unit", default="auto", choices=["auto", "ms", "s", "us", "ns"],
                   help="unit of numeric timestamps, integer or float (auto: read off the magnitude)")
    p.add_argument("--labels", type=Path, help="CSV with user_id,label[,attack] giving labels by user")
    p.add_argument("--max-reject-share", type=float, default=0.5,
                   help="fail (exit 2) when more than this share of the log's records break the event contract")


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
        constants=logs.parse_constants(args.constants),
        value_maps=logs.parse_value_maps(args.value_maps),
    )


@contextlib.contextmanager
def summary_on_refusal(tally: RejectTally) -> Iterator[None]:
    """Print the rejects by reason before the one-line refusal of a log refused part-way (train
    and evaluate refuse a mostly-rejected log in their first pass, before any work on it)."""
    from stream.log_spec import LogFormatError

    try:
        yield
    except LogFormatError:
        _print_rejects(tally)
        raise


def _print_rejects(tally: RejectTally) -> None:
    for line in tally.summary():
        print(line, file=sys.stderr)


def report_log_quality(tally: RejectTally, max_share: float, unknown_types: int = 0, valid: int = 0) -> None:
    """End-of-run summary on stderr: rejects by reason with an example each, a warning when many
    event types are unknown to the model; raises (exit 2) past the allowed reject share."""
    from stream.encoding import UNKNOWN_TYPES_WARN

    _print_rejects(tally)
    if valid and unknown_types / valid > UNKNOWN_TYPES_WARN:
        print(f"warning: {unknown_types / valid:.0%} of valid events have an event type the model never saw in "
              "training (scored as <unk>): map them onto the model's names with --map-values type:FROM=TO, "
              "or retrain on this log", file=sys.stderr)
    tally.check(max_share)
