"""`seqsentry promote`: a candidate becomes the registry's ``current`` only through a gate.

The gate is a comparison (stream.compare) of the candidate with the current model on a
recorded log, and rules over it:

* ``attackers-lost``: at most ``max_attackers_lost`` (default 0) confirmed attackers that the
  current model alerts and the candidate does not;
* ``normal-budget``: the candidate alerts at most ``max_budget_factor`` (default 1.5) times its
  alert budget (meta.json ``user_alert_rate``) of the log's normal users;
* ``stale-comparison``: a comparison given ready-made must be against the model that is
  current now.

Passing, the candidate is copied into ``versions/`` (when it is not there already) and
``current`` is switched with stream.registry's atomic rename: a running detector
hot-reloads it. Every promotion and rollback is a line of ``promotions.jsonl``, and every
published version keeps its comparison (and the gate's decision) under
``reports/<version>/``. ``rollback`` restores the version that was current before.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from stream import registry
from stream.registry import RegistryError

HISTORY = "promotions.jsonl"
REPORTS = "reports"


@dataclass(frozen=True)
class Rules:
    max_attackers_lost: int = 0
    max_budget_factor: float = 1.5


def failed_rules(d: dict, rules: Rules, current_version: str | None = None) -> list[str]:
    """One line per rule the comparison ``d`` breaks (empty: the candidate may be promoted)."""
    out = []
    compared = d["models"].get("current", {}).get("version")
    if compared != current_version:
        out.append(f"stale-comparison: the comparison is against {compared or 'no model'}, but the current model is "
                   f"{current_version or 'none'}; compare again")
    lost = d["attackers_lost"]
    if lost > rules.max_attackers_lost:
        names = ", ".join(e["user_id"] for e in d["lists"]["attackers_lost"][:5])
        out.append(f"attackers-lost: the candidate misses {lost} confirmed attacker(s) the current model alerts "
                   f"(allowed {rules.max_attackers_lost}): {names}{', ...' if lost > 5 else ''}")
    b = d["normal_budget"]["candidate"]
    if b["rate"] > rules.max_budget_factor * b["budget"]:
        out.append(f"normal-budget: the candidate alerts {b['normal_users_alerted']}/{b['normal_users']} normal users "
                   f"({b['rate']:.2%}), above {rules.max_budget_factor:g}x its budget {b['budget']:.2%} "
                   f"({rules.max_budget_factor * b['budget']:.2%})")
    return out


def history(registry_dir: Path | str) -> list[dict]:
    path = Path(registry_dir) / HISTORY
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _record(registry_dir: Path, entry: dict) -> None:
    with open(registry_dir / HISTORY, "a") as f:
        f.write(json.dumps({**entry, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}) + "\n")


@dataclass
class Decision:
    version: str
    previous: str | None
    promoted: bool
    failed: list[str]
    report: Path | None
    forced: bool = False


def candidate_version(path: Path) -> str:
    from stream.artifact import load_artifact

    return load_artifact(path, "cpu").version  # verified: a corrupt candidate is refused here


def promote(candidate: Path, registry_dir: Path | str, comparison: dict | None, *, rules: Rules = Rules(),
            report_dir: Path | None = None, force: bool = False) -> Decision:
    """Gate ``candidate`` on ``comparison`` (None only with ``force``) and publish it as current.

    ``report_dir``: a directory holding the comparison's files (comparison.json/md/png), kept
    under reports/<version>/ of the registry whatever the decision.
    """
    reg = Path(registry_dir)
    version = candidate_version(candidate)
    previous = registry.current_version(reg)
    if version == previous:
        raise RegistryError(f"{version} is already the current model of {reg}")
    if comparison is None and not force:
        raise ValueError("nothing to gate on: give a log to compare on (--log LOG [--labels L]), a comparison "
                         "(--comparison DIR from `seqsentry compare`), or --force")
    failed = failed_rules(comparison, rules, previous) if comparison is not None and not force else []
    kept = reg / REPORTS / version
    if report_dir is not None and Path(report_dir).resolve() != kept.resolve():
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(kept, ignore_errors=True)
        shutil.copytree(report_dir, kept, ignore=shutil.ignore_patterns("alerts-*.jsonl"))
    decision = Decision(version, previous, not failed, failed, kept if report_dir is not None else None, force)
    if report_dir is not None:
        (kept / "decision.json").write_text(json.dumps({**asdict(decision), "report": str(decision.report),
                                                        "rules": asdict(rules)}, indent=2))
    if failed:
        return decision
    versions_dir = (reg / "versions").resolve()
    if Path(candidate).resolve().parent != versions_dir:
        if (reg / "versions" / version).exists():
            raise RegistryError(f"{reg} already holds a version {version} that is not {candidate}; retrain or remove it")
        registry.publish(reg, candidate, version, make_current=False)
    registry.set_current(reg, version)
    _record(reg, {"action": "promote", "version": version, "from": previous, "forced": force,
                  "report": str(Path(REPORTS) / version) if report_dir is not None else None})
    return decision


def rollback(registry_dir: Path | str) -> tuple[str, str]:
    """Point ``current`` back at the version current before it; returns (from, to).

    The version is taken from promotions.jsonl (the promotion that made the current version
    current: what it replaced), so repeated rollbacks walk back through the promotions; a
    registry without history falls back to the version published before the current one.
    """
    reg = Path(registry_dir)
    cur = registry.current_version(reg)
    if cur is None:
        raise RegistryError(f"{reg} has no current model to roll back")
    target = next((e["from"] for e in reversed(history(reg)) if e["action"] == "promote" and e["version"] == cur), None)
    if target is None:
        held = registry.versions(reg)
        earlier = held[: held.index(cur)] if cur in held else []
        target = earlier[-1] if earlier else None
    if target is None:
        raise RegistryError(f"nothing to roll back to: {cur} is the first version of {reg}")
    registry.set_current(reg, target)
    _record(reg, {"action": "rollback", "version": target, "from": cur})
    return cur, target
