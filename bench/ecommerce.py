"""Detection on real e-commerce traffic with attacks the project never generated for training.

    python -m bench ecommerce [--data ../shared/data] [--datasets yoochoose,diginetica,taobao]
                              [--per-kind 30] [--share 0.05] [--budget 0.005] [--seed 0]
                              [--small | --no-small] [--quick | --scratch]

Normal users are the real clickstreams in ``--data`` (never copied into the repository):
YOOCHOOSE (SessionId/ItemId/Time, clicks), DIGINETICA (session_id = the user, time =
eventdate + timeframe, views) and Taobao (user_id, item_id, category_id, pv/cart/fav/buy,
Unix seconds). Each is split by **time**: the cut lies at 60 % of its time range (0.1-99.9 %
percentiles, so one dirty timestamp does not move it); events before the cut are the
training log, events after it the test period, whose users are the test normals (sessions
that straddle the cut keep their later part). Attacks come from ``bench/attackgen.py``,
which shares nothing with training: ``--per-kind`` attackers of each of its eight kinds (fewer
when the test period has too few normal users to keep the attacker share), the test normals
sub-sampled so that attackers are ``--share`` of the test users, placed at random times inside
the test period, with the dataset's own item ids and event types. The test log is written in
the platform's own column layout, time-ordered as a stream would be; who attacked, and with
which events, is kept in a separate truth file.

The detector is trained with the stock CLI and its defaults on the training log only
(``seqsentry train TRAIN <the dataset's --map flags> --no-registry --out DIR``, in process
through ``stream.cli.main``) and the test log is scored with ``seqsentry score`` (the stock
offline pipeline); alerts are read at the user level. Baselines, on identical data and at the
same budget, calibrated on the training period's users (at most ``--budget`` of them alerted)
and applied in streaming fashion (a user is alerted at the first event after which its
features cross the threshold): IsolationForest on six per-user features (clicks, mean and CV
of gaps, distinct-item share, max clicks per minute, min gap), the rule "more than N clicks
in a 60 s window", and a lookup of event types never seen in training.

Small-data regime (``--small`` alone, or the second section of a full run): HDFS (random 20,
50, 200 training sessions of ``hdfs_train``; a sample of held-out normal and abnormal
sessions; session F1) and each clickstream with 20, 50, 200 training users (held-out
test-period users, all normal: share alerted), beside the unseen-event-type lookup, with the
budget the artifact says it can honour (read from its meta/report where present).

Results: bench/results/ecommerce.json, bench/results/ecommerce.png, the
``<!-- ecommerce:start -->`` block of docs/quality.md. ``--quick`` shrinks everything and
writes none of them (a smoke run, not a result).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import importlib
import json
import re
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson

from bench import attackgen
from bench.common import RESULTS, ROOT, save
from stream import progress

DEFAULT_DATA = ROOT.parent / "shared" / "data"
DOC_START, DOC_END = "<!-- ecommerce:start -->", "<!-- ecommerce:end -->"
BLIND_START, BLIND_END = "<!-- ecommerce-blind:start -->", "<!-- ecommerce-blind:end -->"
DAY_MS = 86_400_000
CUT = 0.6
DETECTORS = ("seqsentry", "isolation_forest", "rate_rule", "unseen_type")
#: The attack generators ``--generator`` picks from: ``attackgen`` (the benchmark's own) and
#: ``attackgen_blind`` (a second one written without reading training's library, attackgen or the
#: detector, from a description of the kinds alone: a held-out check that the first has not become
#: something the detector was tuned to). Results of the blind one go to their own files and doc block.
GENERATORS = ("attackgen", "attackgen_blind")


def generator(name: str):
    """The attack generator module ``name`` (one of GENERATORS)."""
    if name not in GENERATORS:
        raise ValueError(f"unknown generator {name!r}: one of {', '.join(GENERATORS)}")
    return importlib.import_module(f"bench.{name}")


# --- datasets: read, and write back in the platform's own layout ---------------------------------

@dataclass
class Dataset:
    name: str
    events: list[tuple[str, int, str, str]]  # (user, ts_ms, type, item), any order
    view: str
    cart: str | None = None
    buy: str | None = None
    fav: str | None = None
    category: dict[str, str] = field(default_factory=dict)  # item -> category (Taobao)
    suffix: str = ".csv"
    flags: list[str] = field(default_factory=list)  # how a user describes this log to the CLI

    def write(self, path: Path, evs: list[tuple[str, int, str, str]]) -> None:
        evs = sorted(evs, key=lambda e: e[1])  # time order, as the platform's stream has it
        with open(path, "w", newline="") as f:
            if self.name == "yoochoose":
                f.write("SessionId\tItemId\tTime\n")
                f.writelines(f"{u}\t{i}\t{t / 1000:.3f}\n" for u, t, _, i in evs)
            elif self.name == "diginetica":
                f.write("session_id;item_id;time_ms\n")
                f.writelines(f"{u};{i};{t}\n" for u, t, _, i in evs)
            else:  # taobao: no header
                f.writelines(f"{u},{i},{self.category.get(i, '0')},{ty},{t // 1000}\n" for u, t, ty, i in evs)


def load(name: str, data: Path) -> Dataset | None:
    if name == "yoochoose":
        path = data / "yoochoose_clicks_100k.tsv"
        if not path.is_file():
            return None
        with open(path, newline="") as f:
            evs = [(r["SessionId"], round(float(r["Time"]) * 1000), "click", r["ItemId"])
                   for r in csv.DictReader(f, delimiter="\t")]
        return Dataset(name, evs, view="click", suffix=".tsv",
                       flags=["--map", "SessionId=user_id", "--map", "ItemId=item_id", "--map", "Time=ts",
                              "--set", "type=click"])
    if name == "diginetica":
        path = data / "diginetica_item_views_sample.csv"
        if not path.is_file():
            return None
        evs = []
        with open(path, newline="") as f:
            for r in csv.DictReader(f, delimiter=";"):
                day = int(datetime.fromisoformat(r["eventdate"]).replace(tzinfo=UTC).timestamp() * 1000)
                evs.append((r["session_id"], day + int(r["timeframe"]), "view", r["item_id"]))
        return Dataset(name, evs, view="view",
                       flags=["--map", "session_id=user_id", "--map", "time_ms=ts", "--set", "type=view"])
    if name == "taobao":
        path = data / "taobao_userbehavior_sample.csv"
        if not path.is_file():
            return None
        evs, cat = [], {}
        with open(path, newline="") as f:
            for u, i, c, ty, ts in csv.reader(f):
                evs.append((u, int(ts) * 1000, ty, i))
                cat[i] = c
        return Dataset(name, evs, view="pv", cart="cart", buy="buy", fav="fav", category=cat,
                       flags=["--columns", "user_id,item_id,category_id,type,ts",
                              "--map-values", "type:pv=view,fav=favourite,buy=purchase"])
    raise ValueError(f"unknown dataset {name!r}; use yoochoose, diginetica, taobao")


def by_user(evs: list[tuple[str, int, str, str]]) -> dict[str, list[tuple[int, str, str]]]:
    out: dict[str, list[tuple[int, str, str]]] = {}
    for u, t, ty, i in evs:
        out.setdefault(u, []).append((t, ty, i))
    for v in out.values():
        v.sort(key=lambda e: e[0])
    return out


def time_cut(evs: list[tuple[str, int, str, str]]) -> tuple[int, int, int]:
    ts = np.array([e[1] for e in evs], dtype=np.int64)
    lo, hi = np.percentile(ts, [0.1, 99.9])
    return int(lo), int(lo + CUT * (hi - lo)), int(hi)


# --- the stock CLI -------------------------------------------------------------------------------

def cli(argv: list[str]) -> None:
    """``seqsentry ARGV`` in this process, exactly as the console script runs it."""
    from stream.cli import main

    rc = main([str(a) for a in argv])
    if rc:
        raise RuntimeError(f"seqsentry {' '.join(map(str, argv[:2]))} ... exited {rc}")


def train_stock(log: Path, flags: list[str], work: Path) -> tuple[Path, float, dict]:
    """``seqsentry train LOG FLAGS`` with the stock defaults; the artifact, seconds, what it says of its budget."""
    out = work / f"runs-{log.stem}"
    t0 = time.monotonic()
    cli(["train", log, *flags, "--no-registry", "--out", out])
    secs = time.monotonic() - t0
    metas = sorted(out.glob("*/meta.json"), key=lambda p: p.stat().st_mtime)
    if not metas:
        raise RuntimeError(f"train wrote no artifact under {out}")
    return metas[-1].parent, secs, budget_info(metas[-1].parent)


_BUDGET_KEYS = re.compile(r"honou?r|feasib|smallest|achievable|min(imum)?_?(user_)?(alert_)?(rate|budget)|"
                          r"calibration_users|budget", re.I)


def budget_info(art: Path) -> dict:
    """What the artifact says of its alert budget: meta's user_alert_rate, kind and threshold, and any
    key about a budget it can honour (meta.json, report/*.json) - 'n/a' where it says nothing."""
    meta = json.loads((art / "meta.json").read_text())
    found: dict = {}

    def walk(obj: object, path: str) -> None:
        if isinstance(obj, dict):
            for k, v in obj.items():
                p = f"{path}.{k}" if path else str(k)
                if _BUDGET_KEYS.search(str(k)) and not isinstance(v, dict | list):
                    found[p] = v
                walk(v, p)

    walk(meta, "meta")
    for rep in sorted((art / "report").glob("*.json")) if (art / "report").is_dir() else []:
        with contextlib.suppress(ValueError, OSError):
            walk(json.loads(rep.read_text()), rep.stem)
    honour = next((v for k, v in found.items() if re.search(r"honou?r|smallest|achievable|feasible_rate", k, re.I)
                   and isinstance(v, int | float)), None)
    return {"kind": meta.get("kind"), "version": meta.get("version"), "threshold": meta.get("threshold"),
            "user_alert_rate": meta.get("user_alert_rate"),
            "honourable_budget": honour if honour is not None else "none" if any(
                "smallest" in k and v is None for k, v in found.items()) else "n/a",
            "budget_fields": found}


def score_stock(model: Path, log: Path, flags: list[str], work: Path) -> tuple[dict[str, list[int]], float]:
    """``seqsentry score LOG --model MODEL FLAGS``: each user's alert times (event time), and seconds."""
    out = work / f"alerts-{log.stem}.jsonl"
    t0 = time.monotonic()
    cli(["score", log, "--model", model, "--out", out, *flags])
    alerts: dict[str, list[int]] = {}
    for line in out.read_bytes().splitlines():
        a = orjson.loads(line)
        alerts.setdefault(str(a["user_id"]), []).append(int(a["event_time"]))
    return alerts, time.monotonic() - t0


# --- baselines -----------------------------------------------------------------------------------

def prefix_features(seq: list[tuple[int, str, str]]) -> np.ndarray:
    """The six per-user features after each of the user's events (rows = prefixes)."""
    t = np.array([e[0] for e in seq], dtype=np.float64) / 1000
    n = len(t)
    k = np.arange(1, n + 1, dtype=np.float64)
    g = np.diff(t)
    cs = np.concatenate([[0.0], np.cumsum(g)])
    cs2 = np.concatenate([[0.0], np.cumsum(g * g)])
    ng = np.maximum(k - 1, 1)
    mean = cs / ng
    std = np.sqrt(np.maximum(cs2 / ng - mean * mean, 0))
    cv = np.where(mean > 0, std / np.maximum(mean, 1e-9), 0.0)
    _, first = np.unique([e[2] for e in seq], return_index=True)
    new = np.zeros(n)
    new[first] = 1
    distinct = np.cumsum(new) / k
    per_min = np.maximum.accumulate(np.arange(n) - np.searchsorted(t, t - 60, "right") + 1)
    min_gap = np.concatenate([[3600.0], np.minimum.accumulate(g)]) if n > 1 else np.array([3600.0])
    return np.column_stack([np.log1p(k), np.log1p(mean), cv, distinct, np.log1p(per_min),
                            np.log1p(np.minimum(min_gap, 3600))])


def threshold_for(user_max: np.ndarray, budget: float) -> float:
    """The lowest threshold with at most ``budget`` of these users strictly above it."""
    s = np.sort(user_max)[::-1]
    return float(s[min(int(budget * len(s)), len(s) - 1)])


def baselines(train: dict, test: dict, budget: float, seed: int) -> dict[str, dict]:
    """IsolationForest and the 60-s rate rule, calibrated on the training users (a user's score is its
    highest over its prefixes, as a streaming rule sees it), and the unseen-event-type lookup: for each, the
    threshold and every test user's score after each of its events (alerted where the score > threshold)."""
    from sklearn.ensemble import IsolationForest

    ftrain = {u: prefix_features(s) for u, s in train.items()}
    ftest = {u: prefix_features(s) for u, s in test.items()}
    rows = np.concatenate(list(ftrain.values()))
    rng = np.random.default_rng(seed)
    if len(rows) > 100_000:
        rows = rows[rng.choice(len(rows), 100_000, replace=False)]
    forest = IsolationForest(n_estimators=200, random_state=seed).fit(rows)
    out = {}

    def per_user(fn, feats: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # one call over every user's prefixes (row-wise scores), not one per user: a forest call costs
        # milliseconds of overhead, and a test log has thousands of users
        parts = np.split(fn(np.concatenate(list(feats.values()))), np.cumsum([len(f) for f in feats.values()])[:-1])
        return dict(zip(feats, parts, strict=True))

    for name, fn in (("isolation_forest", lambda f: -forest.score_samples(f)),
                     ("rate_rule", lambda f: np.expm1(f[:, 4]).round())):
        tr = [f.max() for f in per_user(fn, ftrain).values()]
        thr = threshold_for(np.array(tr), budget)
        out[name] = {"threshold": thr, "scores": per_user(fn, ftest),
                     "train_users_alerted": float(np.mean(np.array(tr) > thr))}
    out["rate_rule"]["rule"] = f"more than {out['rate_rule']['threshold']:.0f} clicks in 60 s"
    seen = {ty for s in train.values() for _, ty, _ in s}
    out["unseen_type"] = {"threshold": 0.5, "seen_types": sorted(seen),
                          "scores": {u: np.maximum.accumulate([float(e[1] not in seen) for e in s])
                                     for u, s in test.items()}}
    return out


def first_alert_ts(seq: list[tuple[int, str, str]], scores: np.ndarray, thr: float, start: int | None) -> int | None:
    """Event time of the first event, at or after ``start``, after which a user's score is above ``thr``."""
    hit = np.flatnonzero((scores > thr) & (np.array([t for t, _, _ in seq]) >= (start or 0)))
    return seq[int(hit[0])][0] if hit.size else None


# --- metrics -------------------------------------------------------------------------------------

def user_metrics(first_alert_ts: dict[str, int | None], normals: dict, truth: list[attackgen.Attacker],
                 kinds: tuple[str, ...]) -> dict:
    """Attackers caught (per kind and timing), normal users alerted (log and per day), precision, events
    to detection. ``first_alert_ts``: for each test user the event time of its first alert at or after
    its attack started (attackers) / its first alert (normals), or None."""
    victims = {a.user_id for a in truth}
    norm = [u for u in normals if u not in victims]
    alerted = {u for u in norm if first_alert_ts.get(u) is not None}
    days: dict[int, set[str]] = {}
    for u in norm:
        for t, _, _ in normals[u]:
            days.setdefault(t // DAY_MS, set()).add(u)
    alert_day = {u: first_alert_ts[u] // DAY_MS for u in alerted}
    per_day = [sum(alert_day.get(u) == d for u in us) / len(us) for d, us in days.items() if len(us) >= 20]

    def block(group: list[attackgen.Attacker]) -> dict:
        caught, ttd = 0, []
        for a in group:
            t = first_alert_ts.get(a.user_id)
            if t is not None:
                caught += 1
                ttd.append(sum(x <= t for x in a.attack_ts))
        return {"attackers": len(group), "caught": caught, "share": caught / len(group) if group else None,
                "events_to_detect_median": float(np.median(ttd)) if ttd else None}

    total = block(truth)
    return {"overall": {**total, "normal_users": len(norm), "normal_alerted": len(alerted),
                        "normal_alert_share": len(alerted) / max(len(norm), 1),
                        "normal_alert_share_per_day_mean": float(np.mean(per_day)) if per_day else None,
                        "precision": total["caught"] / (total["caught"] + len(alerted)) if total["caught"] + len(alerted)
                        else None},
            "kinds": {k: block([a for a in truth if a.kind == k]) for k in kinds},
            "timing": {tm: block([a for a in truth if a.timing == tm]) for tm in ("machine", "human")},
            "kind_timing": {f"{k}/{tm}": block([a for a in truth if a.kind == k and a.timing == tm])
                            for k in kinds for tm in ("machine", "human")}}


def first_after(times: list[int] | None, start: int | None) -> int | None:
    if not times:
        return None
    ok = [t for t in times if start is None or t >= start]
    return min(ok) if ok else None


# --- one dataset ---------------------------------------------------------------------------------

@dataclass
class Prepared:
    """One dataset's benchmark logs: the training period, the test period with attacks, the truth."""

    train_u: dict[str, list[tuple[int, str, str]]]
    normals: dict[str, list[tuple[int, str, str]]]
    truth: list[attackgen.Attacker]
    train_log: Path
    test_log: Path
    test_seqs: dict[str, list[tuple[int, str, str]]]
    attack_evs: list[dict]
    per_kind: int
    n_norm_all: int
    cut: int
    hi: int


def prepare(ds: Dataset, work: Path, args: argparse.Namespace) -> Prepared:
    """Split ``ds`` by time, inject ``attackgen``'s attackers into the test period, write both logs
    in the platform's own layout (and the truth apart). Used by run_dataset and bench.feedback_loop."""
    rng = np.random.default_rng(args.seed)
    lo, cut, hi = time_cut(ds.events)
    train_u = by_user([e for e in ds.events if e[1] < cut])
    test_u = by_user([e for e in ds.events if e[1] >= cut])
    if args.quick:  # a smoke run: a slice of the users
        keep = sorted(train_u)[:: max(1, len(train_u) // 1500)]
        train_u = {u: train_u[u] for u in keep}
    gen = generator(getattr(args, "generator", "attackgen"))
    kinds = gen.KINDS
    n_norm_all = len(test_u)
    per_kind = min(args.per_kind, max(1, int(args.share / (1 - args.share) * n_norm_all / len(kinds))))
    n_attackers = per_kind * len(kinds)
    # takeover victims are real test users, counted as attackers: the normals needed, plus them
    n_norm = min(n_norm_all, max(1, round(n_attackers * (1 - args.share) / args.share)) + per_kind)
    users = sorted(test_u)
    normals = {u: test_u[u] for u in (np.array(users)[rng.permutation(len(users))[:n_norm]].tolist())}
    counter: dict[str, int] = {}
    for _, _, _, i in ds.events:
        counter[i] = counter.get(i, 0) + 1
    items = sorted(counter)
    w = np.array([counter[i] for i in items], dtype=np.float64)
    platform = gen.Platform(items, w / w.sum(), view=ds.view, cart=ds.cart, buy=ds.buy, fav=ds.fav)
    end = max(cut + 3_600_000, hi - 3_600_000)  # attacks end an hour before the log does, so sessions can end
    attack_evs, truth = gen.generate(normals, platform, cut, end, per_kind=per_kind, seed=args.seed,
                                           sources=train_u)

    # the logs, as the platform would record them; the truth apart
    train_log, test_log = work / f"{ds.name}-train{ds.suffix}", work / f"{ds.name}-test{ds.suffix}"
    ds.write(train_log, [(u, t, ty, i) for u, s in train_u.items() for t, ty, i in s])
    merged = [(u, t, ty, i) for u, s in normals.items() for t, ty, i in s]
    merged += [(a["user_id"], a["ts"], a["type"], a["item_id"]) for a in attack_evs]
    ds.write(test_log, merged)
    (work / f"{ds.name}-truth.json").write_text(json.dumps([a.to_json() for a in truth]))
    return Prepared(train_u, normals, truth, train_log, test_log, by_user(merged), attack_evs, per_kind, n_norm_all,
                    cut, hi)


def run_dataset(ds: Dataset, work: Path, args: argparse.Namespace, bar, task) -> dict:
    t_start = time.monotonic()
    gen = generator(getattr(args, "generator", "attackgen"))
    kinds = gen.KINDS
    p = prepare(ds, work, args)
    train_u, normals, truth, train_log, test_log = p.train_u, p.normals, p.truth, p.train_log, p.test_log
    test_seqs, attack_evs, per_kind, n_norm_all, cut, hi = p.test_seqs, p.attack_evs, p.per_kind, p.n_norm_all, p.cut, p.hi
    n_norm = len(normals)
    merged_events = sum(map(len, test_seqs.values()))
    bar.update(task, advance=1, rate=f"{ds.name}: {len(truth)} attackers, {n_norm} normals")

    model, train_s, budget = train_stock(train_log, ds.flags, work)
    bar.update(task, advance=1)
    alerts, score_s = score_stock(model, test_log, ds.flags, work)
    bar.update(task, advance=1)
    start = {a.user_id: min(a.attack_ts) for a in truth}
    results = {"seqsentry": user_metrics({u: first_after(alerts.get(u), start.get(u)) for u in test_seqs},
                                         normals, truth, kinds)}
    base = baselines(train_u, test_seqs, args.budget, args.seed)
    for name in ("isolation_forest", "rate_rule", "unseen_type"):
        b = base[name]
        results[name] = user_metrics({u: first_alert_ts(seq, b["scores"][u], b["threshold"], start.get(u))
                                      for u, seq in test_seqs.items()}, normals, truth, kinds)
        results[name]["calibration"] = {k: v for k, v in b.items() if k != "scores"}
    bar.update(task, advance=1)

    # generated data checked against the real logs
    real = gen.gap_stats([[t for t, _, _ in s] for s in normals.values()])
    realism = {"real_test_users": real}
    for k in kinds:
        for tm in ("human", "machine"):
            realism[f"{k}/{tm}"] = gen.gap_stats([a.attack_ts for a in truth if a.kind == k and a.timing == tm])
    return {"dataset": ds.name, "generator": gen.__name__.rsplit(".", 1)[-1], "kinds": list(kinds),
            "events": len(ds.events), "cut_utc": _iso(cut), "test_end_utc": _iso(hi),
            "train_users": len(train_u), "train_events": sum(map(len, train_u.values())),
            "test_normals_available": n_norm_all, "test_normals": n_norm, "per_kind": per_kind,
            "attackers": len(truth), "attacker_share": len(truth) / (len(truth) + n_norm - sum(a.victim for a in truth)),
            "attack_events": len(attack_evs), "test_events": merged_events, "budget": args.budget,
            "flags": " ".join(ds.flags), "model": budget, "train_seconds": round(train_s, 1),
            "score_seconds": round(score_s, 1), "seconds": round(time.monotonic() - t_start, 1),
            "results": results, "realism": realism}


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")


# --- small-data regime ---------------------------------------------------------------------------

def small_hdfs(data: Path, sizes: list[int], n_test: int, work: Path, seed: int, bar, task) -> dict:
    from bench.realdata import read_sessions, write_log

    if not (data / "hdfs" / "hdfs_train").is_file():
        return {}
    s = read_sessions(data / "hdfs")
    rng = np.random.default_rng(seed)
    pool = s["zero_label_train"]
    test_all = s["zero_label_test"]
    normal = [x for x in test_all if x[1] == 0]
    abnormal = [x for x in test_all if x[1] == 1]
    test = ([normal[i] for i in rng.permutation(len(normal))[:n_test]]
            + [abnormal[i] for i in rng.permutation(len(abnormal))[:n_test]])
    y = np.array([lab for _, lab in test])
    out = {}
    for n in sizes:
        train = [pool[i] for i in rng.permutation(len(pool))[:n]]
        train_log, test_log = work / f"hdfs-small{n}-train.jsonl", work / f"hdfs-small{n}-test.jsonl"
        write_log(train_log, train, labels=False, seed=seed)
        users = write_log(test_log, test, labels=False, seed=seed + 1)
        model, secs, budget = train_stock(train_log, [], work)
        alerts, _ = score_stock(model, test_log, [], work)
        flagged = np.array([u in alerts for u in users])
        seen = {k for keys, _ in train for k in keys}
        lookup = np.array([any(k not in seen for k in keys) for keys, _ in test])
        out[str(n)] = {"train_sessions": n, "test_normal": int((y == 0).sum()), "test_abnormal": int((y == 1).sum()),
                       "model": budget, "train_seconds": round(secs, 1),
                       "seqsentry": _prf(y, flagged), "unseen_type": _prf(y, lookup)}
        bar.update(task, advance=1)
    return out


def _prf(y: np.ndarray, flagged: np.ndarray) -> dict:
    tp, fp, fn = int((flagged & (y == 1)).sum()), int((flagged & (y == 0)).sum()), int((~flagged & (y == 1)).sum())
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return {"normal_alerted": float(flagged[y == 0].mean()), "recall": r, "precision": p,
            "f1": 2 * p * r / (p + r) if p + r else 0.0}


def small_clicks(ds: Dataset, sizes: list[int], n_test: int, work: Path, seed: int, bar, task) -> dict:
    rng = np.random.default_rng(seed)
    _, cut, _ = time_cut(ds.events)
    train_u = by_user([e for e in ds.events if e[1] < cut])
    test_u = by_user([e for e in ds.events if e[1] >= cut])
    tu = sorted(test_u)
    test = {u: test_u[u] for u in np.array(tu)[rng.permutation(len(tu))[:n_test]].tolist()}
    test_log = work / f"{ds.name}-small-test{ds.suffix}"
    ds.write(test_log, [(u, t, ty, i) for u, s in test.items() for t, ty, i in s])
    out = {}
    pool = sorted(train_u)
    for n in sizes:
        pick = np.array(pool)[rng.permutation(len(pool))[:n]].tolist()
        train_log = work / f"{ds.name}-small{n}-train{ds.suffix}"
        ds.write(train_log, [(u, t, ty, i) for u in pick for t, ty, i in train_u[u]])
        model, secs, budget = train_stock(train_log, ds.flags, work)
        alerts, _ = score_stock(model, test_log, ds.flags, work)
        seen = {ty for u in pick for _, ty, _ in train_u[u]}
        lookup = sum(any(ty not in seen for _, ty, _ in s) for s in test.values())
        out[str(n)] = {"train_users": len(pick), "train_events": sum(len(train_u[u]) for u in pick),
                       "test_users": len(test), "model": budget, "train_seconds": round(secs, 1),
                       "seqsentry": {"normal_alerted": sum(u in alerts for u in test) / len(test)},
                       "unseen_type": {"normal_alerted": lookup / len(test)}}
        bar.update(task, advance=1)
    return out


# --- report --------------------------------------------------------------------------------------

def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def table(main: dict, small: dict) -> str:
    lines = []
    for name, r in main.items():
        res = r["results"]
        lines += [f"**{name}** — train: {r['train_users']:,} users / {r['train_events']:,} events before "
                  f"{r['cut_utc']} UTC; test: {r['test_normals']:,} real normal users + {r['attackers']} attackers "
                  f"({r['per_kind']} per kind, {r['attacker_share']:.1%} of test users, {r['attack_events']:,} attack "
                  f"events); budget {r['budget']:.1%}; model `{r['model']['kind']}` trained in {r['train_seconds']:.0f} s "
                  f"with the stock defaults (`seqsentry train TRAIN {r['flags']}`); smallest budget it says it can "
                  f"honour: {_rate(r['model']['honourable_budget'])}.", "",
                  "| attackers caught | " + " | ".join(DETECTORS) + " |", "|---|" + "---|" * len(DETECTORS)]
        for k in _kinds(r):
            cells = []
            for d in DETECTORS:
                b = res[d]["kinds"][k]
                ttd = b["events_to_detect_median"]
                h = res[d]["kind_timing"][f"{k}/human"]
                cells.append(f"{b['caught']}/{b['attackers']}" + (f" ({ttd:.0f} ev)" if ttd is not None else "")
                             + f"; human {h['caught']}/{h['attackers']}")
            lines.append(f"| {k} | " + " | ".join(cells) + " |")
        for tm in ("machine", "human"):
            lines.append(f"| *{tm}-timed* | " + " | ".join(
                f"{res[d]['timing'][tm]['caught']}/{res[d]['timing'][tm]['attackers']}" for d in DETECTORS) + " |")
        o = {d: res[d]["overall"] for d in DETECTORS}
        lines += ["| **all** | " + " | ".join(f"**{o[d]['caught']}/{o[d]['attackers']}** ({_pct(o[d]['share'])})"
                                           for d in DETECTORS) + " |",
                  "| normal users alerted | " + " | ".join(f"{o[d]['normal_alerted']}/{o[d]['normal_users']} "
                                                         f"({_pct(o[d]['normal_alert_share'])})" for d in DETECTORS) + " |",
                  "| normal alerted per day (mean) | " + " | ".join(_pct(o[d]["normal_alert_share_per_day_mean"])
                                                                   for d in DETECTORS) + " |",
                  "| precision over alerted users | " + " | ".join(_pct(o[d]["precision"]) for d in DETECTORS) + " |",
                  "| median events to detection | " + " | ".join(
                      "-" if o[d]["events_to_detect_median"] is None else f"{o[d]['events_to_detect_median']:.0f}"
                      for d in DETECTORS) + " |", "",
                  f"Rate rule calibrated: {res['rate_rule']['calibration']['rule']}. "
                  f"Generated vs real gaps (median gap s, median per-user CV): real users "
                  f"{_gap(r['realism']['real_test_users'])}; human-timed "
                  + ", ".join(f"{k} {_gap(r['realism'][f'{k}/human'])}" for k in _kinds(r)) + ".", ""]
    if small:
        lines += ["### Small training logs", "",
                  "| log | training sessions | model | budget it says it can honour | normal alerted: seqsentry | "
                  "unseen-type lookup | F1 seqsentry | F1 lookup |", "|---|---|---|---|---|---|---|---|"]
        for name, sizes in small.items():
            for n, r in sizes.items():
                s, lk = r["seqsentry"], r["unseen_type"]
                hb = _rate(r["model"]["honourable_budget"])
                f1 = (f"{s['f1']:.3f}", f"{lk['f1']:.3f}") if "f1" in s else ("-", "-")
                lines.append(f"| {name} | {n} | {r['model']['kind']} | {hb} | {_pct(s['normal_alerted'])} | "
                             f"{_pct(lk['normal_alerted'])} | {f1[0]} | {f1[1]} |")
        lines.append("")
    return "\n".join(lines)


def _kinds(r: dict) -> list[str]:
    """The attack kinds of a dataset's result (runs before the generator was named: attackgen's)."""
    return r.get("kinds") or list(attackgen.KINDS)


def _rate(x: object) -> str:
    return f"{x:.2%}" if isinstance(x, int | float) else str(x)


def _gap(g: dict) -> str:
    return "-" if not g.get("users") else f"{g['gap_s_median']:.1f} s / CV {g['cv_median']:.2f}"


def plot(main: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(main), figsize=(7 * len(main), 4.8), squeeze=False)
    for ax, (name, r) in zip(axes[0], main.items(), strict=True):
        labels = [*_kinds(r), "normal\nalerted ×10"]
        x = np.arange(len(labels))
        wd = 0.8 / len(DETECTORS)
        for j, d in enumerate(DETECTORS):
            res = r["results"][d]
            vals = [res["kinds"][k]["share"] or 0 for k in _kinds(r)] + [10 * res["overall"]["normal_alert_share"]]
            ax.bar(x + (j - (len(DETECTORS) - 1) / 2) * wd, vals, wd, label=d)
        ax.axhline(10 * r["budget"], color="k", ls=":", lw=1, label="budget ×10")
        ax.set_xticks(x, labels, rotation=35, ha="right", fontsize=8)
        ax.set(title=f"{name}: attackers caught per kind", ylabel="share caught", ylim=(0, 1.05))
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _markers(blind: bool) -> tuple[str, str]:
    """The docs/quality.md block markers of a run (the blind generator's results have their own block)."""
    return (BLIND_START, BLIND_END) if blind else (DOC_START, DOC_END)


def write_doc(body: str, blind: bool = False) -> None:
    from bench.realdata import write_doc as _write

    _write(body, *_markers(blind))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench ecommerce", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder holding the clickstreams and hdfs/")
    ap.add_argument("--datasets", default="yoochoose,diginetica,taobao")
    ap.add_argument("--per-kind", type=int, default=30, help="attackers per kind (fewer when normals are too few)")
    ap.add_argument("--share", type=float, default=0.05, help="attackers' share of the test users")
    ap.add_argument("--budget", type=float, default=0.005, help="baselines' budget (the detector's stock default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--generator", choices=GENERATORS, default="attackgen",
                    help="the attack generator (attackgen_blind: the held-out one; main section only, results in "
                         "bench/results/ecommerce-blind.* and their own docs/quality.md block)")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--small", action="store_true", help="only the small-data regime")
    g.add_argument("--no-small", action="store_true", help="skip the small-data regime")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, writes nothing to bench/results (smoke run)")
    ap.add_argument("--scratch", action="store_true",
                    help="full sizes, but results go to the scratch folder, not bench/results (a partial re-run, "
                         "e.g. one dataset, that must not replace the committed full run)")
    args = ap.parse_args(argv)
    if args.quick:
        args.per_kind = min(args.per_kind, 3)
    names = [n.strip() for n in args.datasets.split(",") if n.strip()]
    sets = {n: ds for n in names if (ds := load(n, args.data)) is not None}
    if not sets:
        print(f"skip: none of {names} under {args.data} (pass --data)")
        return 0
    sizes = [20] if args.quick else [20, 50, 200]
    n_small_test = 200 if args.quick else 2000
    blind = args.generator != "attackgen"
    run_main, run_small = not args.small, not args.no_small and not blind  # small logs hold no generated attacks
    steps = (4 * len(sets) if run_main else 0) + (len(sizes) * (len(sets) + 1) if run_small else 0)
    t0 = time.monotonic()
    main_res, small = {}, {}
    with tempfile.TemporaryDirectory(prefix="seqsentry-ecommerce-") as tmp, progress.bar() as bar:
        task = bar.add_task("ecommerce", total=steps, rate="")
        work = Path(tmp)
        if run_main:
            for name, ds in sets.items():
                bar.update(task, description=f"ecommerce: {name}")
                main_res[name] = run_dataset(ds, work, args, bar, task)
        if run_small:
            bar.update(task, description="ecommerce: small logs, hdfs")
            if h := small_hdfs(args.data, sizes, 200 if args.quick else 1000, work, args.seed, bar, task):
                small["hdfs"] = h
            for name, ds in sets.items():
                bar.update(task, description=f"ecommerce: small logs, {name}")
                small[name] = small_clicks(ds, sizes, n_small_test, work, args.seed, bar, task)
    command = "python -m bench ecommerce" + "".join(f" {a}" for a in (argv if argv is not None else __import__("sys").argv[1:]))
    out = {"command": command, "seconds": round(time.monotonic() - t0, 1), "main": main_res, "small": small}
    text = table(main_res, small)
    print(text)
    for name, r in main_res.items():
        print(f"{name}: generated vs real gaps")
        for k, g_ in r["realism"].items():
            if g_.get("users"):
                print(f"  {k:24s} users {g_['users']:5d}  gap p10/median/p90 {g_['gap_s_p10']:8.2f} "
                      f"{g_['gap_s_median']:8.2f} {g_['gap_s_p90']:9.1f} s  sub-second {g_['sub_second_share']:5.1%}  "
                      f"per-user CV median {g_['cv_median']:.2f}  events/user {g_['events_per_user_median']:.0f}")
    print(f"ecommerce: {out['seconds']:.0f} s")
    stem = "ecommerce-blind" if blind else "ecommerce"
    body = (("## Held-out check: attacks from a generator written blind\n\n" if blind else
             "## Real e-commerce traffic, attacks from an independent generator\n\n")
            + f"Command: `{command}` ({out['seconds'] / 60:.0f} min on this machine). How the data is split and the "
            f"attacks are made: `bench/ecommerce.py` and `bench/{args.generator}.py` docstrings. Cells: attackers "
            "caught (median events of the attacker up to the first alert; of them, human-timed).\n\n" + text
            + (f"\n![{stem}](../bench/results/{stem}.png)\n" if main_res else ""))
    if args.quick or args.scratch:  # a smoke run or a partial re-run: its files go to a scratch folder
        scratch = Path(tempfile.gettempdir()) / ("seqsentry-ecommerce-quick" if args.quick else "seqsentry-ecommerce")
        scratch.mkdir(exist_ok=True)
        (scratch / f"{stem}.json").write_text(json.dumps(out, indent=2, default=float))
        start, end = _markers(blind)
        (scratch / f"quality-{stem}.md").write_text(f"{start}\n{body}\n{end}\n")
        if main_res:
            plot(main_res, scratch / f"{stem}.png")
        print(f"{'--quick' if args.quick else '--scratch'}: nothing written to bench/results or docs; output in {scratch}")
    else:
        save(stem, out)
        if main_res:
            plot(main_res, RESULTS / f"{stem}.png")
        write_doc(body, blind)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
