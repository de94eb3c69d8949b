"""`seqsentry run` and `seqsentry score`, with configuration from flags, SEQSENTRY_* and YAML.

Precedence: command-line flag > environment variable (``SEQSENTRY_MAX_BATCH_SIZE=512``)
> YAML file (``--config seqsentry.yaml`` with keys like ``max_batch_size: 512``) > default,
resolved and validated by stream.runtime.config.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stream.commands.log_options import log_args, log_spec, report_log_quality
from stream.runtime import defaults
from stream.severities import SEVERITIES

if TYPE_CHECKING:  # pydantic costs most of a second: `--help` must not pay for it
    from stream.runtime.config import ServiceConfig

__all__ = ["register", "resolve_config"]


def resolve_config(flags: dict[str, Any], config_file: Path | None) -> ServiceConfig:
    """:func:`stream.runtime.config.resolve_config`, imported when a command needs it."""
    from stream.runtime import config

    return config.resolve_config(flags, config_file)


def _config_from_args(args: argparse.Namespace) -> ServiceConfig:
    """ServiceConfig from a `run`/`faust` command line (flags, then env, then --config YAML)."""
    from stream import kafka
    from stream.runtime.config import field_names

    names = field_names()
    flags = {k: v for k, v in vars(args).items() if k in names}
    flags["kafka_options"] = kafka.parse_options(args.kafka_options)
    return resolve_config(flags, args.config)


def show_info_logs() -> None:
    """`run`'s logging: INFO from seqsentry's own modules (model swaps, reloads, rebalances)."""
    # Module loggers are named after their modules (stream.runtime.reload, stream.detector, ...),
    # so one level on the package loggers shows model swaps, reloads and rebalances at INFO
    # without lowering the root (and every library's logger) below --log-level.
    for name in ("stream", "training"):
        logger = logging.getLogger(name)
        logger.setLevel(min(logging.INFO, logging.getLogger().getEffectiveLevel()))


def _train_starter_model(registry_dir: Path, device: str) -> None:
    """`run --bootstrap-model`: the one door from the runtime's command to training."""
    from training.train import train_on_generated

    print(f"no model in {registry_dir}: training a starter model on generated traffic (--bootstrap-model). It "
          "knows generated shoppers, not yours: on real traffic expect it to alert far past its budget. For your "
          "platform, train on a recording of it: seqsentry train LOG", flush=True)
    train_on_generated(registry_dir, device=device, show=False)


def cmd_run(args: argparse.Namespace) -> int:
    cfg = _config_from_args(args)  # a settings error is told before torch and the runtime load (seconds)
    from stream import registry
    from stream.service import Service

    show_info_logs()
    if args.bootstrap_model and cfg.model is None and cfg.registry and registry.current_version(cfg.registry) is None:
        _train_starter_model(cfg.registry, cfg.device)
    svc = Service(cfg)
    svc.setup()
    print(f"seqsentry: model {svc.serving_version} consuming {cfg.topic} on {cfg.bootstrap}; alerts -> "
          f"{cfg.alerts_topic}; metrics {svc.metrics_url}/metrics (Ctrl-C stops cleanly)", flush=True)
    svc.run()
    return 0


def cmd_faust(args: argparse.Namespace) -> int:
    cfg = _config_from_args(args)  # before Faust and torch load
    from stream import kafka
    from stream.faust_app import run

    if cfg.kafka_options:
        raise ValueError("the Faust runtime takes no -X librdkafka settings (aiokafka underneath); use `seqsentry run`")
    if cfg.model is not None:  # a mistyped path fails now, not after reaching the cluster
        from stream.artifact import check_model_dir

        check_model_dir(cfg.model)
    kafka.check_reachable(cfg.bootstrap)
    print(f"seqsentry (Faust runtime): consuming {cfg.topic} on {cfg.bootstrap}; alerts -> {cfg.alerts_topic}", flush=True)
    run(cfg)
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from stream import logs, registry
    from stream.detector import Detector
    from stream.model import Scorer
    from stream.offline import score_log

    logs.detect_format(args.log, args.fmt)  # a bad file name fails before the model loads
    if not args.log.exists():
        raise FileNotFoundError(f"no such log: {args.log}")
    scorer = Scorer.load(args.model or registry.current(args.registry), args.device, args.runtime)
    det = Detector(scorer, cooldown_ms=int(args.cooldown_s * 1000), coalesce=False)
    tally = logs.RejectTally()
    stats = score_log(args.log, det, args.out, spec=log_spec(args), dead_letter_out=args.dead_letters,
                      show_progress=not args.quiet, tally=tally)
    print(json.dumps({**dataclasses.asdict(stats), "rejects_by_reason": tally.by_reason}))
    print(stats.order)
    print(f"{stats.alerts:,} alerts from {stats.events:,} events -> {args.out}")
    report_log_quality(tally, args.max_reject_share, stats.unknown_types, stats.events - stats.rejected)
    return 0




