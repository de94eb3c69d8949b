"""Detection on real labelled sequences: the HDFS block sessions in ../shared/data/hdfs/.

    python -m bench realdata [--data ../shared/data/hdfs] [--quick]

Sessions become events the way a user would feed any sessionised log to seqsentry: one
user per session (``user_id`` = block), one event per log key (``type`` = ``E<key>``),
1 s between a session's events, sessions starting one hour apart (so the stock 30-minute
session gap closes each one), and one last event an hour after the final session so the
stream moves past it. The logs are written as JSONL and read back through the normal log
readers (stream.logs); models are trained with the stock defaults (training.train) and
scored through the stock offline pipeline (stream.offline, the `seqsentry score` code).

Splits (the data's README asks to say how):

* zero-label: trained on ``hdfs_train`` (4,855 normal sessions, the DeepLog split);
  tested on the label-0 rows of both RobustLog CSVs (7,000 normal sessions from the big
  normal set, which this folder does not hold) and ``hdfs_test_abnormal`` (16,838).
* supervised: trained on ``robust_log_train.csv`` (6,000 / 6,000), tested on
  ``robust_log_valid.csv`` (1,000 / 1,000).

A session is flagged when seqsentry alerts on it at the stock threshold; its score for
ROC/PR is its highest window score. Baselines on the identical splits: a lookup of
2-grams never seen in normal training sessions (with start and end markers), a lookup of
count vectors never seen in normal training sessions, and - supervised - logistic
regression on count vectors plus length. Results: bench/results/realdata.json, the
"Real data" section of docs/quality.md, bench/results/realdata.png.
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import orjson

from bench.common import RESULTS, ROOT, save
from stream import progress
from stream.detector import Detector
from stream.model import Scorer
from stream.offline import score_log
from training import dataset, metrics, train

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "hdfs"
T0_MS = 1_700_000_000_000
SESSION_SPACING_MS = 3_600_000
DOC_START, DOC_END = "<!-- realdata:start -->", "<!-- realdata:end -->"
CLICKS_START, CLICKS_END = "<!-- realdata-clicks:start -->", "<!-- realdata-clicks:end -->"


def read_sessions(data: Path) -> dict[str, list[tuple[list[str], int]]]:
    """The splits as lists of (keys, label)."""
    def lines(name: str, label: int) -> list[tuple[list[str], int]]:
        return [(ln.split(), label) for ln in (data / name).read_text().splitlines() if ln.strip()]

    def rows(name: str) -> list[tuple[list[str], int]]:
        with open(data / name, newline="") as f:
            return [(r["Sequence"].split(), int(r["label"])) for r in csv.DictReader(f)]

    robust_train, robust_valid = rows("robust_log_train.csv"), rows("robust_log_valid.csv")
    return {
        "zero_label_train": lines("hdfs_train", 0),
        "zero_label_test": [s for s in robust_train + robust_valid if s[1] == 0] + lines("hdfs_test_abnormal", 1),
        "supervised_train": robust_train,
        "supervised_test": robust_valid,
    }


def write_log(path: Path, sessions: list[tuple[list[str], int]], *, labels: bool, seed: int) -> list[str]:
    """Sessions as a JSONL event log (shuffled, one hour apart); returns the user id of each session."""
    order = np.random.default_rng(seed).permutation(len(sessions))
    users = [f"blk{i:06d}" for i in range(len(sessions))]
    last = T0_MS
    with open(path, "wb") as f:
        for slot, i in enumerate(order.tolist()):
            keys, label = sessions[i]
            start = T0_MS + slot * SESSION_SPACING_MS
            for pos, key in enumerate(keys):
                rec = {"user_id": users[i], "ts": start + pos * 1000, "type": f"E{key}"}
                if labels:
                    rec |= {"label": label, "attack": "hdfs-anomaly" if label else None}
                f.write(orjson.dumps({k: v for k, v in rec.items() if v is not None}) + b"\n")
                last = max(last, start + pos * 1000)
        # the stream moves on past the last session, as a live one would
        end = {"user_id": "__end-of-log__", "ts": last + SESSION_SPACING_MS, "type": "E0"}
        f.write(orjson.dumps(end | ({"label": 0} if labels else {})) + b"\n")
    return users


def session_scores(model_dir: Path, log: Path, users: list[str]) -> tuple[np.ndarray, float]:
    """Each session's highest window score under a model, and the model's threshold."""
    scorer = Scorer.load(model_dir, "cpu")
    art = scorer.artifact
    ws = dataset.build_windows(dataset.batches_from_log(log), art.vocab, art.window_config)
    s = scorer.score(ws.encoded(), floor=-np.inf)  # exact sustained scores below the threshold too (ROC, PR)
    index = {u: i for i, u in enumerate(ws.users)}
    best = np.full(len(users), -np.inf)
    known = np.array([index.get(u, -1) for u in users])
    per_user = np.full(len(ws.users), -np.inf)
    np.maximum.at(per_user, ws.user, s)
    best[known >= 0] = per_user[known[known >= 0]]
    return best, art.meta.threshold


def alerted_sessions(model_dir: Path, log: Path, work: Path) -> tuple[set[str], dict]:
    """Users the stock offline pipeline (`seqsentry score`) alerts on."""
    out = work / f"alerts-{log.stem}.jsonl"
    stats = score_log(log, Detector(Scorer.load(model_dir, "cpu")), out, show_progress=True)
    users = {orjson.loads(line)["user_id"] for line in out.read_bytes().splitlines()}
    return users, {"events": stats.events, "windows": stats.windows, "alerts": stats.alerts,
                   "seconds": round(stats.seconds, 1), "windows_per_s": round(stats.windows / stats.seconds, 1)}


def _prf(y: np.ndarray, flagged: np.ndarray) -> dict:
    r = metrics.at_threshold(y, flagged.astype(np.float64), 0.5)
    return {k: r[k] for k in ("precision", "recall", "f1", "tp", "fp", "fn")}


def _grams(keys: list[str]) -> set[tuple[str, str]]:
    s = ["<s>", *keys, "</s>"]
    return set(zip(s[:-1], s[1:], strict=False))


def _counts(keys: list[str]) -> tuple:
    return tuple(sorted(Counter(keys).items()))


def baselines(train_sessions: list, test_sessions: list, supervised: bool) -> dict[str, dict]:
    """Session-level baselines on the same split."""
    normal_train = [k for k, lab in train_sessions if lab == 0]
    y = np.array([lab for _, lab in test_sessions])
    seen_grams = set().union(*(_grams(k) for k in normal_train))
    seen_counts = {_counts(k) for k in normal_train}
    unseen_grams = np.array([len(_grams(k) - seen_grams) for k, _ in test_sessions], dtype=np.float64)
    out = {
        "unseen_2gram_lookup": {**_prf(y, unseen_grams > 0), "roc_auc": metrics.roc_auc(y, unseen_grams),
                                "pr_auc": metrics.average_precision(y, unseen_grams), "scores": unseen_grams},
        "unseen_count_vector_lookup": {},
    }
    flagged = np.array([_counts(k) not in seen_counts for k, _ in test_sessions], dtype=np.float64)
    out["unseen_count_vector_lookup"] = {**_prf(y, flagged > 0), "roc_auc": metrics.roc_auc(y, flagged),
                                         "pr_auc": metrics.average_precision(y, flagged), "scores": flagged}
    if supervised:
        from sklearn.linear_model import LogisticRegression

        keys = sorted({k for s, _ in train_sessions + test_sessions for k in s})

        def feats(ss: list) -> np.ndarray:
            x = np.array([[Counter(s)[k] for k in keys] + [len(s)] for s, _ in ss], dtype=np.float64)
            return np.log1p(x)

        clf = LogisticRegression(max_iter=2000).fit(feats(train_sessions), [lab for _, lab in train_sessions])
        p = clf.predict_proba(feats(test_sessions))[:, 1]
        out["count_vector_logistic_regression"] = {**_prf(y, p >= 0.5), "roc_auc": metrics.roc_auc(y, p),
                                                   "pr_auc": metrics.average_precision(y, p), "scores": p}
    return out


def run_mode(name: str, train_s: list, test_s: list, work: Path, supervised: bool, quick: bool) -> dict:
    """Train with the stock defaults, score the test log, compare with the baselines."""
    t0 = time.time()
    train_log, test_log = work / f"{name}-train.jsonl", work / f"{name}-test.jsonl"
    write_log(train_log, train_s, labels=supervised, seed=1)
    users = write_log(test_log, test_s, labels=False, seed=2)
    overrides = {"pretrain_steps": 60, "finetune_epochs": 1} if quick else {}
    cfg = train.default_config(zero_label=not supervised, **overrides)
    res = train.train(lambda: dataset.batches_from_log(train_log), work / "runs", cfg, show=True)
    alerted, stats = alerted_sessions(res.artifact, test_log, work)
    scores, threshold = session_scores(res.artifact, test_log, users)
    y = np.array([lab for _, lab in test_s])
    flagged = np.array([u in alerted for u in users])
    consistent = bool((flagged == (scores >= threshold)).all())
    model = {**_prf(y, flagged), "roc_auc": metrics.roc_auc(y, scores), "pr_auc": metrics.average_precision(y, scores),
             "scores": scores, "threshold": threshold, "alerts_match_max_scores": consistent, "scoring": stats,
             "kind": res.kind, "version": res.version, "train_seconds": round(res.seconds, 1),
             "normal_sessions_alerted": float(flagged[y == 0].mean()),
             "user_alert_rate_target": cfg.user_alert_rate}
    return {"train_sessions": len(train_s), "test_normal": int((y == 0).sum()), "test_abnormal": int((y == 1).sum()),
            "seconds": round(time.time() - t0, 1), "y": y, "seqsentry": model,
            **baselines(train_s, test_s, supervised)}


CLICKSTREAMS = {  # file -> how a user would read it (stream.logs options)
    "yoochoose_clicks_100k.tsv": {"columns": {"SessionId": "user_id", "ItemId": "item_id", "Time": "ts"},
                                  "constants": {"type": "click"}},
    "taobao_userbehavior_sample.csv": {"column_names": ["user_id", "item_id", "category_id", "type", "ts"],
                                       "value_maps": {"type": {"pv": "view", "fav": "favourite", "buy": "purchase"}}},
    "diginetica_item_views_sample.csv": None,  # ts = eventdate + timeframe: converted below, as a user would
}


def _diginetica(path: Path) -> list[dict]:
    from datetime import UTC, datetime

    out = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f, delimiter=";"):
            day = int(datetime.fromisoformat(r["eventdate"]).replace(tzinfo=UTC).timestamp() * 1000)
            out.append({"user_id": f"s{r['session_id']}", "ts": day + int(r["timeframe"]), "type": "view",
                        "item_id": r["item_id"]})
    out.sort(key=lambda r: r["ts"])
    return out


def clickstream_alert_share(data: Path, work: Path) -> dict:
    """Real normal clickstreams: half the users train a zero-label model the default way, the other half
    is scored; the share of those users alerted is compared with the budget."""
    from stream import logs

    out = {}
    for name, opts in CLICKSTREAMS.items():
        path = data / name
        if not path.is_file():
            continue
        if opts is None:
            records = _diginetica(path)
        else:
            records = [e.to_record() for res in logs.iter_events(path, logs.LogSpec(**opts)) for e in res.events.events]
        users = sorted({r["user_id"] for r in records})
        held = set(np.array(users)[dataset.user_bucket(users) >= 50].tolist())
        a, b = work / f"{path.stem}-a.jsonl", work / f"{path.stem}-b.jsonl"
        logs.write_log(a, [[r for r in records if r["user_id"] not in held]])
        logs.write_log(b, [[r for r in records if r["user_id"] in held]])
        cfg = train.default_config()
        res = train.train(lambda a=a: dataset.batches_from_log(a), work / "runs", cfg, show=True)
        alerted, stats = alerted_sessions(res.artifact, b, work)
        days = {}
        for r in records:
            if r["user_id"] in held:
                days.setdefault(r["ts"] // metrics.DAY_MS, set()).add(r["user_id"])
        share_day = [len(us & alerted) / len(us) for us in days.values() if len(us) >= 50]
        out[name] = {"events": len(records), "users_trained": len(users) - len(held), "users_scored": len(held),
                     "users_alerted": len(alerted), "share_alerted": len(alerted) / max(len(held), 1),
                     "share_alerted_per_day_mean": float(np.mean(share_day)) if share_day else None,
                     "budget": cfg.user_alert_rate, "kind": res.kind, "scoring": stats}
    return out


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 5), squeeze=False)
    for ax, (mode, r) in zip(axes[0], results.items(), strict=True):
        for name, m in r.items():
            if isinstance(m, dict) and "scores" in m:
                p, rec = metrics.pr_curve(r["y"], m["scores"])
                ax.plot(rec, p, label=f"{name} (AP {m['pr_auc']:.3f}, F1 {m['f1']:.3f})")
        ax.set(title=f"HDFS sessions, {mode.replace('_', ' ')}", xlabel="recall", ylabel="precision", ylim=(0, 1.02))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(results: dict) -> str:
    lines = []
    for mode, r in results.items():
        lines += [f"**{mode.replace('_', ' ')}** (`{r.get('command', '')}`) — {r['train_sessions']:,} training sessions; test "
                  f"{r['test_normal']:,} normal + {r['test_abnormal']:,} abnormal sessions.", "",
                  "| detector | precision | recall | F1 | ROC-AUC | PR-AUC |", "|---|---|---|---|---|---|"]
        for name, m in r.items():
            if isinstance(m, dict) and "f1" in m:
                bold = "**" if name == "seqsentry" else ""
                lines.append(f"| {bold}{name}{bold} | {m['precision']:.3f} | {m['recall']:.3f} | {bold}{m['f1']:.3f}{bold} | "
                             f"{m['roc_auc']:.3f} | {m['pr_auc']:.3f} |")
        s = r["seqsentry"]
        lines += ["", f"seqsentry at its stock threshold ({s['kind']}, budget {s['user_alert_rate_target']:.1%} of normal "
                  f"users): {s['normal_sessions_alerted']:.2%} of test normal sessions alerted; scoring "
                  f"{s['scoring']['windows_per_s']:,.0f} windows/s with explanations; training {s['train_seconds']:.0f} s.", ""]
    return "\n".join(lines)


def click_table(clicks: dict) -> str:
    if not clicks:
        return ""
    lines = ["", "### Alert budget on real normal clickstreams", "",
             "Each file's users are split in half by a stable hash; a model is trained the default way on one half "
             "(zero-label: the files have no labels) and the other half is scored with `seqsentry score`. None of "
             "these users is known to be an attacker, so every alerted user counts against the budget.", "",
             "| log | events | users scored | users alerted | share alerted | per day (days with ≥ 50 users) | budget |",
             "|---|---|---|---|---|---|---|"]
    for name, c in clicks.items():
        day = "-" if c["share_alerted_per_day_mean"] is None else f"{c['share_alerted_per_day_mean']:.2%}"
        lines.append(f"| {name} | {c['events']:,} | {c['users_scored']:,} | {c['users_alerted']:,} | "
                     f"{c['share_alerted']:.2%} | {day} | {c['budget']:.1%} |")
    return "\n".join(lines) + "\n"


def write_doc(body: str, start: str = DOC_START, end: str = DOC_END) -> None:
    """Replace (or append) one marked block of docs/quality.md; the rest of the page is left alone."""
    doc = ROOT / "docs" / "quality.md"
    text = doc.read_text() if doc.exists() else "# Detection quality\n"
    block = f"{start}\n{body}\n{end}"
    if start in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    doc.write_text(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench realdata", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder holding the HDFS files")
    ap.add_argument("--modes", default="zero_label,supervised,clickstreams",
                    help="comma-separated: zero_label, supervised (HDFS), clickstreams (alert share on real normal logs)")
    ap.add_argument("--quick", action="store_true", help="a few training steps (a smoke run, not a result)")
    args = ap.parse_args(argv)
    if not (args.data / "hdfs_train").is_file():
        print(f"skip: no HDFS data at {args.data} (pass --data)")
        return 0
    sessions = read_sessions(args.data)
    results, clicks = {}, {}
    with tempfile.TemporaryDirectory(prefix="seqsentry-realdata-") as tmp, progress.bar(transient=True) as bar:
        task = bar.add_task("realdata", total=len(args.modes.split(",")), rate="")
        for mode in args.modes.split(","):
            if mode == "clickstreams":
                clicks = clickstream_alert_share(args.data.parent, Path(tmp))
                bar.update(task, advance=1)
                continue
            sup = mode == "supervised"
            results[mode] = run_mode(mode, sessions[f"{mode}_train"], sessions[f"{mode}_test"], Path(tmp), sup,
                                     args.quick)
            bar.update(task, advance=1)
    command = "python -m bench realdata" + (" --quick" if args.quick else "")
    if results:
        for mode, r in results.items():  # one plot per mode, so a run of one mode leaves the other's alone
            plot({mode: r}, ROOT / "bench" / "results" / f"realdata-{mode}.png")
        clean = {m: {k: ({kk: vv for kk, vv in v.items() if kk != "scores"} if isinstance(v, dict) else v)
                     for k, v in r.items() if k != "y"} for m, r in results.items()}
        saved = RESULTS / "realdata.json"
        merged = json.loads(saved.read_text())["results"] if saved.exists() else {}
        merged.update({m: {**r, "command": f"{command} --modes {m}"} for m, r in clean.items()})
        if not args.quick:  # a smoke run is not a result
            save("realdata", {"results": merged})
        body = ("## Real data: HDFS block sessions\n\nOn this 2-core CPU machine. How sessions become events and how "
                "the data is split: `bench/realdata.py`'s docstring.\n\n" + table(merged)
                + "".join(f"\n![{m}](../bench/results/realdata-{m}.png)\n" for m in merged))
        if not args.quick:
            write_doc(body)
        print(table(clean))
    if clicks:
        if not args.quick:
            write_doc(f"Command: `{command} --modes clickstreams`.\n" + click_table(clicks), CLICKS_START, CLICKS_END)
        if not args.quick:
            save("realdata-clickstreams", {"command": command + " --modes clickstreams", "results": clicks})
        print(click_table(clicks))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
