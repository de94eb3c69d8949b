"""`seqsentry ...` - one entry point for every tool.

Errors a user can fix (broker unreachable, topic missing, unknown format, ...) end the
command with one line saying what to do, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from stream.commands import loop, service, tools, train
from stream.commands.options import DefaultsHelpFormatter

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    # no abbreviations of the global options: `promote --log LOG` must not read as --log-level/--log-format
    parser = argparse.ArgumentParser(prog="seqsentry", description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--log-level", default=os.environ.get("SEQSENTRY_LOG_LEVEL", "WARNING"))
    parser.add_argument("--log-format", choices=["text", "json"], default=os.environ.get("SEQSENTRY_LOG_FORMAT", "text"),
                        help="json: one JSON object per log line (for log shippers)")
    sub = parser.add_subparsers(dest="command", required=True)
    for command_group in (tools, train, service, loop):  # the order of `seqsentry --help`
        command_group.register(sub)
    for p in sub.choices.values():  # every help text shows its defaults
        p.formatter_class = DefaultsHelpFormatter
    return parser


class JsonFormatter(logging.Formatter):
    """Structured log lines: ts, level, logger, msg (+ exc)."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), "level": record.levelname, "logger": record.name,
               "msg": record.getMessage()}
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def _setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point."""
    args = build_parser().parse_args(argv)
    _setup_logging(args.log_level, args.log_format)
    from stream.errors import SeqsentryError

    try:
        return int(args.func(args) or 0)
    except (SeqsentryError, FileNotFoundError, ValueError) as exc:
        if args.log_level.upper() == "DEBUG":
            raise
        print(f"seqsentry {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
