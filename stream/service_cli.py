"""`seqsentry run` and `seqsentry score`, with configuration from flags, SEQSENTRY_* and YAML.

Precedence: command-line flag > environment variable (``SEQSENTRY_MAX_BATCH_SIZE=512``)
> YAML file (``--config seqsentry.yaml`` with keys like ``max_batch_size: 512``) > default.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any

import yaml

from stream.service import ServiceConfig

_TYPES = {"int": int, "float": float, "bool": lambda v: str(v).lower() in ("1", "true", "yes", "on"),
          "str": str, "Path | None": Path, "Path": Path, "dict": dict}


def resolve_config(flags: dict[str, Any], config_file: Path | None) -> ServiceConfig:
    """Merge flag values (None = not given), SEQSENTRY_* variables and a YAML file into a ServiceConfig."""
    file_values: dict[str, Any] = {}
    if config_file is not None:
        file_values = yaml.safe_load(Path(config_file).read_text()) or {}
        unknown = set(file_values) - {f.name for f in dataclasses.fields(ServiceConfig)}
        if unknown:
            raise ValueError(f"{config_file}: unknown settings {sorted(unknown)}")
    values: dict[str, Any] = {}
    for f in dataclasses.fields(ServiceConfig):
        env = os.environ.get(f"SEQSENTRY_{f.name.upper()}")
        if flags.get(f.name) is not None:
            values[f.name] = flags[f.name]
        elif env is not None and f.name != "kafka_options":
            values[f.name] = _TYPES.get(str(f.type), str)(env)
        elif f.name in file_values:
            values[f.name] = file_values[f.name]
    options = dict(file_values.get("kafka_options") or {})
    options.update(flags.get("kafka_options") or {})
    values["kafka_options"] = options
    if not values.get("bootstrap"):
        raise ValueError("no Kafka bootstrap servers: pass --bootstrap, set SEQSENTRY_BOOTSTRAP, or put bootstrap: in --config")
    for name in ("registry", "model", "shadow"):
        if isinstance(values.get(name), str):
            values[name] = Path(values[name])
    return ServiceConfig(**values)


def cmd_run(args: argparse.Namespace) -> int:
    from stream import kafka
    from stream.model import env_threads
    from stream.service import Service

    env_threads()
    flags = {k: v for k, v in vars(args).items() if k in {f.name for f in dataclasses.fields(ServiceConfig)}}
    flags["kafka_options"] = kafka.parse_options(args.kafka_options)
    cfg = resolve_config(flags, args.config)
    logging.getLogger("seqsentry").setLevel(logging.INFO)
    svc = Service(cfg)
    svc.setup()
    print(f"seqsentry: model {svc.serving_version} consuming {cfg.topic} on {cfg.bootstrap}; alerts -> "
          f"{cfg.alerts_topic}; metrics {svc.metrics_url}/metrics (Ctrl-C stops cleanly)", flush=True)
    svc.run()
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from stream import registry
    from stream.cli import _log_spec
    from stream.detector import Detector
    from stream.model import Scorer
    from stream.offline import score_log

    scorer = Scorer.load(args.model or registry.current(args.registry), args.device)
    det = Detector(scorer, cooldown_ms=int(args.cooldown_s * 1000), coalesce=False)
    stats = score_log(args.log, det, args.out, spec=_log_spec(args), dead_letter_out=args.dead_letters,
                      show_progress=not args.quiet)
    print(json.dumps(dataclasses.asdict(stats)))
    print(f"{stats.alerts:,} alerts from {stats.events:,} events -> {args.out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from stream.cli import _log_args

    p = sub.add_parser("run", help="run the streaming detector against Kafka")
    p.add_argument("--config", type=Path, help="YAML file with settings (flags and SEQSENTRY_* override it)")
    p.add_argument("--bootstrap", "-b", help="Kafka bootstrap servers")
    p.add_argument("-X", dest="kafka_options", action="append", default=[], metavar="KEY=VALUE",
                   help="librdkafka setting passed through (repeatable)")
    p.add_argument("--topic", "-t")
    p.add_argument("--alerts-topic")
    p.add_argument("--dlq-topic")
    p.add_argument("--group")
    p.add_argument("--registry", type=Path)
    p.add_argument("--model", type=Path, help="serve this artifact (no hot reload)")
    p.add_argument("--shadow", type=Path, help="candidate artifact scored alongside, without alerting")
    p.add_argument("--device", help="auto | cpu | cuda")
    p.add_argument("--max-batch-size", type=int)
    p.add_argument("--max-wait-ms", type=float)
    p.add_argument("--max-queue-windows", type=int)
    p.add_argument("--cooldown-s", type=float)
    p.add_argument("--coalesce", action="store_true", default=None,
                   help="score only each user's newest pending window (faster under load, not replay-exact)")
    p.add_argument("--metrics-host")
    p.add_argument("--metrics-port", type=int)
    p.add_argument("--reload-interval-s", type=float)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("score", help="score a recorded log offline with the live pipeline; alerts to a file")
    p.add_argument("log", type=Path)
    p.add_argument("--out", type=Path, default=Path("alerts.jsonl"))
    p.add_argument("--dead-letters", type=Path, help="write rejected records with reasons here")
    p.add_argument("--model", type=Path)
    p.add_argument("--registry", type=Path, default=Path("registry"))
    p.add_argument("--device", default="auto")
    p.add_argument("--cooldown-s", type=float, default=600.0)
    p.add_argument("--quiet", "-q", action="store_true")
    _log_args(p)
    p.set_defaults(func=cmd_score)
