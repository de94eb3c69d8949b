"""`seqsentry compare`: what promoting a candidate model would change, user by user, on a recorded log.

Both models score the same log through the stock offline pipeline (stream.offline.score_log,
one Detector each: the alerts `seqsentry run` would publish). The diff is at the user level,
because a fraud team works users, not windows: users alerted by both, only by the candidate,
only by the current model; attackers caught per attack kind (where the log or ``--labels``
says who attacks); normal users alerted against each model's alert budget (meta.json
``user_alert_rate``); score and severity shifts of the users both alert; time from a user's
first attack event to its first alert. Written as comparison.json, comparison.md and
comparison.png, beside both models' alerts.

Without labels every user of the log counts as normal (the platform's own traffic is the
normal class, as in training), so the budget check is an upper bound there.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from stream import logs, registry
from stream.alerts import SEVERITIES
from stream.log_spec import Label

LIST_CAP = 500  # users listed per group in comparison.json (the counts are always complete)


@dataclass
class Truth:
    """What the log (and its labels) says about one user."""

    label: int = -1  # 1 attacker, 0 normal, -1 unknown
    attack: str | None = None
    first_ts: int = 0
    first_attack_ts: int | None = None
    events: int = 0


@dataclass
class UserAlerts:
    """One model's alerts on one user."""

    first: int  # event time of the first alert
    alerts: int = 0
    max_score: float = 0.0
    severity: str = "low"  # the highest


@dataclass
class ModelRun:
    """One model's pass over the log."""

    role: str
    path: str
    version: str
    threshold: float
    user_alert_rate: float
    alerts_file: str
    users: dict[str, UserAlerts] = field(default_factory=dict)
    alerts: int = 0
    seconds: float = 0.0


def resolve_model(ref: str | Path, registry_dir: Path | str) -> Path | None:
    """An artifact directory from a path, a registry version name, ``current`` or ``none`` (None)."""
    ref_s = str(ref)
    if ref_s == "none":
        return None
    if ref_s == "current":
        return registry.current(registry_dir)
    path = Path(ref)
    if path.is_dir():
        return path
    in_registry = Path(registry_dir) / "versions" / ref_s
    if in_registry.is_dir():
        return in_registry
    raise registry.RegistryError(f"no model {ref_s}: neither an artifact directory nor a version in {registry_dir}")


def read_truth(log: Path | str, spec: logs.LogSpec | None = None) -> dict[str, Truth]:
    """Per user of the log: label, attack kind, first event and first attack event (ms)."""
    out: dict[str, Truth] = {}
    for res in logs.iter_events(log, spec):
        b = res.events
        for uid, ts, lab, e in zip(b.user_id, b.ts.tolist(), b.label.tolist(), b.events, strict=True):
            t = out.get(uid)
            if t is None:
                t = out[uid] = Truth(first_ts=ts)
            t.events += 1
            t.first_ts = min(t.first_ts, ts)
            if lab == 1:
                t.label, t.attack = 1, t.attack or e.attack or "unnamed"
                t.first_attack_ts = ts if t.first_attack_ts is None else min(t.first_attack_ts, ts)
            elif lab == 0 and t.label < 0:
                t.label = 0
    return out


def user_alerts(alerts_file: Path | str) -> tuple[dict[str, UserAlerts], int]:
    """Per user: first alert, count, highest score and severity; and the number of alerts."""
    users: dict[str, UserAlerts] = {}
    n = 0
    with open(alerts_file, "rb") as f:
        for line in f:
            a = orjson.loads(line)
            n += 1
            u = users.get(a["user_id"])
            if u is None:
                u = users[a["user_id"]] = UserAlerts(first=a["event_time"])
            u.alerts += 1
            u.first = min(u.first, a["event_time"])
            u.max_score = max(u.max_score, a["score"])
            u.severity = max(u.severity, a["severity"], key=SEVERITIES.index)
    return users, n


