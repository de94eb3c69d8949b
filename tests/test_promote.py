"""`seqsentry promote`: every gate rule, the atomic switch of `current`, reports kept, and rollback."""

from __future__ import annotations

import json

import pytest

from stream import compare, logs, promote, registry
from stream.cli import main
from tests.loop_helpers import with_threshold

ATTACKERS, NORMAL, BUDGET = 5, 100, 0.01


def make_diff(lost: int = 0, normal_alerted: int = 0, current: str | None = "v-current") -> dict:
    """A comparison with known numbers: the current model catches every attacker, the candidate
    misses ``lost`` of them and alerts ``normal_alerted`` of the 100 normal users."""
    truth = {f"a{i}": compare.Truth(label=1, attack="farm", first_attack_ts=0) for i in range(ATTACKERS)}
    truth |= {f"n{i}": compare.Truth(label=0) for i in range(NORMAL)}

    def run(role: str, version: str, users: list[str]) -> compare.ModelRun:
        return compare.ModelRun(role, version, version, 0.9, BUDGET, "", {u: compare.UserAlerts(first=1, alerts=1,
                                                                                               max_score=0.95)
                                                                         for u in users})
    cand = run("candidate", "v-candidate", [f"a{i}" for i in range(lost, ATTACKERS)]
               + [f"n{i}" for i in range(normal_alerted)])
    cur = run("current", current, [f"a{i}" for i in range(ATTACKERS)]) if current else None
    return compare.diff(truth, cand, cur)


def test_a_candidate_losing_no_attacker_within_the_budget_passes():
    assert promote.failed_rules(make_diff(normal_alerted=1), promote.Rules(), "v-current") == []


def test_a_lost_confirmed_attacker_fails_rule_attackers_lost():
    (line,) = promote.failed_rules(make_diff(lost=1), promote.Rules(), "v-current")
    assert line.startswith("attackers-lost:") and "a0" in line


def test_max_attackers_lost_allows_that_many():
    assert promote.failed_rules(make_diff(lost=2), promote.Rules(max_attackers_lost=2), "v-current") == []


def test_normal_users_past_one_and_a_half_times_the_budget_fail_rule_normal_budget():
    (line,) = promote.failed_rules(make_diff(normal_alerted=2), promote.Rules(), "v-current")  # 2 % > 1.5 x 1 %
    assert line.startswith("normal-budget:")


def test_max_budget_factor_moves_the_budget_limit():
    assert promote.failed_rules(make_diff(normal_alerted=2), promote.Rules(max_budget_factor=2.0), "v-current") == []


def test_a_comparison_against_another_model_than_the_current_is_stale():
    (line,) = promote.failed_rules(make_diff(), promote.Rules(), "v-other")
    assert line.startswith("stale-comparison:")


def test_a_first_promotion_is_compared_against_no_model():
    assert promote.failed_rules(make_diff(current=None), promote.Rules(), None) == []


@pytest.fixture
def reg(tiny_model, tmp_path):
    """A registry whose current model is the session's tiny model."""
    art = tiny_model[0].artifact
    r = tmp_path / "registry"
    registry.publish(r, art, tiny_model[0].version)
    return r


def candidate(tiny_model, tmp_path, tag: str, threshold: float | None = None):
    art = tiny_model[0].artifact
    thr = threshold if threshold is not None else json.loads((art / "meta.json").read_text())["threshold"]
    return with_threshold(art, tmp_path / tag, thr, tag)


def _comparison(tmp_path, d: dict, current: str) -> str:
    d["models"]["current"]["version"] = current
    out = tmp_path / "cmp"
    out.mkdir()
    compare.write(out, d)
    return str(out)


def test_a_refused_candidate_exits_1_with_one_line_naming_the_rule_and_current_stays(tiny_model, reg, tmp_path, capsys):
    cand = candidate(tiny_model, tmp_path, "c1")
    cmp_dir = _comparison(tmp_path, make_diff(normal_alerted=5), tiny_model[0].version)
    assert main(["promote", str(cand), "--registry", str(reg), "--comparison", cmp_dir]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "normal-budget:" in err[0]
    assert registry.current_version(reg) == tiny_model[0].version


def test_a_refused_candidates_comparison_and_decision_are_kept_in_the_registry(tiny_model, reg, tmp_path):
    cand = candidate(tiny_model, tmp_path, "c1")
    cmp_dir = _comparison(tmp_path, make_diff(lost=1), tiny_model[0].version)
    assert main(["promote", str(cand), "--registry", str(reg), "--comparison", cmp_dir]) == 1
    kept = reg / "reports" / f"{tiny_model[0].version}-c1"
    assert json.loads((kept / "decision.json").read_text())["promoted"] is False
    assert (kept / "comparison.md").is_file()


def test_promote_on_a_log_publishes_the_candidate_as_current_and_keeps_its_report(tiny_model, reg, traffic,
                                                                                    tmp_path, capsys):
    log = tmp_path / "t.jsonl"
    logs.write_log(log, [traffic])
    cand = candidate(tiny_model, tmp_path, "same")  # the same model: loses nobody, alerts nobody new
    assert main(["promote", str(cand), "--registry", str(reg), "--log", str(log), "--device", "cpu",
                 "--runtime", "torch"]) == 0, capsys.readouterr().err
    version = f"{tiny_model[0].version}-same"
    assert registry.current_version(reg) == version and (reg / "versions" / version).is_dir()
    d = json.loads((reg / "reports" / version / "comparison.json").read_text())
    assert d["attackers_lost"] == 0 and d["models"]["current"]["version"] == tiny_model[0].version
    assert (reg / "reports" / version / "comparison.png").is_file()


def test_promote_without_a_log_a_comparison_or_force_is_refused_as_usage(tiny_model, reg, tmp_path, capsys):
    assert main(["promote", str(candidate(tiny_model, tmp_path, "c1")), "--registry", str(reg)]) == 2
    assert "--log" in capsys.readouterr().err


def test_the_current_version_cannot_be_promoted_again(tiny_model, reg, capsys):
    assert main(["promote", tiny_model[0].version, "--registry", str(reg), "--force"]) == 2
    assert "already the current model" in capsys.readouterr().err


def test_rollback_restores_the_version_current_before_the_promotion(tiny_model, reg, tmp_path):
    assert main(["promote", str(candidate(tiny_model, tmp_path, "c1")), "--registry", str(reg), "--force"]) == 0
    assert main(["promote", "--rollback", "--registry", str(reg)]) == 0
    assert registry.current_version(reg) == tiny_model[0].version
    assert [e["action"] for e in promote.history(reg)] == ["promote", "rollback"]


def test_repeated_rollbacks_walk_back_through_the_promotions(tiny_model, reg, tmp_path):
    for tag in ("c1", "c2"):
        assert main(["promote", str(candidate(tiny_model, tmp_path, tag)), "--registry", str(reg), "--force"]) == 0
    main(["promote", "--rollback", "--registry", str(reg)])
    assert registry.current_version(reg) == f"{tiny_model[0].version}-c1"
    main(["promote", "--rollback", "--registry", str(reg)])
    assert registry.current_version(reg) == tiny_model[0].version


def test_rollback_of_the_first_version_is_refused(tiny_model, reg, capsys):
    assert main(["promote", "--rollback", "--registry", str(reg)]) == 2
    assert "nothing to roll back to" in capsys.readouterr().err
