"""Detection metrics, threshold calibration and the evaluation report (Markdown, JSON, PNG)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy import stats
from sklearn import metrics as skm

from stream.encoding import RUN_COUNTS
from training.dataset import WindowSet


def roc_curve(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds), scikit-learn's, highest threshold first."""
    return skm.roc_curve(y, s, drop_intermediate=False)


def roc_auc(y: np.ndarray, s: np.ndarray) -> float:
    """Area under the ROC curve; NaN when ``y`` holds one class only."""
    return float(skm.roc_auc_score(y, s)) if 0 < np.sum(y) < len(y) else float("nan")


def pr_curve(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(precision, recall), scikit-learn's, from the lowest threshold up."""
    precision, recall, _ = skm.precision_recall_curve(y, s)
    return precision, recall


def average_precision(y: np.ndarray, s: np.ndarray) -> float:
    """PR-AUC as average precision; NaN without positives."""
    return float(skm.average_precision_score(y, s)) if np.sum(y) > 0 else float("nan")


def conformal_rank(n: int, target_fpr: float) -> int:
    """j: the threshold for ``target_fpr`` sits just above the j-th highest of n normal scores,
    j = floor(target_fpr * (n + 1)), at least 1 (above the highest)."""
    return max(int(np.floor(target_fpr * (n + 1))), 1)


def calibrate_threshold(normal_scores: np.ndarray, target_fpr: float) -> float:
    """Threshold that a *new* normal score reaches with probability <= target_fpr.

    Alerts fire at ``score >= threshold``. The conformal rule: with n exchangeable normal
    scores, a new one ranks among the top j of the n + 1 with probability j / (n + 1), so the
    threshold sits just above the j-th highest, j = floor(target_fpr * (n + 1)), and j - 1 of
    the calibration scores reach it. Allowing floor(target_fpr * n) of them instead, as a plain
    quantile does, lets a new normal through with probability (j + 1) / (n + 1): with 335
    calibration users at 0.5 %, 0.6 % instead of 0.3 %. With j = 0 (fewer than 1 / target_fpr
    scores) it is above the highest: the smallest rate they support, 1 / (n + 1).
    """
    if not len(normal_scores):
        raise ValueError("threshold calibration needs held-out normal windows")
    s = np.sort(normal_scores)[::-1]
    k = conformal_rank(len(s), target_fpr) - 1  # calibration scores that may reach it
    if k >= len(s):
        return float(s[-1])
    # just above the (k+1)-th highest normal score, in the scores' own precision (float32
    # scores compare with a threshold in float32): ties at that score stay below the line
    return float(np.nextafter(s[k], np.asarray(np.inf, dtype=s.dtype)))


# How sure a stated budget is: a threshold set on n normal users alerts a share of new normal users
# that is itself random (which n users the log happened to hold); the share stated is the one it
# stays under in 9 draws of 10, not its average, which a few dozen users miss by 2-3x one time in 10.
BUDGET_CONFIDENCE = 0.9


def alert_rate_bound(n: int, target_fpr: float, confidence: float = BUDGET_CONFIDENCE) -> float:
    """The share of new normal users that :func:`calibrate_threshold` on ``n`` users' scores alerts, at most,
    with probability ``confidence`` over the calibration users.

    The threshold sits above the j-th highest of n exchangeable scores, j = max(floor(target_fpr * (n + 1)), 1);
    the probability mass above the j-th highest of n draws is Beta(j, n + 1 - j) distributed (mean
    j / (n + 1), the conformal rate). Its ``confidence`` quantile: with j = 1 (the highest user), 1 - (1 - c)^(1/n)
    - 4.5 % at 50 users where the mean is 2.0 %.
    """
    if n < 1:
        raise ValueError("an alert-rate bound needs at least one calibration user")
    j = min(conformal_rank(n, target_fpr), n)
    return float(stats.beta.ppf(confidence, j, n + 1 - j))


def to_scale(scores: np.ndarray, own_ref: np.ndarray, target_ref: np.ndarray) -> np.ndarray:
    """``scores`` of one model carried onto another model's scale by rank: each score is placed
    among ``own_ref`` (that model's scores of a reference set) and replaced by the score at the
    same quantile of ``target_ref`` (the other model's scores of the same set).

    Two classifiers trained on different users rank windows alike but need not agree on the
    numbers (one saturates at 0.99, the other at 0.975); a threshold read off one model's scores
    is meaningful for the other only on a common scale. Mid-ranks keep ties in place; a score
    beyond every reference score of its model maps to the end of the target's range.
    """
    if not len(own_ref) or not len(target_ref):
        raise ValueError("a scale transfer needs reference scores from both models")
    own = np.sort(np.asarray(own_ref, dtype=np.float64))
    s = np.asarray(scores, dtype=np.float64)
    q = (np.searchsorted(own, s, "left") + np.searchsorted(own, s, "right")) / (2 * len(own))
    target = np.asarray(target_ref)
    # in the target scores' own precision: a threshold just above a mapped score stays above it in float32
    return np.quantile(target.astype(np.float64), np.clip(q, 0.0, 1.0)).astype(target.dtype)


DAY_MS = 86_400_000


def user_maxima(scores: np.ndarray, user: np.ndarray, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each user's highest window score, and each (user, day of event time)'s highest."""
    _, u = np.unique(user, return_inverse=True)
    per_user = np.full(u.max() + 1 if len(u) else 0, -np.inf)
    np.maximum.at(per_user, u, scores)
    _, ud = np.unique(np.stack([user.astype(np.int64), ts // DAY_MS]), axis=1, return_inverse=True)
    per_day = np.full(ud.max() + 1 if len(ud) else 0, -np.inf)
    np.maximum.at(per_day, ud.ravel(), scores)
    return per_user, per_day


def calibrate_user_threshold(scores: np.ndarray, user: np.ndarray, ts: np.ndarray,
                             user_alert_rate: float) -> tuple[float, list[float]]:
    """Threshold and severity steps for an alert budget counted in *normal users*.

    A user is alerted when any of its windows reaches the threshold (its running maximum),
    so the threshold is set on users' maxima: at most ``user_alert_rate`` of the normal
    calibration users are alerted over the whole log, and at most that share of them on any
    one day of event time. Severity steps: medium and high at a quarter and a sixteenth of
    the budget, critical beyond the highest normal user seen.
    """
    per_user, per_day = user_maxima(scores, user, ts)
    if not len(per_user):
        raise ValueError("threshold calibration needs held-out normal users")
    thr = max(calibrate_threshold(per_user, user_alert_rate), calibrate_threshold(per_day, user_alert_rate))
    steps = [thr, *(max(thr, calibrate_threshold(per_user, user_alert_rate / f)) for f in (4, 16))]
    steps.append(max(steps[-1], float(np.nextafter(per_user.max(), np.inf))))
    return thr, [float(x) for x in steps]


def _daily_alert_shares(user: np.ndarray, day: np.ndarray, alert: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """For each day of event time, the share of that day's normal users with an alert that day."""
    if not normal.any():
        return np.empty(0)
    pairs, inv = np.unique(np.stack([day[normal], user[normal]]), axis=1, return_inverse=True)  # sorted by day
    hit = np.zeros(pairs.shape[1], dtype=np.int64)
    np.maximum.at(hit, inv.ravel(), alert[normal].astype(np.int64))
    _, first, users = np.unique(pairs[0], return_index=True, return_counts=True)
    return np.add.reduceat(hit, first) / users


def at_threshold(y: np.ndarray, s: np.ndarray, threshold: float) -> dict:
    pred = s >= threshold
    tp = int((pred & (y == 1)).sum())
    fp = int((pred & (y == 0)).sum())
    fn = int((~pred & (y == 1)).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1,
            "fpr": fp / max(int((y == 0).sum()), 1), "tp": tp, "fp": fp, "fn": fn}


def evaluate(scores: np.ndarray, ws: WindowSet, threshold: float) -> dict:
    """Every metric the report shows, for one model's scores on a labelled window set."""
    y = ws.label.astype(np.int64)
    known = y >= 0
    y, s = y[known], scores[known]
    attack, user, seq = ws.attack[known], ws.user[known], ws.seq_no[known]
    res = {"windows": int(len(y)), "positives": int(y.sum()), "roc_auc": roc_auc(y, s),
           "pr_auc": average_precision(y, s), "threshold": threshold, **at_threshold(y, s, threshold)}
    per_attack = {}
    for a in np.unique(attack[y == 1]).tolist():
        sel = (y == 0) | (attack == a)
        ya, sa = y[sel], s[sel]
        per_attack[ws.attack_names[a]] = {"windows": int((attack == a).sum()), "pr_auc": average_precision(ya, sa),
                                          "roc_auc": roc_auc(ya, sa), "recall": at_threshold(ya, sa, threshold)["recall"]}
    res["per_attack"] = per_attack
    alert = s >= threshold
    attackers = np.unique(user[y == 1])
    detected, ttd = 0, []
    for u in attackers.tolist():
        mine = user == u
        first_attack = seq[mine & (y == 1)].min()
        hits = seq[mine & (y == 1) & alert]
        if len(hits):
            detected += 1
            ttd.append(int(hits.min() - first_attack + 1))
    normal_users = np.setdiff1d(np.unique(user), attackers)
    alerted_normal = np.intersect1d(normal_users, np.unique(user[alert & (y == 0)]))
    per_day = _daily_alert_shares(user, ws.ts[known] // DAY_MS, alert, np.isin(user, normal_users))
    alerted = detected + len(alerted_normal)
    res["users"] = {
        "attackers": int(len(attackers)),
        "detected": detected,
        "detection_rate": detected / max(len(attackers), 1),
        "alerted_users": int(alerted),
        "precision": detected / alerted if alerted else 0.0,
        "normal_users_alerted": int(len(alerted_normal)),
        "normal_user_alert_rate_per_day_mean": float(np.mean(per_day)) if len(per_day) else 0.0,
        "normal_user_alert_rate_per_day_max": float(np.max(per_day)) if len(per_day) else 0.0,
        "time_to_detect_events_median": float(np.median(ttd)) if ttd else None,
        "time_to_detect_events_p90": float(np.percentile(ttd, 90)) if ttd else None,
        "normal_users": int(len(normal_users)),
        "normal_user_alert_rate": len(alerted_normal) / max(len(normal_users), 1),
    }
    return res


def write_report(out: Path, results: dict[str, dict], scores: dict[str, np.ndarray], ws: WindowSet,
                 title: str = "seqsentry evaluation", info: dict | None = None,
                 calibration_maxima: np.ndarray | None = None) -> Path:
    """report.json, report.md, and pr.png / roc.png / scores.png under ``out`` (the curves only
    when ``results`` has labelled test windows); with ``info`` (training: how the log was
    read, the calibration and whether it supports the budget) and ``calibration_maxima``
    (each calibration user's highest score) also calibration.png - written for every model
    kind, labelled or not."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps({**results, **({"training": info} if info else {})}, indent=2,
                                                default=float))
    text = markdown(results, title) if results else f"# {title}\n\nNo labelled test users: no detection metrics.\n"
    if info:
        text += calibration_markdown(info)
    (out / "report.md").write_text(text)
    if calibration_maxima is not None and info:
        plot_calibration(out / "calibration.png", calibration_maxima, info["calibration"]["threshold"], title)
    if not results:
        return out
    plot_curves(out, results, scores, ws)
    plot_scores(out / "scores.png", results, scores, ws)
    return out


def _pyplot():  # noqa: ANN202 - matplotlib.pyplot, imported only when a plot is drawn
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(out: Path, results: dict[str, dict], scores: dict[str, np.ndarray], ws: WindowSet) -> None:
    """pr.png and roc.png: each model's precision-recall and ROC curves over the labelled test windows."""
    plt = _pyplot()
    y = ws.label.astype(np.int64)
    known = y >= 0
    fig_pr, ax_pr = plt.subplots(figsize=(6, 5))
    fig_roc, ax_roc = plt.subplots(figsize=(6, 5))
    for name, s in scores.items():
        p, r = pr_curve(y[known], s[known])
        ax_pr.plot(r, p, label=f"{name} (AP {results[name]['pr_auc']:.3f})")
        fpr, tpr, _ = roc_curve(y[known], s[known])
        ax_roc.plot(fpr, tpr, label=f"{name} (AUC {results[name]['roc_auc']:.3f})")
    ax_pr.set(xlabel="recall", ylabel="precision", title="Precision-recall (test windows)")
    ax_roc.set(xlabel="false-positive rate", ylabel="true-positive rate", title="ROC (test windows)", xscale="log")
    for fig, ax, name in ((fig_pr, ax_pr, "pr.png"), (fig_roc, ax_roc, "roc.png")):
        ax.legend(loc="best", fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)


def plot_scores(path: Path, results: dict[str, dict], scores: dict[str, np.ndarray], ws: WindowSet) -> None:
    """scores.png: per model, the score distribution of test windows by class (top) and of test
    users by their highest score, with how many of each the threshold alerts (bottom)."""
    plt = _pyplot()
    y = ws.label.astype(np.int64)
    known = y >= 0
    # top row: windows, each class's share per bin (comparable however many windows a class has);
    # bottom row: users, by their highest score - what the alert budget is about
    fig, axes = plt.subplots(2, len(scores), figsize=(5 * len(scores), 7.5), squeeze=False)
    attacker_user = np.zeros(len(ws.users), dtype=bool)
    attacker_user[ws.user[y == 1]] = True
    for col, (name, s) in enumerate(scores.items()):
        thr = results[name]["threshold"]
        edges = np.histogram_bin_edges(s[known], bins=60)
        ax = axes[0, col]
        for cls, label in ((0, "normal windows"), (1, "attack windows")):
            v = s[y == cls]
            if len(v):
                ax.hist(v, bins=edges, weights=np.full(len(v), 1 / len(v)), alpha=0.6, label=f"{label} ({len(v):,})")
        ax.axvline(thr, color="k", ls="--", lw=1, label="threshold")
        ax.set(title=f"{name}: windows", xlabel="window score", ylabel="share of the class's windows")
        ax.legend(fontsize=8)
        users = np.unique(ws.user[known])
        top = np.full(len(ws.users), -np.inf)
        np.maximum.at(top, ws.user[known], s[known])
        ax = axes[1, col]
        for flag, label in ((False, "normal users"), (True, "attackers")):
            v = top[users][attacker_user[users] == flag]
            if len(v):
                caught = int((v >= thr).sum())
                ax.hist(v, bins=edges, alpha=0.6, label=f"{label}: {caught:,} of {len(v):,} alerted")
        ax.axvline(thr, color="k", ls="--", lw=1, label="threshold")
        ax.set(title=f"{name}: users", xlabel="user's highest score", ylabel="users", yscale="log")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)




def plot_calibration(path: Path, maxima: np.ndarray, threshold: float, title: str) -> None:
    """Each calibration user's highest score against the threshold: what the budget was set on."""
    plt = _pyplot()

    fig, ax = plt.subplots(figsize=(7, 4))
    m = np.sort(maxima)[::-1]
    ax.plot(np.arange(1, len(m) + 1) / max(len(m), 1), m, marker="." if len(m) < 200 else None, lw=1)
    ax.axhline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold:.4g}")
    ax.set(xscale="log", xlabel="share of normal calibration users at or above this score",
           ylabel="user's highest window score", title=f"{title}: {len(m):,} calibration users")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _smallest(rate: float | None) -> str:
    return ("none: too few calibration users to promise any" if rate is None
            else f"{rate:.2%}, {BUDGET_CONFIDENCE:.0%} confidence")


def _bound_clause(c: dict) -> str:
    """What the threshold set alerts of new normal users, at the stated confidence; empty where nothing is promised."""
    if c.get("alert_rate_bound") is None:
        return ""
    return (f"; this threshold alerts at most {c['alert_rate_bound']:.2%} of new normal users with "
            f"{c['budget_confidence']:.0%} confidence (the share is random: which users the log held)")


def _ended_line(c: dict) -> str:
    n, k = c.get("ended_training_sessions", 0), c.get("min_ended_events", 0)
    if k:
        return (f"- ended too soon: a session ending with fewer than {k} events alerts as unseen "
                f"(no normal training session of {n:,} ended sooner)")
    return f"- ended too soon: off ({n:,} ended normal training sessions; the rule needs enough to be rare)"


def _ordinal(k: int) -> str:
    return f"{k}{'th' if 10 <= k % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(k % 10, 'th')}"


def run_ceiling_line(c: dict) -> str:
    """The report's (and ``train``'s log) line about the run ceiling of calibration info ``c``."""
    n, ceiling = c.get("run_ceiling_users", 0), c.get("run_ceiling") or []
    if ceiling:
        named = ", ".join(f"{name.replace('_', ' ')} {k}" for name, k in zip(RUN_COUNTS, ceiling, strict=True))
        return (f"- run ceiling: a window counting more than {named} alerts as unseen "
                f"(per count, the {_ordinal(c['run_ceiling_rank'])} highest of {n:,} normal training users)")
    return f"- run ceiling: off ({n:,} normal training users; the rule needs enough to be rare)"


def type_ceiling_line(c: dict) -> str:
    """The report's (and ``train``'s log) line about the type ceiling of calibration info ``c``."""
    if c.get("type_ceiling_kind") == "classifier":
        return "- type ceiling: off (zero-label models only: a classifier reads each type's count from its window)"
    n, alone, ceiling = c.get("type_ceiling_users", 0), c.get("type_ceiling_alone", 0), c.get("type_ceiling") or {}
    held = f"{alone:,} of them hold{'s' if alone == 1 else ''} a type's highest count alone"
    if ceiling:
        measured = {name: k for name, k in ceiling.items() if k is not None}  # None: no training user had it
        named = ", ".join(f"{name} {k}" for name, k in list(measured.items())[:8])
        more = f" and {len(measured) - 8} more types" if len(measured) > 8 else ""
        return (f"- type ceiling: a window with more events of one type than any of {n:,} normal training users' "
                f"alerts as unseen ({named}{more}; {held})")
    return f"- type ceiling: off ({n:,} normal training users, {held}; the rule needs the highest counts shared)"


def calibration_markdown(info: dict) -> str:
    """The training section of a report: how the log was read and what the calibration supports."""
    c, lg = info["calibration"], info["log"]
    lines = ["", "## Training data and calibration", "",
             f"- log: {lg['events']:,} events of {lg['users']:,} users"
             f"{' (sorted by time: the file was not in time order)' if lg['sorted_by_time'] else ''}; "
             f"{lg['injected_attackers']:,} attackers injected from the log's own traffic (training.attacks)",
             f"- calibration: {c['calibration_users']:,} normal users"
             + (f" ({c['held_out_users']:,} held out, the rest cross-fitted in {c['cross_fit_folds']} folds)"
                if c.get("cross_fit_folds") else " held out")
             + f"; threshold {c['threshold']:.6g} "
             f"({c['rule']}); budget {c['user_alert_rate']:.2%} of normal users "
             f"{'supported' if c['supported'] else 'NOT supported'} (needs {c['users_needed']:,} users; smallest "
             f"supported {_smallest(c['smallest_supported_rate'])})" + _bound_clause(c),
             _ended_line(c), run_ceiling_line(c), type_ceiling_line(c),
             "- plot: `calibration.png` (each calibration user's highest score against the threshold)", ""]
    for key in ("budget_line", "cap_line"):
        if info.get(key):
            lines.insert(-1, f"- {info[key]}")
    return "\n".join(lines)


def markdown(results: dict[str, dict], title: str) -> str:
    """The report as a Markdown document."""
    names = list(results)
    lines = [f"# {title}", "", "## Users (what a fraud team reads)", "",
             "| model | attackers caught | precision over alerted users | normal users alerted | "
             "normal users alerted per day (mean / worst) | median events to detect |",
             "|---|---|---|---|---|---|"]
    for n in names:
        u = results[n]["users"]
        ttd = u["time_to_detect_events_median"]
        lines.append(f"| {n} | {u['detected']}/{u['attackers']} ({u['detection_rate']:.1%}) | {u['precision']:.1%} | "
                     f"{u['normal_users_alerted']}/{u['normal_users']} ({u['normal_user_alert_rate']:.2%}) | "
                     f"{u['normal_user_alert_rate_per_day_mean']:.2%} / {u['normal_user_alert_rate_per_day_max']:.2%} | "
                     f"{'-' if ttd is None else f'{ttd:.0f}'} |")
    lines += ["", "## Windows (secondary)", "", "| model | PR-AUC | ROC-AUC | precision | recall | F1 | window FPR |",
              "|---|---|---|---|---|---|---|"]
    for n in names:
        r = results[n]
        lines.append(f"| {n} | {r['pr_auc']:.3f} | {r['roc_auc']:.3f} | {r['precision']:.3f} | {r['recall']:.3f} | "
                     f"{r['f1']:.3f} | {r['fpr']:.4f} |")
    attacks = sorted({a for n in names for a in results[n]["per_attack"]})
    lines += ["", "## PR-AUC by attack (attack windows of that kind vs all normal windows)", "",
              "| attack | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for a in attacks:
        cells = [f"{results[n]['per_attack'].get(a, {}).get('pr_auc', float('nan')):.3f}" for n in names]
        lines.append(f"| {a} | " + " | ".join(cells) + " |")
    lines += ["", "Plots: `pr.png`, `roc.png`, `scores.png`. Thresholds are calibrated on held-out normal "
              "users to the alert budget (share of normal users alerted, over the log and per day).", ""]
    return "\n".join(lines)