def score_with(model_dir: Path, role: str, log: Path | str, out: Path, spec: logs.LogSpec | None, *, device: str,
               runtime: str, cooldown_s: float) -> ModelRun:
    """Score ``log`` with one model exactly as `seqsentry score` does; alerts to out/alerts-ROLE.jsonl."""
    from stream.detector import Detector
    from stream.model import Scorer
    from stream.offline import score_log

    scorer = Scorer.load(model_dir, device, runtime)
    meta = scorer.artifact.meta
    alerts_file = out / f"alerts-{role}.jsonl"
    stats = score_log(log, Detector(scorer, cooldown_ms=int(cooldown_s * 1000)), alerts_file, spec=spec)
    users, n = user_alerts(alerts_file)
    return ModelRun(role, str(model_dir), meta.version, float(meta.threshold), float(meta.user_alert_rate),
                    str(alerts_file), users, n, stats.seconds)


def _median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def _user_entry(uid: str, truth: Truth | None, cand: UserAlerts | None, cur: UserAlerts | None) -> dict:
    e: dict = {"user_id": uid, "label": truth.label if truth else -1, "attack": truth.attack if truth else None}
    for name, u in (("candidate", cand), ("current", cur)):
        if u is not None:
            e[name] = {"first_alert": u.first, "alerts": u.alerts, "max_score": round(u.max_score, 6),
                       "severity": u.severity}
    return e


def _by_attack(truth: Mapping[str, Truth], attackers: set[str], a: set[str], b: set[str]) -> dict[str, dict]:
    """Per attack kind: attackers, how many each model alerts, lost and gained by the candidate."""
    kinds: dict[str, dict] = {}
    for u in attackers:
        k = kinds.setdefault(truth[u].attack or "unnamed", {"attackers": 0, "candidate": 0, "current": 0,
                                                             "lost": 0, "gained": 0})
        k["attackers"] += 1
        k["candidate"] += u in a
        k["current"] += u in b
        k["lost"] += u in b and u not in a
        k["gained"] += u in a and u not in b
    return dict(sorted(kinds.items()))


def _budget(run: ModelRun | None, users: set[str], normal: set[str]) -> dict | None:
    """A run's normal users alerted against its budget."""
    if run is None:
        return None
    alerted = len(users & normal)
    rate = alerted / max(len(normal), 1)
    return {"normal_users_alerted": alerted, "normal_users": len(normal), "rate": rate,
            "budget": run.user_alert_rate, "times_budget": rate / run.user_alert_rate if run.user_alert_rate else None}


def _shifts(cand: ModelRun, cur: ModelRun | None, both: list[str]) -> tuple[list[float], list[float], dict[str, int]]:
    """Over the users both models alert: score shifts, margin-over-threshold shifts, severity moves."""
    cur_users = cur.users if cur is not None else {}
    shifts = [cand.users[u].max_score - cur_users[u].max_score for u in both]
    margins = [(cand.users[u].max_score - cand.threshold) - (cur_users[u].max_score - cur.threshold)
               for u in both] if cur is not None else []
    sev = {f"{s}->{t}": 0 for s in SEVERITIES for t in SEVERITIES}
    for u in both:
        sev[f"{cur_users[u].severity}->{cand.users[u].severity}"] += 1
    return shifts, margins, sev


