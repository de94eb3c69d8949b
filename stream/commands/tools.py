"""The log and broker tools: `synth`, `replay`, `record`, `broker`, `topics`."""

from __future__ import annotations

import argparse
import signal
import time
from pathlib import Path

from stream.commands.log_options import log_args, log_spec, report_log_quality
from stream.commands.options import DefaultsHelpFormatter, kafka_args, kafka_options
from stream.runtime import defaults


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
                          rate=args.rate, options=kafka_options(args), limit=args.limit, show_progress=not args.quiet,
                          tally=tally)
    print(f"replayed {stats.sent:,} events to {args.topic} in {stats.seconds:.1f}s ({stats.rate:,.0f} ev/s)"
          + (f"; {stats.unkeyed:,} had no user_id and were sent unkeyed" if stats.unkeyed else ""))
    report_log_quality(tally, args.max_reject_share)  # these go to the dead-letter topic, not the detector
    return 0


def cmd_record(args: argparse.Namespace) -> int:
    from stream import replay

    n = replay.record(args.bootstrap, args.topic, args.out, options=kafka_options(args), max_messages=args.count,
                      idle_timeout=args.idle_timeout, show_progress=not args.quiet, headers=args.headers)
    print(f"recorded {n:,} messages from {args.topic} to {args.out}")
    return 0


def cmd_broker(args: argparse.Namespace) -> int:
    from stream.broker import EmbeddedBroker

    broker = EmbeddedBroker(port=args.port).start()
    inputs = args.topic or [defaults.TOPIC]
    # what `seqsentry run` will ask for with its defaults: each input, its dead letters (TOPIC-dlq,
    # as defaults.DLQ_TOPIC is for the default input), the alerts
    topics = {name: args.partitions for t in inputs for name in (t, f"{t}-dlq")} | {defaults.ALERTS_TOPIC: args.partitions}
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
        topics.create(args.bootstrap, args.names, args.partitions, kafka_options(args))
        print(f"created {', '.join(args.names)} ({args.partitions} partitions each)")
        return 0
    for t in topics.describe(args.bootstrap, args.names or None, kafka_options(args)):
        if args.action == "list":
            print(f"{t.name}\t{len(t.partitions)} partitions\t{t.messages:,} messages")
            continue
        print(f"{t.name}: {len(t.partitions)} partitions, {t.messages:,} messages")
        for p in t.partitions:
            print(f"  partition {p.partition}: offsets {p.low:,} .. {p.high:,}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the log and broker tools to ``seqsentry``'s subcommands."""

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
    p.add_argument("--topic", "-t", default=defaults.TOPIC)
    p.add_argument("--speed", type=float, help="pace by event time, SPEED x faster (default: as fast as possible)")
    p.add_argument("--rate", type=float, help="send at most this many events per second")
    p.add_argument("--limit", type=int, help="stop after this many events")
    p.add_argument("--quiet", "-q", action="store_true")
    kafka_args(p)
    log_args(p)
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("record", help="record a topic to a JSONL file")
    p.add_argument("out", type=Path, help="output file (.jsonl, optionally .gz)")
    p.add_argument("--topic", "-t", default=defaults.TOPIC)
    p.add_argument("--headers", action="store_true",
                   help='one JSON object per message: {"value", "key", "headers", "partition", "offset"} '
                        "(e.g. the reasons of dead letters, in their seqsentry.* headers)")
    p.add_argument("--count", type=int, help="stop after this many messages")
    p.add_argument("--idle-timeout", type=float, default=5.0, help="stop after this many seconds without messages")
    p.add_argument("--quiet", "-q", action="store_true")
    kafka_args(p)
    p.set_defaults(func=cmd_record)

    p = sub.add_parser("broker", help="run the embedded Kafka-compatible broker (in-memory) until Ctrl-C")
    p.add_argument("--port", type=int, default=9092)
    p.add_argument("--topic", action="append", default=[],
                   help="input topic to create, with TOPIC-dlq beside it (repeatable; default events); "
                        "the alerts topic is always created")
    p.add_argument("--partitions", type=int, default=4)
    p.set_defaults(func=cmd_broker)

    p = sub.add_parser("topics", help="list, describe (partitions and offsets) or create topics")
    kafka_args(p, bootstrap_required=False)  # also accepted after the action, where -b usually goes
    actions = p.add_subparsers(dest="action", required=True, metavar="{list,describe,create}")
    for action, what, names_help in (("list", "topics with their partitions and messages", "topics (default: all)"),
                                     ("describe", "each partition's offsets", "topics (default: all)"),
                                     ("create", "create topics (one that exists is left as it is)", "topics to create")):
        a = actions.add_parser(action, help=what, formatter_class=DefaultsHelpFormatter)
        a.add_argument("names", nargs="+" if action == "create" else "*", help=names_help)
        if action == "create":
            a.add_argument("--partitions", type=int, default=4, help="partitions of created topics")
        kafka_args(a, nested=True)
    p.set_defaults(func=cmd_topics)
