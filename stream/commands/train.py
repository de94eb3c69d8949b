"""`seqsentry train` and `seqsentry evaluate`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from stream.window_defaults import DEFAULT_MAX_EVENTS, DEFAULT_SPAN_MS
from training import defaults


def _window_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--window-events", type=int, help=f"events per window (default {DEFAULT_MAX_EVENTS})")
    p.add_argument("--window-span", type=float, help=f"window span in seconds (default {DEFAULT_SPAN_MS // 1000})")


def _init_from(args: argparse.Namespace) -> Path | None:
    """The artifact ``--init-from`` names (a path, a registry version or ``current``), or None."""
    if not args.init_from:
        return None
    from stream import compare

    path = compare.resolve_model(args.init_from, args.registry)
    if path is None:
        raise ValueError("--init-from none: name the classifier to continue (a directory, a version or current)")
    return path


def cmd_train(args: argparse.Namespace) -> int:
    from stream import logs
    from stream.commands.log_options import log_spec as _log_spec
    from stream.commands.log_options import report_log_quality, summary_on_refusal
    from stream.model import ModelSize
    from stream.windows import WindowConfig
    from training import dataset, train

    spec = _log_spec(args)
    window = WindowConfig(**{k: v for k, v in (("max_events", args.window_events),
                                               ("span_ms", int(args.window_span * 1000) if args.window_span else None))
                             if v is not None})
    size = ModelSize(layers=args.layers, hidden=args.hidden, heads=args.heads, intermediate=args.hidden * 2)
    cfg = train.default_config(size=size, window=window, pretrain_steps=args.pretrain_steps,
                               finetune_epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                               user_alert_rate=args.user_alert_rate, seed=args.seed, device=args.device,
                               zero_label=args.zero_label, max_train_windows=args.max_train_windows,
                               sustain=args.sustain, init_from=_init_from(args),
                               cross_fit_folds=args.cross_fit_folds)
    tally = logs.RejectTally()
    passes = []

    def batches():  # the first pass over the log counts its rejects and refuses a mostly-rejected log
        passes.append(1)
        if len(passes) == 1:
            return dataset.batches_from_log(args.log, spec, tally, args.max_reject_share)
        return dataset.batches_from_log(args.log, spec)

    with summary_on_refusal(tally):
        res = train.train(batches, args.out, cfg, registry_dir=None if args.no_registry else args.registry,
                          show=not args.quiet,
                          verdicts={u: lab.label for u, lab in spec.labels.items()} if spec.labels else None)
    report_log_quality(tally, args.max_reject_share)
    print(res.order)
    if res.budget:
        print(res.budget)
    print(f"trained {res.kind} model {res.version} in {res.seconds:.0f}s; threshold {res.threshold:.4g}")
    print(f"artifact: {res.artifact}")
    if res.verdicts:
        from training import verdicts

        print(verdicts.line(res.verdicts))
    if res.report:
        t = res.report["transformer"]
        print(_users_line(t["users"]))
        if warning := catch_warning(t["users"]):
            print(warning)
        print(f"windows: PR-AUC {t['pr_auc']:.3f}, ROC-AUC {t['roc_auc']:.3f}; report: {res.report_dir / 'report.md'}")
        if res.kind == "classifier":
            print("(test attackers include attacks injected from the log's own traffic: a check of the model, "
                  "not a measure of attacks it has never seen)")
    else:
        print(f"no labelled test users: calibration report only: {res.report_dir / 'report.md'}")
    return 0


def catch_warning(u: dict) -> str | None:
    """One line when the threshold catches none of the attackers injected into the log's own test users."""
    if not u["attackers"] or u["detected"]:
        return None
    # seen on a 43-user log: a cross-fitted threshold above every score the served model gives
    return (f"warning: the threshold catches none of the {u['attackers']} attackers injected into this log's own "
            f"test users: this model alerts on nothing it was trained to catch. Train on a longer log (on a few "
            f"dozen users the threshold can lie beyond the model's scores).")


