"""`seqsentry ...` - one entry point for every tool.

Errors a user can fix (broker unreachable, topic missing, unknown format, ...) end the
command with one line saying what to do, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

from stream.log_args import log_args, log_spec, report_log_quality

EXIT_USAGE = 2


def _kafka_args(p: argparse.ArgumentParser, bootstrap_required: bool = True, nested: bool = False) -> None:
    """-b and -X. ``nested``: a sub-action's copies (`topics describe -b B`), which set a value only
    when given, so the same options given before the action (`topics -b B describe`) still count."""
    env = os.environ.get("SEQSENTRY_BOOTSTRAP")
    p.add_argument("--bootstrap", "-b", required=bootstrap_required and not env and not nested,
                   default=argparse.SUPPRESS if nested else env, help="Kafka bootstrap servers (env SEQSENTRY_BOOTSTRAP)")
    p.add_argument("-X", dest="kafka_options", action="append", default=argparse.SUPPRESS if nested else [],
                   metavar="KEY=VALUE",
                   help="librdkafka setting passed through, e.g. -X security.protocol=SASL_SSL (repeatable)")


def _options(args: argparse.Namespace) -> dict[str, str]:
    from stream import kafka

    return kafka.parse_options(args.kafka_options)


# ---- commands ---------------------------------------------------------------------------
def cmd_synth(args: argparse.Namespace) -> int:
    from stream import logs
    from training import synth

    cfg = synth.SynthConfig(events=args.events, seed=args.seed, users=args.users,
                            attacker_fraction=args.attacker_fraction)
    from stream import progress

    with progress.bar(not args.quiet) as bar:
        task = bar.add_task(f"synth → {args.out}", total=args.events, rate="")
        done = 0

        def chunks():
            nonlocal done
            for chunk in synth.generate(cfg):
                done += len(chunk)
                bar.update(task, completed=done)
                yield chunk

        n = logs.write_log(args.out, chunks(), fmt=args.fmt)
    print(f"wrote {n:,} events to {args.out}")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from stream import logs, replay

    tally = logs.RejectTally()
    stats = replay.replay(args.log, args.bootstrap, args.topic, spec=log_spec(args), speed=args.speed,
                          rate=args.rate, options=_options(args), limit=args.limit, show_progress=not args.quiet,
                          tally=tally)
    print(f"replayed {stats.sent:,} events to {args.topic} in {stats.seconds:.1f}s ({stats.rate:,.0f} ev/s)"
          + (f"; {stats.unkeyed:,} had no user_id and were sent unkeyed" if stats.unkeyed else ""))
    report_log_quality(tally, args.max_reject_share)  # these go to the dead-letter topic, not the detector
    return 0


def cmd_record(args: argparse.Namespace) -> int:
    from stream import replay

    n = replay.record(args.bootstrap, args.topic, args.out, options=_options(args), max_messages=args.count,
                      idle_timeout=args.idle_timeout, show_progress=not args.quiet, headers=args.headers)
    print(f"recorded {n:,} messages from {args.topic} to {args.out}")
    return 0


def cmd_broker(args: argparse.Namespace) -> int:
    from stream.broker import EmbeddedBroker

    broker = EmbeddedBroker(port=args.port).start()
    inputs = args.topic or ["events"]
    # what `seqsentry run` will ask for with its defaults: each input, its dead letters, the alerts
    topics = {name: args.partitions for t in inputs for name in (t, f"{t}-dlq")} | {"alerts": args.partitions}
    broker.create_topics(topics)
    print(f"embedded broker on {broker.bootstrap} (in-memory; Ctrl-C stops it); topics: {', '.join(topics)}",
          flush=True)
    stop = False

    def handler(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, handler)
    try:
        while not stop:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        broker.stop()
    return 0


def cmd_topics(args: argparse.Namespace) -> int:
    from stream import topics

    if not args.bootstrap:
        raise ValueError("give the cluster: seqsentry topics list -b HOST:PORT (or set SEQSENTRY_BOOTSTRAP)")
    if args.action == "create":  # (argparse requires the names)
        topics.create(args.bootstrap, args.names, args.partitions, _options(args))
        print(f"created {', '.join(args.names)} ({args.partitions} partitions each)")
        return 0
    for t in topics.describe(args.bootstrap, args.names or None, _options(args)):
        if args.action == "list":
            print(f"{t.name}\t{len(t.partitions)} partitions\t{t.messages:,} messages")
            continue
        print(f"{t.name}: {len(t.partitions)} partitions, {t.messages:,} messages")
        for p in t.partitions:
            print(f"  partition {p.partition}: offsets {p.low:,} .. {p.high:,}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    # no abbreviations of the global options: `promote --log LOG` must not read as --log-level/--log-format
    parser = argparse.ArgumentParser(prog="seqsentry", description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--log-level", default=os.environ.get("SEQSENTRY_LOG_LEVEL", "WARNING"))
    parser.add_argument("--log-format", choices=["text", "json"], default=os.environ.get("SEQSENTRY_LOG_FORMAT", "text"),
                        help="json: one JSON object per log line (for log shippers)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="generate labelled synthetic traffic to a log file")
    p.add_argument("out", type=Path, help="output log (.jsonl/.csv/.parquet, optionally .gz)")
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--users", type=int, help="normal users (default: events/60)")
    p.add_argument("--attacker-fraction", type=float, default=0.03)
    p.add_argument("--format", dest="fmt", choices=["jsonl", "csv", "parquet"])
    p.add_argument("--quiet", "-q", action="store_true")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("replay", help="replay a recorded log into a topic, keyed by user id")
    p.add_argument("log", type=Path)
    p.add_argument("--topic", "-t", default="events")
    p.add_argument("--speed", type=float, help="pace by event time, SPEED x faster (default: as fast as possible)")
    p.add_argument("--rate", type=float, help="send at most this many events per second")
    p.add_argument("--limit", type=int, help="stop after this many events")
    p.add_argument("--quiet", "-q", action="store_true")
    _kafka_args(p)
    log_args(p)
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("record", help="record a topic to a JSONL file")
    p.add_argument("out", type=Path, help="output file (.jsonl, optionally .gz)")
    p.add_argument("--topic", "-t", default="events")
    p.add_argument("--headers", action="store_true",
                   help='one JSON object per message: {"value", "key", "headers", "partition", "offset"} '
                        "(e.g. the reasons of dead letters, in their seqsentry.* headers)")
    p.add_argument("--count", type=int, help="stop after this many messages")
    p.add_argument("--idle-timeout", type=float, default=5.0, help="stop after this many seconds without messages")
    p.add_argument("--quiet", "-q", action="store_true")
    _kafka_args(p)
    p.set_defaults(func=cmd_record)

    p = sub.add_parser("broker", help="run the embedded Kafka-compatible broker (in-memory) until Ctrl-C")
    p.add_argument("--port", type=int, default=9092)
    p.add_argument("--topic", action="append", default=[],
                   help="input topic to create, with TOPIC-dlq beside it (repeatable; default events); "
                        "the alerts topic is always created")
    p.add_argument("--partitions", type=int, default=4)
    p.set_defaults(func=cmd_broker)

    p = sub.add_parser("topics", help="list, describe (partitions and offsets) or create topics")
    _kafka_args(p, bootstrap_required=False)  # also accepted after the action, where -b usually goes
    actions = p.add_subparsers(dest="action", required=True, metavar="{list,describe,create}")
    for action, what, names_help in (("list", "topics with their partitions and messages", "topics (default: all)"),
                                     ("describe", "each partition's offsets", "topics (default: all)"),
                                     ("create", "create topics (one that exists is left as it is)", "topics to create")):
        a = actions.add_parser(action, help=what, formatter_class=DefaultsHelpFormatter)
        a.add_argument("names", nargs="+" if action == "create" else "*", help=names_help)
        if action == "create":
            a.add_argument("--partitions", type=int, default=4, help="partitions of created topics")
        _kafka_args(a, nested=True)
    p.set_defaults(func=cmd_topics)

    for register in _extra_commands():
        register(sub)
    for p in sub.choices.values():  # every help text shows its defaults
        p.formatter_class = DefaultsHelpFormatter
    return parser


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's help ends in its default, unless argparse's default is no value at all
    (None, an empty list): there "(default: None)" would be wrong for `run`'s settings, whose
    real defaults apply after SEQSENTRY_* and --config, and their help states them itself."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default == []:
            return action.help
        return super()._get_help_string(action)


def _extra_commands() -> list:
    """Commands living beside their subsystems (training, service) register themselves here."""
    regs = []
    for mod_name in ("training.cli", "stream.service_cli", "stream.loop_cli"):
        try:
            mod = __import__(mod_name, fromlist=["register"])
        except ModuleNotFoundError as exc:
            if exc.name != mod_name:
                raise
            continue
        regs.append(mod.register)
    return regs


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