# The `run`/`faust` options that set a ServiceConfig field, by field name (the flag is the name
# with dashes). argparse's default stays None: an option not given must leave the setting to
# SEQSENTRY_* and the --config file. So each help states the setting's real default itself, from
# stream.runtime.defaults (ServiceConfig's own source), or, for a setting that defaults to None,
# what not giving it means (``unset``).
_SETTINGS: dict[str, dict[str, Any]] = {
    "bootstrap": {"short": ("-b",), "help": "Kafka bootstrap servers",
                  "unset": "none; give it here, as SEQSENTRY_BOOTSTRAP or as bootstrap: in --config"},
    "topic": {"short": ("-t",), "help": "input topic"},
    "alerts_topic": {"help": "topic the alerts are published to"},
    "dlq_topic": {"help": "dead-letter topic: refused messages, with their reasons as headers"},
    "group": {"help": "consumer group (more processes in one group share the partitions)"},
    "offset_reset": {"choices": ["earliest", "latest"],
                     "help": "what a consumer group without committed offsets reads first: earliest the whole "
                             "topic (and alerts on it), latest only what arrives from now on"},
    "registry": {"type": Path, "help": "model registry: its current model is served, and hot-reloaded"},
    "model": {"type": Path, "help": "serve this artifact directory (no hot reload)",
              "unset": "the registry's current model"},
    "shadow": {"type": Path, "help": "candidate artifact scored alongside, without alerting", "unset": "none"},
    "device": {"help": "auto | cpu | cuda (auto: cuda when PyTorch sees a GPU)"},
    "runtime": {"choices": ["auto", "torch", "onnx"],
                "help": "model runtime (auto: ONNX Runtime for a classifier on CPU when installed)"},
    "max_batch_size": {"type": int, "help": "most windows per model call"},
    "max_wait_ms": {"type": float, "help": "longest wait for a fuller model batch after its first window"},
    "max_queue_windows": {"type": int, "help": "windows waiting for inference before consumption pauses"},
    "poll_wait_ms": {"type": float, "help": "longest wait for a fuller consume batch (latency floor)"},
    "commit_interval_ms": {"type": float, "help": "commit completed offsets at most this often"},
    "cooldown_s": {"type": float, "help": "per-user alert cooldown, in event time"},
    "coalesce": {"action": "store_true",
                 "help": "score only each user's newest pending window (faster under load, not replay-exact)"},
    "metrics_host": {"help": "address of /metrics, /healthz and /readyz"},
    "metrics_port": {"type": int, "help": "port of /metrics, /healthz and /readyz (0: any free port)"},
    "reload_interval_s": {"type": float, "help": "how often the registry is checked for a new current model"},
    "stall_timeout_s": {"type": float,
                        "help": "/healthz fails when the detector is behind yet consumes nothing this long"},
    "ack_timeout_s": {"type": float,
                      "help": "/readyz fails once an alert or dead letter has waited this long for the broker's ack"},
    "exactly_once": {"action": "store_true",
                     "help": "Kafka transactions: alerts, dead letters and offsets commit atomically (readers use "
                             "isolation.level=read_committed)"},
    "transactional_id": {"help": "stable per instance", "unset": "seqsentry-<group>-<hostname>"},
    "startup_timeout_s": {"type": float, "help": "retry an unreachable cluster or missing topics with backoff this long"},
    "max_users": {"type": int, "help": "cap on tracked users per partition (LRU eviction beyond)",
                  "unset": "the model's window config"},
    "max_clock_skew_s": {"type": float,
                         "help": "dead-letter (bad-timestamp) events dated more than this after they were received "
                                 "(LogAppendTime, else the earlier of CreateTime and the consumer's clock)"},
    "audit_log": {"type": Path, "help": "append 'partition offset' of every scored event (testing)", "unset": "none"},
}
_FAUST_SETTINGS = ("topic", "alerts_topic", "dlq_topic", "group", "offset_reset", "registry", "model",
                   "device", "max_batch_size", "max_wait_ms", "cooldown_s", "metrics_host", "metrics_port",
                   "max_clock_skew_s")


