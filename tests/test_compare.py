"""`seqsentry compare`: the user-level diff of two models on a recorded log with known differences.

The candidate is the session's tiny model with a lower threshold (same weights), low enough to
catch an attacker the model misses: it must alert every user the model alerts, and more - so
the diff's every side is known.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from stream import compare, logs
from stream.cli import main
from stream.model import Scorer
from tests.loop_helpers import with_threshold
from training import dataset


@pytest.fixture(scope="module")
def low_model(tiny_model, traffic_log, tmp_path_factory):
    """The tiny model with its threshold lowered to the score of the best-hidden attacker it misses."""
    art = tiny_model[0].artifact
    scorer = Scorer.load(art, "cpu", "torch")
    ws = dataset.build_windows(dataset.batches_from_log(traffic_log), scorer.artifact.vocab,
                               scorer.artifact.window_config)
    best = np.full(len(ws.users), -np.inf)
    np.maximum.at(best, ws.user, scorer.score(ws.encoded(), floor=-np.inf))
    attackers = np.isin(np.arange(len(ws.users)), np.unique(ws.user[ws.label == 1]))
    missed = best[attackers & (best < scorer.artifact.meta.threshold)]
    assert len(missed), "the tiny model catches every attacker: no lower threshold can gain one"
    return with_threshold(art, tmp_path_factory.mktemp("low") / "model", float(missed.max()), "low")


@pytest.fixture(scope="module")
def runs(tiny_model, low_model, traffic_log, tmp_path_factory):
    """Each model scored once over the log (the stock offline pipeline), and the log's truth."""
    out = tmp_path_factory.mktemp("runs")
    kw = {"device": "cpu", "runtime": "torch", "cooldown_s": 600.0}
    base = compare.score_with(tiny_model[0].artifact, "current", traffic_log, out, None, **kw)
    low = compare.score_with(low_model, "candidate", traffic_log, out, None, **kw)
    return compare.read_truth(traffic_log), low, base


@pytest.fixture(scope="module")
def diff(runs):
    truth, low, base = runs
    return compare.diff(truth, low, base, log="traffic.jsonl")


def test_a_lower_threshold_alerts_every_user_the_current_model_alerts(diff, runs):
    assert diff["groups"]["only_current"]["users"] == 0
    assert diff["groups"]["both"]["users"] == len(runs[2].users) > 0


def test_users_only_the_candidate_alerts_are_counted_and_listed(diff, runs):
    truth, low, base = runs
    only = set(low.users) - set(base.users)
    assert only and diff["groups"]["only_candidate"]["users"] == len(only)
    assert {e["user_id"] for e in diff["lists"]["only_candidate"]} == only


def test_attackers_per_kind_add_up_to_the_attackers_caught(diff):
    kinds = diff["by_attack"].values()
    assert sum(k["attackers"] for k in kinds) == diff["users"]["attackers"] > 0
    for role in ("candidate", "current"):
        assert sum(k[role] for k in kinds) == diff["attackers_caught"][role]


def test_normal_users_alerted_are_measured_against_each_models_budget(diff, tiny_model):
    b = diff["normal_budget"]["candidate"]
    assert b["budget"] == json.loads((tiny_model[0].artifact / "meta.json").read_text())["user_alert_rate"]
    assert b["normal_users_alerted"] == diff["groups"]["only_candidate"]["normal"] + diff["groups"]["both"]["normal"]
    assert b["rate"] == pytest.approx(b["normal_users_alerted"] / diff["users"]["normal"])


def test_a_lower_threshold_alerts_attackers_no_later(diff):
    assert diff["time_to_first_alert_s"]["both_caught_median_change"] <= 0


def test_swapping_the_models_turns_gained_attackers_into_lost_ones(runs, diff):
    truth, low, base = runs
    low.role, base.role = "current", "candidate"
    try:
        back = compare.diff(truth, base, low)
    finally:
        low.role, base.role = "candidate", "current"
    assert back["attackers_lost"] == diff["attackers_gained"] > 0
    assert {e["user_id"] for e in back["lists"]["attackers_lost"]} == {
        e["user_id"] for e in diff["lists"]["only_candidate"] if e["label"] == 1}


def test_without_a_current_model_every_alerted_user_is_the_candidates_own(runs):
    truth, low, _ = runs
    d = compare.diff(truth, low, None)
    assert d["groups"]["only_candidate"]["users"] == len(low.users) and d["normal_budget"]["current"] is None


def test_the_report_is_markdown_json_and_one_png(diff, tmp_path):
    compare.write(tmp_path, diff)
    assert json.loads((tmp_path / "comparison.json").read_text()) == json.loads(json.dumps(diff))
    assert "only candidate" in (tmp_path / "comparison.md").read_text()
    assert (tmp_path / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_labels_from_a_file_decide_who_is_an_attacker(traffic_log, tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("user_id,label,attack\nu_not_there,1,x\n")
    spec = logs.LogSpec(labels=logs.read_labels(labels))
    truth = compare.read_truth(traffic_log, spec)
    assert not any(t.label == 1 for t in truth.values())  # the log's own labels are replaced by the file's


def test_compare_command_prints_the_summary_and_writes_the_report(tiny_model, low_model, traffic_log, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", str(low_model), str(traffic_log), "--against", str(tiny_model[0].artifact), "--out", str(out),
                 "--device", "cpu", "--runtime", "torch"]) == 0
    printed = capsys.readouterr().out
    assert "only by the candidate" in printed and "normal users alerted, candidate" in printed
    assert {p.name for p in out.iterdir()} >= {"comparison.md", "comparison.json", "comparison.png",
                                               "alerts-candidate.jsonl", "alerts-current.jsonl"}


# ---- run --shadow: the same diff from live traffic ---------------------------------------------
@pytest.fixture(scope="module")
def shadow_record(tiny_model, low_model, traffic_log, tmp_path_factory):
    """The tiny model serving and the low-threshold copy in shadow over the log, as `run --shadow` does."""
    from stream.model import Scorer
    from stream.offline import score_log
    from stream.shadow import ShadowRecorder

    compare.crossings_path(low_model).unlink(missing_ok=True)  # this run's record only
    det = ShadowRecorder(Scorer.load(tiny_model[0].artifact, "cpu", "torch"),
                         shadow=Scorer.load(low_model, "cpu", "torch"))
    score_log(traffic_log, det, tmp_path_factory.mktemp("shadow") / "alerts.jsonl")
    return compare.crossings_path(low_model)


def test_shadow_mode_records_the_users_each_model_crosses_its_threshold_for(shadow_record, runs):
    _, low, base = runs
    lines = [json.loads(x) for x in shadow_record.read_text().splitlines()]
    assert {c["user_id"] for c in lines if c["model"] == "serving"} == set(base.users)
    assert {c["user_id"] for c in lines if c["model"] == "shadow"} == set(low.users)


def test_compare_shadow_gives_the_diff_of_the_recorded_log(shadow_record, low_model, diff, tmp_path):
    live = compare.compare_shadow(low_model, tmp_path)
    assert live["groups"] == {k: {**v, "normal": v["normal"] + v["attackers"], "attackers": 0}
                              for k, v in diff["groups"].items()}  # no labels given: every user counts as normal
    assert (tmp_path / "comparison.png").is_file()