def _users_line(u: dict) -> str:
    ttd = u["time_to_detect_events_median"]
    return (f"test users: {u['detected']}/{u['attackers']} attackers caught, precision over alerted users "
            f"{u['precision']:.1%}, {u['normal_users_alerted']}/{u['normal_users']} normal users alerted "
            f"({u['normal_user_alert_rate']:.2%}; per day {u['normal_user_alert_rate_per_day_mean']:.2%}), "
            f"median events to detect {'-' if ttd is None else f'{ttd:.0f}'}")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from stream import logs, registry
    from stream.commands.log_options import log_spec as _log_spec
    from stream.commands.log_options import report_log_quality, summary_on_refusal
    from stream.model import Scorer
    from training import dataset, metrics

    model_dir = args.model or registry.current(args.registry)
    scorer = Scorer.load(model_dir, args.device)
    art = scorer.artifact
    tally = logs.RejectTally()
    with summary_on_refusal(tally):
        evs, order = dataset.read_events(dataset.batches_from_log(args.log, _log_spec(args), tally,
                                                                  args.max_reject_share))
        # as `seqsentry score` reads it: in time order, sessions still open at the end stay open
        ws = dataset.build_windows(dataset.batches_from_events(evs, art.window_config, end_sessions=False),
                                   art.vocab, art.window_config)
    report_log_quality(tally, args.max_reject_share)
    print(order.line())
    if not ((ws.label == 1).any() and (ws.label == 0).any()):
        raise ValueError(f"{args.log} has no labelled normal and attack events to evaluate against; pass --labels")
    # exact sustained scores below the threshold too, so the curves rank as training's report does
    scores = {"transformer": scorer.score(ws.encoded(), floor=float("-inf"))}
    report = {"transformer": metrics.evaluate(scores["transformer"], ws, art.meta.threshold)}
    out = args.out or Path(model_dir) / "evaluation"
    metrics.write_report(out, report, scores, ws, title=f"seqsentry {art.version} on {Path(args.log).name}")
    r = report["transformer"]
    print(_users_line(r["users"]).replace("test users", "users"))
    print(json.dumps({"users": r["users"], **{k: r[k] for k in ("windows", "positives", "pr_auc", "roc_auc", "precision",
                                                                "recall", "fpr")}}))
    print(f"report: {out / 'report.md'}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from stream.commands.log_options import log_args as _log_args

    p = sub.add_parser("train", help="train a classifier from a recorded log: its own users as normal, attacks "
                                     "injected into its own traffic (plus --labels) as positive; or --zero-label")
    p.add_argument("log", type=Path)
    p.add_argument("--registry", type=Path, default=Path("registry"), help="registry to publish into")
    p.add_argument("--no-registry", action="store_true", help="only write the artifact under --out")
    p.add_argument("--out", type=Path, default=Path("runs"), help="where artifacts and reports are written")
    p.add_argument("--zero-label", action="store_true",
                   help="no classifier: alert on events the log's own traffic makes improbable (masked-event "
                        "surprise); for closed grammars such as machine logs, where unseen is what matters")
    p.add_argument("--pretrain-steps", type=int, default=defaults.PRETRAIN_STEPS, help="masked-event pretraining steps")
    p.add_argument("--epochs", type=int, default=defaults.FINETUNE_EPOCHS,
                   help="max fine-tuning epochs (early stopping on val PR-AUC)")
    p.add_argument("--batch-size", type=int, default=defaults.BATCH_SIZE, help="windows per step")
    p.add_argument("--lr", type=float, default=defaults.LR, help="AdamW learning rate")
    p.add_argument("--layers", type=int, default=2, help="transformer layers")
    p.add_argument("--hidden", type=int, default=64, help="hidden size (feed-forward: twice this)")
    p.add_argument("--heads", type=int, default=4, help="attention heads")
    p.add_argument("--user-alert-rate", type=float, default=defaults.USER_ALERT_RATE,
                   help="alert budget: share of normal users alerted, over the log and per day")
    p.add_argument("--sustain", type=int, default=defaults.SUSTAIN,
                   help="a classifier alerts once this many consecutive events' windows reach the threshold")
    p.add_argument("--max-train-windows", type=int, default=defaults.MAX_TRAIN_WINDOWS,
                   help="training windows at most: every positive (up to half) and a sample of the rest")
    p.add_argument("--cross-fit-folds", type=int, default=defaults.CROSS_FIT_FOLDS,
                   help="a log with too few held-out users for the budget (under ~250 users at 0.5%%) sets the "
                        "threshold on every user, each scored by one of this many models trained without them "
                        "(each fine-tuned from the served model's pretraining: about 2-3x the training time; "
                        "0: off, no budget promised)")
    p.add_argument("--init-from", metavar="MODEL",
                   help="continue a classifier (an artifact directory, a registry version or current): its "
                        "vocabulary, window and weights, fine-tuned on this log (with --labels: the verdicts) "
                        "without pretraining, and kept as it was unless fine-tuning beats it on validation")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--quiet", "-q", action="store_true")
    _window_args(p)
    _log_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="evaluate a model on a labelled log (report + plots)")
    p.add_argument("log", type=Path)
    p.add_argument("--model", type=Path, help="artifact directory (default: the registry's current)")
    p.add_argument("--registry", type=Path, default=Path("registry"))
    p.add_argument("--out", type=Path, help="report directory (default: MODEL/evaluation)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    _log_args(p)
    p.set_defaults(func=cmd_evaluate)