def _setting(p: argparse.ArgumentParser, name: str, note: str = "") -> None:
    """Add the option of setting ``name`` to ``p``, its help ending in the setting's real default."""
    spec = dict(_SETTINGS[name])
    short, unset = spec.pop("short", ()), spec.pop("unset", None)
    shown = unset if unset is not None else getattr(defaults, name.upper())
    spec["help"] = f"{spec['help']}{note} (default: {shown})"
    p.add_argument(*short, "--" + name.replace("_", "-"), default=None, **spec)


def _config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path,
                   help="YAML file of settings, keyed by setting name (flags and SEQSENTRY_* override it; every "
                        "setting: seqsentry.example.yaml) (default: none)")


def register(sub: argparse._SubParsersAction) -> None:
    register_demo(sub)
    p = sub.add_parser("run", help="run the streaming detector against Kafka")
    _config_arg(p)
    _setting(p, "bootstrap")
    p.add_argument("-X", dest="kafka_options", action="append", default=[], metavar="KEY=VALUE",
                   help="librdkafka setting passed through (repeatable; it wins over the option setting the same "
                        "key, e.g. -X auto.offset.reset over --offset-reset) (default: none)")
    for name in [n for n in _SETTINGS if n != "bootstrap"]:
        _setting(p, name, "; an explicit -X auto.offset.reset wins" if name == "offset_reset" else "")
    p.add_argument("--bootstrap-model", action="store_true",
                   help="if the registry has no model, first train a starter model on generated traffic (a demo "
                        "model: train on your own log for real traffic)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("faust", help="run the same detector as a faust-streaming agent (Faust runtime)")
    _config_arg(p)
    _setting(p, "bootstrap")
    p.add_argument("-X", dest="kafka_options", action="append", default=[], metavar="KEY=VALUE",
                   help="refused: the Faust runtime takes no librdkafka settings (aiokafka underneath); use "
                        "`seqsentry run` (default: none)")
    for name in _FAUST_SETTINGS:
        _setting(p, name)
    p.set_defaults(func=cmd_faust)

    p = sub.add_parser("score", help="score a recorded log offline with the live pipeline; alerts to a file")
    p.add_argument("log", type=Path)
    p.add_argument("--out", type=Path, default=Path("alerts.jsonl"))
    p.add_argument("--dead-letters", type=Path, help="write rejected records with reasons here")
    p.add_argument("--model", type=Path)
    p.add_argument("--registry", type=Path, default=defaults.REGISTRY)
    p.add_argument("--device", default=defaults.DEVICE)
    p.add_argument("--runtime", default=defaults.RUNTIME, choices=["auto", "torch", "onnx"])
    p.add_argument("--cooldown-s", type=float, default=defaults.COOLDOWN_S)
    p.add_argument("--quiet", "-q", action="store_true")
    log_args(p)
    p.set_defaults(func=cmd_score)


def cmd_demo(args: argparse.Namespace) -> int:
    from stream import kafka
    from stream.commands.demo import DemoConfig, run_demo

    cfg = DemoConfig(events=args.events, rate=None if args.rate == 0 else args.rate, seed=args.seed,
                     train_events=args.train_events, registry=args.registry, out=args.out, bootstrap=args.bootstrap,
                     kafka_options=kafka.parse_options(args.kafka_options), metrics_port=args.metrics_port,
                     device=args.device, live=not args.no_live)
    try:
        run_demo(cfg)
    except KeyboardInterrupt:
        print("demo interrupted: replay, detector and broker stopped in order")
        return 130
    return 0


def cmd_alerts(args: argparse.Namespace) -> int:
    from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, TopicPartition
    from rich.console import Console

    from stream import kafka
    from stream.commands.demo import SEVERITY_STYLE

    options = kafka.parse_options(args.kafka_options)
    parts = kafka.require_topic(args.bootstrap, args.topic, options)
    cons = kafka.consumer(args.bootstrap, "seqsentry-alerts-tail", options)
    start = OFFSET_BEGINNING if args.from_beginning else OFFSET_END
    cons.assign([TopicPartition(args.topic, p, start) for p in range(parts)])
    min_sev = SEVERITIES.index(args.severity)
    console = Console()
    shown = 0
    idle_since = time.monotonic()
    try:
        while args.count is None or shown < args.count:
            msgs = cons.consume(500, timeout=0.5)
            if not msgs and args.idle_exit and time.monotonic() - idle_since > args.idle_exit:
                break
            for m in msgs:
                if m.error():
                    continue
                idle_since = time.monotonic()
                try:
                    a = json.loads(m.value())
                except ValueError:
                    continue
                if SEVERITIES.index(a.get("severity", "low")) < min_sev or (args.user and a.get("user_id") != args.user):
                    continue
                if args.json:
                    print(json.dumps(a), flush=True)
                else:
                    why = ", ".join(e["type"] for e in a.get("explanation", [])[:3])
                    console.print(f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(a['event_time'] / 1000))}  "
                                  f"[{SEVERITY_STYLE[a['severity']]}]{a['severity']:>8}[/]  {a['user_id']:<14} "
                                  f"score {a['score']:.3f}  model {a['model_version']}  drove it: {why}")
                shown += 1
                if args.count is not None and shown >= args.count:
                    break
    except KeyboardInterrupt:
        pass
    finally:
        cons.close()
    return 0


