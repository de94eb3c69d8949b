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
    if args.alerts_topic:
        if not args.bootstrap:
            raise ValueError("--alerts-topic needs the cluster: give -b HOST:PORT")
        alerts = (alerts or {}) | feedback.alerts_from_topic(args.bootstrap, args.alerts_topic, options,
                                                             idle_timeout=args.idle_timeout)
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
    p.add_argument("--alerts-topic", help="resolve alert_id through every alert on this topic (e.g. alerts)")
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


def _run_compare(args: argparse.Namespace, candidate: Path, against: str, out: Path) -> dict:
    from stream import compare
    from stream.commands.log_options import log_spec

    current = compare.resolve_model(against, args.registry)
    return compare.compare(candidate, current, args.log, out, spec=log_spec(args),
                           labels=str(args.labels) if args.labels else None, device=args.device,
                           runtime=args.runtime, cooldown_s=args.cooldown_s)


def cmd_compare(args: argparse.Namespace) -> int:
    from stream import compare

    candidate = compare.resolve_model(args.candidate, args.registry)
    if args.shadow:
        from stream import logs

        labels = logs.read_labels(args.labels) if args.labels else None
        d = compare.compare_shadow(candidate, args.out, labels, str(args.labels) if args.labels else None)
    elif args.log is None:
        raise ValueError("give the LOG to score with both models, or --shadow to read what `run --shadow` recorded")
    else:
        d = _run_compare(args, candidate, args.against, args.out)
    for line in compare.summary_lines(d):
        print(line)
    print(f"report: {args.out / 'comparison.md'} (+ comparison.json, comparison.png)")
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    import json
    import tempfile

    from stream import compare, promote, registry

    if args.rollback:
        old, new = promote.rollback(args.registry)
        print(f"rolled back: current {old} -> {new} in {args.registry}")
        return 0
    if args.candidate is None:
        raise ValueError("give the CANDIDATE artifact (or version) to promote, or --rollback")
    candidate = compare.resolve_model(args.candidate, args.registry)
    rules = promote.Rules(max_attackers_lost=args.max_attackers_lost, max_budget_factor=args.max_budget_factor)
    with tempfile.TemporaryDirectory(prefix=".compare-", dir=args.registry if args.registry.is_dir() else None) as tmp:
        report, d = None, None
        if args.log is not None:
            report = Path(tmp)
            against = "current" if registry.current_version(args.registry) else "none"
            d = _run_compare(args, candidate, against, report)
        elif args.comparison is not None:
            report = args.comparison
            d = json.loads((report / "comparison.json").read_text())
        dec = promote.promote(candidate, args.registry, d, rules=rules, report_dir=report, force=args.force)
    if d is not None and not d["users"]["attackers"]:
        print("note: no confirmed attackers in the comparison (no --labels, none in the log): rule attackers-lost "
              "had nothing to check", file=sys.stderr)
    if not dec.promoted:
        print(f"seqsentry promote: refused {dec.version}: {'; '.join(dec.failed)}", file=sys.stderr)
        return 1
    gate = "without a gate (--force)" if dec.forced else "passed the gate"
    print(f"promoted {dec.version} (was {dec.previous or 'none'}): {gate}; current -> {dec.version} in {args.registry}"
          + (f"; report {dec.report}" if dec.report else ""))
    return 0


def _scoring_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--registry", type=Path, default=defaults.REGISTRY)
    p.add_argument("--device", default=defaults.DEVICE)
    p.add_argument("--runtime", default=defaults.RUNTIME, choices=["auto", "torch", "onnx"])
    p.add_argument("--cooldown-s", type=float, default=defaults.COOLDOWN_S)


def register_compare(sub: argparse._SubParsersAction) -> None:
    from stream.commands.log_options import log_args

    p = sub.add_parser("compare", help="score a recorded log with a candidate and the current model: who each alerts, "
                                       "attackers per kind, normal users vs the budget (md + json + png)")
    p.add_argument("candidate", help="candidate artifact directory (or a registry version)")
    p.add_argument("log", type=Path, nargs="?", help="recorded log to score with both")
    p.add_argument("--shadow", action="store_true",
                   help="instead of a log: the users `run --shadow CANDIDATE` saw each model cross its threshold for")
    p.add_argument("--against", default="current",
                   help="the model compared with: current, a registry version, an artifact directory, or none")
    p.add_argument("--out", type=Path, default=Path("comparison"), help="report directory")
    _scoring_args(p)
    log_args(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("promote", help="publish a candidate as the registry's current model if its comparison passes "
                                       "the gate (exit 1 naming the failed rule), or --rollback")
    p.add_argument("candidate", nargs="?", help="candidate artifact directory (or a registry version)")
    p.add_argument("--rollback", action="store_true", help="restore the version that was current before")
    p.add_argument("--log", type=Path, help="recorded log to compare the candidate with the current model on")
    p.add_argument("--comparison", type=Path, help="a `seqsentry compare` report directory to gate on instead")
    p.add_argument("--max-attackers-lost", type=int, default=0,
                   help="rule attackers-lost: confirmed attackers the current model alerts and the candidate may miss")
    p.add_argument("--max-budget-factor", type=float, default=1.5,
                   help="rule normal-budget: normal users the candidate may alert, in multiples of its alert budget")
    p.add_argument("--force", action="store_true", help="publish without a gate (recorded as forced)")
    _scoring_args(p)
    log_args(p)
    p.set_defaults(func=cmd_promote)