def diff(truth: Mapping[str, Truth], cand: ModelRun, cur: ModelRun | None, *, log: str = "",
         labels: str | None = None) -> dict:
    """The user-level comparison of two runs over the same log (``cur`` None: no current model)."""
    cur_users = cur.users if cur is not None else {}
    labelled = any(t.label >= 0 for t in truth.values())
    attackers = {u for u, t in truth.items() if t.label == 1}
    normal = {u for u, t in truth.items() if t.label == 0 or (t.label < 0 and u not in attackers)}
    a, b = set(cand.users), set(cur_users)
    groups = {"both": a & b, "only_candidate": a - b, "only_current": b - a}

    def split(users: set[str]) -> dict:
        return {"users": len(users), "attackers": len(users & attackers), "normal": len(users & normal)}

    def detect_ms(run_users: Mapping[str, UserAlerts]) -> list[float]:
        return [run_users[u].first - truth[u].first_attack_ts for u in attackers & set(run_users)
                if truth[u].first_attack_ts is not None]

    both = sorted(groups["both"])
    shifts, margins, sev = _shifts(cand, cur, both)
    earlier = [cand.users[u].first - cur_users[u].first for u in both if u in attackers]
    lost = sorted(groups["only_current"] & attackers)
    return {
        "log": log, "labels": labels, "labelled": labelled,
        "models": {r.role: {"path": r.path, "version": r.version, "threshold": r.threshold,
                            "user_alert_rate": r.user_alert_rate, "alerts": r.alerts, "users_alerted": len(r.users),
                            "seconds": round(r.seconds, 2)}
                   for r in (cand, cur) if r is not None},
        "users": {"total": len(truth), "attackers": len(attackers), "normal": len(normal)},
        "groups": {name: split(users) for name, users in groups.items()},
        "attackers_caught": {"candidate": len(a & attackers), "current": len(b & attackers)},
        "attackers_lost": len(lost), "attackers_gained": len(groups["only_candidate"] & attackers),
        "by_attack": _by_attack(truth, attackers, a, b),
        "normal_budget": {"candidate": _budget(cand, a, normal), "current": _budget(cur, b, normal)},
        "score_shift": {"users": len(both), "median": _median(shifts), "mean": statistics.fmean(shifts) if shifts else None,
                        "median_margin_shift": _median(margins)},
        "severity_shift": {k: v for k, v in sev.items() if v},
        "severity": {r.role: {s: sum(x.severity == s for x in r.users.values()) for s in SEVERITIES}
                     for r in (cand, cur) if r is not None},
        "time_to_first_alert_s": {
            "candidate_median": _s(_median(detect_ms(cand.users))),
            "current_median": _s(_median(detect_ms(cur_users))) if cur is not None else None,
            "both_caught_median_change": _s(_median(earlier)),  # candidate - current; < 0: earlier
        },
        "lists": {"attackers_lost": [_user_entry(u, truth.get(u), None, cur_users[u]) for u in lost[:LIST_CAP]],
                  **{name: [_user_entry(u, truth.get(u), cand.users.get(u), cur_users.get(u))
                            for u in sorted(users)[:LIST_CAP]]
                     for name, users in groups.items() if name != "both"}},
    }


def _s(ms: float | None) -> float | None:
    return None if ms is None else round(ms / 1000, 3)


def compare(candidate: Path, current: Path | None, log: Path | str, out: Path | str, *,
            spec: logs.LogSpec | None = None, labels: str | None = None, device: str = "auto",
            runtime: str = "auto", cooldown_s: float = 600.0) -> dict:
    """Score ``log`` with both models, write comparison.{json,md,png} under ``out``; return the diff."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    truth = read_truth(log, spec)
    kw = {"device": device, "runtime": runtime, "cooldown_s": cooldown_s}
    cand = score_with(candidate, "candidate", log, out, spec, **kw)
    cur = score_with(current, "current", log, out, spec, **kw) if current is not None else None
    d = diff(truth, cand, cur, log=str(log), labels=labels)
    write(out, d)
    return d


def crossings_path(model_dir: Path | str) -> Path:
    """Where `run --shadow DIR` records each model's first threshold crossing per user (stream.shadow)."""
    return Path(model_dir) / "shadow" / "crossings.jsonl"


def shadow_runs(candidate: Path) -> tuple[ModelRun, ModelRun]:
    """The candidate (the shadow) and the serving model as `run --shadow` saw them on live traffic."""
    path = crossings_path(candidate)
    if not path.exists():
        raise FileNotFoundError(f"no shadow record at {path}: run `seqsentry run --shadow {candidate} ...` first")
    meta = json.loads((Path(candidate) / "meta.json").read_text())
    runs = {role: ModelRun(role, "", "", 0.0, 0.0, str(path)) for role in ("candidate", "current")}
    versions: dict[str, set[str]] = {"candidate": set(), "current": set()}
    with open(path, "rb") as f:
        for line in f:
            c = orjson.loads(line)
            role = "candidate" if c["model"] == "shadow" else "current"
            versions[role].add(c["version"])
            runs[role].users.setdefault(c["user_id"], UserAlerts(first=c["event_time"], alerts=1, max_score=c["score"],
                                                                 severity=c["severity"]))
            runs[role].alerts += 1
    cand, cur = runs["candidate"], runs["current"]
    cand.path, cand.version = str(candidate), meta["version"]
    cand.threshold, cand.user_alert_rate = float(meta["threshold"]), float(meta.get("user_alert_rate", 0.0))
    cur.path, cur.version = "serving (run --shadow)", ", ".join(sorted(versions["current"])) or "serving"
    return cand, cur