def register_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="everything end to end: broker, model, detector, attacks, live alerts, summary")
    p.add_argument("--events", type=int, default=20_000, help="events of demo traffic to replay")
    p.add_argument("--rate", type=float, default=2_000.0, help="events per second (0 = as fast as possible)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--train-events", type=int, help="generated events to train on when no model exists (default: enough users for the default alert budget)")
    p.add_argument("--registry", type=Path, default=defaults.REGISTRY)
    p.add_argument("--out", type=Path, default=Path("runs/demo"))
    p.add_argument("--bootstrap", "-b", help="use this Kafka instead of the embedded broker")
    p.add_argument("-X", dest="kafka_options", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--metrics-port", type=int, default=defaults.METRICS_PORT)
    p.add_argument("--device", default=defaults.DEVICE)
    p.add_argument("--no-live", action="store_true", help="no live alert table (summary only)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("alerts", help="follow the alerts topic and pretty-print alerts (or --json lines)")
    p.add_argument("--bootstrap", "-b", default=os.environ.get("SEQSENTRY_BOOTSTRAP", "localhost:9092"))
    p.add_argument("-X", dest="kafka_options", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--topic", "-t", default=defaults.ALERTS_TOPIC)
    p.add_argument("--severity", choices=SEVERITIES, default=SEVERITIES[0], help="minimum severity")
    p.add_argument("--user", help="only this user's alerts")
    p.add_argument("--json", action="store_true", help="one JSON alert per line (for piping)")
    p.add_argument("--from-beginning", action="store_true",
                   help="show the alerts already on the topic first (default: only new ones, like tail -f)")
    p.add_argument("--count", type=int, help="exit after this many alerts")
    p.add_argument("--idle-exit", type=float, help="exit after this many seconds without alerts "
                   "(with --from-beginning: print what is there and stop)")
    p.set_defaults(func=cmd_alerts)
