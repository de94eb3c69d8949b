"""The analyst feedback loop's commands: `feedback`, `verdict`, `compare`, `promote`.

verdicts (topic or file) -> labels file -> `train --labels` -> `compare` on a recorded log
-> `promote` through a gate (or `promote --rollback`).
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path

from stream.runtime import defaults


def _kafka(p: argparse.ArgumentParser, required: bool) -> None:
    env = os.environ.get("SEQSENTRY_BOOTSTRAP")
    p.add_argument("--bootstrap", "-b", default=env, required=required and not env,
                   help="Kafka bootstrap servers (env SEQSENTRY_BOOTSTRAP)")
    p.add_argument("-X", dest="kafka_options", action="append", default=[], metavar="KEY=VALUE",
                   help="librdkafka setting passed through (repeatable)")


def cmd_feedback(args: argparse.Namespace) -> int:
    from stream import feedback, kafka

    if not args.files and not args.bootstrap:
        raise ValueError("give verdict files (CSV or JSONL) or a cluster to read the feedback topic from (-b HOST:PORT)")
    options = kafka.parse_options(args.kafka_options)
    alerts = feedback.read_alerts(args.alerts) if args.alerts else None
    existing = feedback.read_labels_file(args.out) if args.out.exists() and not args.replace else []
    dead_path = args.dead_letters or args.out.with_name(args.out.name + ".rejected.jsonl")
    dead = feedback.DeadLetters(dead_path, args.dlq_topic, args.bootstrap, options, source_topic=args.topic)

    def items():
        for f in args.files:
            yield from feedback.from_file(f)
        if not args.files:
            yield from feedback.from_topic(args.bootstrap, args.topic, options, idle_timeout=args.idle_timeout,
                                           max_messages=args.count)

    try:
        res = feedback.collect(items(), dead, alerts, existing)
    finally:
        dead.close()
    feedback.write_labels(args.out, res.labels)
    source = ", ".join(map(str, args.files)) or f"topic {args.topic}"
    print(f"read {res.read:,} verdicts from {source}: {res.accepted:,} accepted, {dead.rejected:,} refused; "
          f"labels for {len(res.labels):,} users ({res.abuse:,} abuse, {res.legitimate:,} legitimate) -> {args.out}")
    for reason, n in sorted(res.by_reason.items(), key=lambda kv: -kv[1]):
        print(f"refused {n:,}: {reason} - e.g. {res.examples[reason]}", file=sys.stderr)
    if dead.rejected:
        print(f"refused verdicts: {' and '.join(str(x) for x in (dead_path, args.dlq_topic) if x)}", file=sys.stderr)
    return 0


def cmd_verdict(args: argparse.Namespace) -> int:
    from stream import feedback, kafka

    payload = feedback.verdict_message(args.id, args.verdict, is_user=args.user, kind=args.kind,
                                       analyst=args.analyst)
    options = kafka.parse_options(args.kafka_options)
    kafka.require_topic(args.bootstrap, args.topic, options)
    prod = kafka.producer(args.bootstrap, options)
    errors: list[str] = []
    prod.produce(args.topic, payload, args.id.encode(),
                 on_delivery=lambda err, _m: errors.append(str(err)) if err is not None else None)
    if prod.flush(30) or errors:
        raise kafka.KafkaUnavailable(f"verdict not acknowledged by {args.bootstrap}: {errors[0] if errors else 'timed out'}")
    print(f"{args.verdict}: {'user' if args.user else 'alert'} {args.id} -> {args.topic}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("feedback", help="analysts' verdicts (feedback topic, or CSV/JSONL files) -> a labels file "
                                        "for `train --labels` (latest verdict per user wins)")
    p.add_argument("files", nargs="*", type=Path, help="verdict files (.jsonl or .csv); none: read --topic from -b")
    p.add_argument("--out", "-o", type=Path, default=Path("labels.csv"),
                   help="labels file (user_id,label,attack,since,at,...): merged into when it exists")
    p.add_argument("--replace", action="store_true", help="write --out from these verdicts only (no merge)")
    p.add_argument("--alerts", type=Path, action="append", default=[],
                   help="alerts JSONL (score --out, alerts --json, record --headers) resolving alert_id to user "
                        "(repeatable)")
    p.add_argument("--topic", "-t", default="feedback", help="feedback topic")
    p.add_argument("--dead-letters", type=Path, help="refused verdicts with reasons (default: OUT.rejected.jsonl)")
    p.add_argument("--dlq-topic", help="also produce refused verdicts here, with seqsentry.* reason headers")
    p.add_argument("--idle-timeout", type=float, default=5.0, help="stop reading the topic after this many idle seconds")
    p.add_argument("--count", type=int, help="stop after this many messages")
    _kafka(p, required=False)
    p.set_defaults(func=cmd_feedback)

    p = sub.add_parser("verdict", help="publish one verdict on an alert (or --user) to the feedback topic")
    p.add_argument("id", help="alert_id (or user_id with --user)")
    p.add_argument("verdict", choices=["abuse", "legitimate"])
    p.add_argument("--user", action="store_true", help="ID is a user_id, not an alert_id")
    p.add_argument("--kind", help="kind of abuse (the labels' attack column; default: confirmed)")
    p.add_argument("--analyst", default=os.environ.get("SEQSENTRY_ANALYST") or _login(),
                   help="who decided (env SEQSENTRY_ANALYST)")
    p.add_argument("--topic", "-t", default="feedback")
    _kafka(p, required=True)
    p.set_defaults(func=cmd_verdict)
    register_compare(sub)


def _login() -> str | None:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name in a container is not an error
        return None


def register_compare(sub: argparse._SubParsersAction) -> None:
    _ = defaults