def compare_shadow(candidate: Path, out: Path | str, labels: Mapping[str, Label] | None = None,
                   labels_name: str | None = None) -> dict:
    """The diff of what `run --shadow` recorded (no log: users neither model crossed for are unknown,
    so there is no normal-user budget line)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cand, cur = shadow_runs(candidate)
    truth = {u: Truth(label=lab.label, attack=lab.attack if lab.label == 1 else None) for u, lab in (labels or {}).items()}
    for u in set(cand.users) | set(cur.users):
        truth.setdefault(u, Truth())
    d = diff(truth, cand, cur, log="live traffic (run --shadow)", labels=labels_name)
    d["normal_budget"] = {"candidate": None, "current": None}
    write(out, d)
    return d


def write(out: Path, d: dict) -> None:
    (out / "comparison.json").write_text(json.dumps(d, indent=2))
    (out / "comparison.md").write_text(markdown(d))
    plot(out / "comparison.png", d)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.2%}"


def summary_lines(d: dict) -> list[str]:
    """What `compare` prints: the few numbers that decide a promotion."""
    m, g = d["models"], d["groups"]
    cur = m.get("current", {}).get("version", "none")
    lines = [f"candidate {m['candidate']['version']} vs current {cur} on {d['log']} ({d['users']['total']:,} users, "
             f"{d['users']['attackers']:,} attackers)",
             f"users alerted: {g['both']['users']:,} by both, {g['only_candidate']['users']:,} only by the candidate "
             f"({g['only_candidate']['attackers']:,} attackers), {g['only_current']['users']:,} only by the current "
             f"({g['only_current']['attackers']:,} attackers)"]
    if d["users"]["attackers"]:
        c = d["attackers_caught"]
        lines.append(f"attackers caught: candidate {c['candidate']:,}, current {c['current']:,}; "
                     f"lost {d['attackers_lost']:,}, gained {d['attackers_gained']:,}")
    for role in ("candidate", "current"):
        b = d["normal_budget"][role]
        if b:
            lines.append(f"normal users alerted, {role}: {b['normal_users_alerted']:,}/{b['normal_users']:,} "
                         f"({_pct(b['rate'])}; budget {_pct(b['budget'])}, "
                         f"{'-' if b['times_budget'] is None else format(b['times_budget'], '.2f')}x)")
    return lines


def markdown(d: dict) -> str:
    m = d["models"]
    rows = [f"# Comparison: {m['candidate']['version']} (candidate) vs "
            f"{m.get('current', {}).get('version', 'no current model')} (current)", "",
            f"Log `{d['log']}`" + (f", labels `{d['labels']}`" if d["labels"] else "")
            + f": {d['users']['total']:,} users, {d['users']['attackers']:,} attackers, {d['users']['normal']:,} normal"
            + ("" if d["labelled"] else " (no labels: every user counted as normal)"), "",
            *[f"- {line}" for line in summary_lines(d)], "",
            "| model | version | threshold | alerts | users alerted | budget |", "|---|---|---|---|---|---|"]
    rows += [f"| {role} | {r['version']} | {r['threshold']:.4g} | {r['alerts']:,} | {r['users_alerted']:,} | "
             f"{_pct(r['user_alert_rate'])} |" for role, r in m.items()]
    rows += ["", "## Users alerted", "", "| group | users | attackers | normal |", "|---|---|---|---|"]
    rows += [f"| {name.replace('_', ' ')} | {g['users']:,} | {g['attackers']:,} | {g['normal']:,} |"
             for name, g in d["groups"].items()]
    if d["by_attack"]:
        rows += ["", "## Attackers caught, by attack kind", "",
                 "| kind | attackers | candidate | current | lost | gained |", "|---|---|---|---|---|---|"]
        rows += [f"| {k} | {v['attackers']} | {v['candidate']} | {v['current']} | {v['lost']} | {v['gained']} |"
                 for k, v in d["by_attack"].items()]
    t, s = d["time_to_first_alert_s"], d["score_shift"]
    rows += ["", "## Shifts", "",
             f"- time from first attack event to first alert (median): candidate {t['candidate_median']} s, "
             f"current {t['current_median']} s; attackers both catch: {t['both_caught_median_change']} s "
             "(candidate - current; negative is earlier)",
             f"- highest score of the {s['users']:,} users both alert: median change {s['median']}, "
             f"margin over each model's threshold: median change {s['median_margin_shift']}",
             "- severity (current -> candidate, users both alert): "
             + (", ".join(f"{k} {v}" for k, v in d["severity_shift"].items()) or "-")]
    if d["lists"]["attackers_lost"]:
        rows += ["", "## Attackers only the current model catches", ""]
        rows += [f"- {e['user_id']} ({e['attack']})" for e in d["lists"]["attackers_lost"][:50]]
    return "\n".join(rows) + "\n"


def plot(path: Path, d: dict) -> None:
    """One figure: users by group, attackers by kind, normal users against the budget, severities."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    ax = axes[0][0]
    names = list(d["groups"])
    att = [d["groups"][n]["attackers"] for n in names]
    nor = [d["groups"][n]["normal"] for n in names]
    ax.bar(names, nor, label="normal", color="#8da0cb")
    ax.bar(names, att, bottom=nor, label="attackers", color="#fc8d62")
    ax.set(title="Users alerted", ylabel="users")
    ax.legend(fontsize=8)
    ax = axes[0][1]
    kinds = list(d["by_attack"]) or ["(no labels)"]
    x = range(len(kinds))
    for off, role, color in ((-0.2, "current", "#999999"), (0.2, "candidate", "#1b9e77")):
        ax.bar([i + off for i in x], [d["by_attack"].get(k, {}).get(role, 0) for k in kinds], 0.4, label=role, color=color)
    ax.plot(list(x), [d["by_attack"].get(k, {}).get("attackers", 0) for k in kinds], "k_", ms=20, label="attackers")
    ax.set_xticks(list(x), kinds, rotation=30, ha="right", fontsize=8)
    ax.set(title="Attackers caught, by kind")
    ax.legend(fontsize=8)
    ax = axes[1][0]
    roles = [r for r in ("current", "candidate") if d["normal_budget"][r]]
    rates = [100 * d["normal_budget"][r]["rate"] for r in roles]
    ax.bar(roles, rates, color=["#999999" if r == "current" else "#1b9e77" for r in roles])
    for r in roles:
        b = 100 * d["normal_budget"][r]["budget"]
        ax.hlines([b, 1.5 * b], roles.index(r) - 0.4, roles.index(r) + 0.4, colors=["k", "r"], linestyles=["--", ":"])
    ax.set(title="Normal users alerted (%) vs budget (--) and 1.5x (:)", ylabel="% of normal users")
    ax = axes[1][1]
    for off, role, color in ((-0.2, "current", "#999999"), (0.2, "candidate", "#1b9e77")):
        sev = d["severity"].get(role)
        if sev:
            ax.bar([i + off for i in range(len(SEVERITIES))], [sev[s] for s in SEVERITIES], 0.4, label=role, color=color)
    ax.set_xticks(range(len(SEVERITIES)), SEVERITIES)
    ax.set(title="Users by highest severity", ylabel="users")
    ax.legend(fontsize=8)
    m = d["models"]
    fig.suptitle(f"{m['candidate']['version']} (candidate) vs {m.get('current', {}).get('version', 'none')} (current)",
                 fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
