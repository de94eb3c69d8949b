"""Training: datasets from the live code, tiny end-to-end runs, artifacts, metrics, calibration."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from stream import logs, registry
from stream.artifact import ArtifactError, load_artifact
from stream.cli import main
from stream.encoding import END, Encoded
from stream.events import Event, EventBatch
from stream.model import ModelSize, Scorer
from stream.windows import WindowConfig
from tests.artifacts import reseal
from training import dataset, metrics, synth, train

TINY = dict(size=ModelSize(layers=1, hidden=32, heads=2, intermediate=64), window=WindowConfig(max_events=32),
            pretrain_steps=20, finetune_epochs=1, max_train_windows=3000, batch_size=64, baselines=True)


@pytest.fixture(scope="module")
def records(traffic):
    return traffic


@pytest.fixture(scope="module")
def trained(tiny_model):
    return tiny_model


def tampered(trained, tmp_path, name: str, edit, *, checksummed: bool = False):
    """A copy of the trained artifact with JSON file ``name`` changed by ``edit(dict)``; with
    ``checksummed`` its checksums are recomputed too (a consistent, hostile artifact)."""
    import shutil

    from stream.artifact import file_sha256

    bad = tmp_path / "tampered"
    shutil.copytree(trained[0].artifact, bad)
    doc = json.loads((bad / name).read_text())
    edit(doc)
    (bad / name).write_text(json.dumps(doc))
    if checksummed:
        meta = json.loads((bad / "meta.json").read_text())
        meta["checksums"][name] = file_sha256(bad / name)
        (bad / "meta.json").write_text(json.dumps(meta))
        reseal(bad)
    return bad


def encoded(ws: dataset.WindowSet) -> Encoded:
    return ws.encoded()


def test_training_publishes_a_classifier_with_a_report(trained):
    res, reg = trained
    assert res.kind == "classifier"
    assert registry.current(reg) == res.artifact.resolve()
    for name in ("report.md", "report.json", "pr.png", "roc.png", "scores.png"):
        assert (res.report_dir / name).is_file()
    assert set(res.report) == {"transformer", "isolation_forest", "markov"}
    assert 0 <= res.report["transformer"]["pr_auc"] <= 1


def test_saved_then_loaded_model_gives_identical_scores(trained, records):
    res, _ = trained
    art = load_artifact(res.artifact)
    ws = dataset.build_windows(dataset.batches_from_records(records[:3000]), art.vocab, art.window_config)
    a = Scorer(art).score(encoded(ws))
    b = Scorer.load(res.artifact, "cpu", runtime="torch").score(encoded(ws))
    assert np.array_equal(a, b)


def test_onnx_runtime_scores_match_torch(trained, records):
    res, _ = trained
    torch_scorer = Scorer.load(res.artifact, "cpu", runtime="torch")
    onnx_scorer = Scorer.load(res.artifact, "cpu", runtime="onnx")
    ws = dataset.build_windows(dataset.batches_from_records(records[:3000]), torch_scorer.artifact.vocab,
                               torch_scorer.artifact.window_config)
    enc = encoded(ws)
    a, b = torch_scorer.score(enc), onnx_scorer.score(enc)
    assert onnx_scorer.runtime == "onnxruntime"
    assert np.abs(a - b).max() < 1e-4
    row = int(np.argmax(a))
    wa, wb = dict(torch_scorer.explain(enc, row, top=1000)), dict(onnx_scorer.explain(enc, row, top=1000))
    assert wa.keys() == wb.keys() and all(abs(wa[k] - wb[k]) < 1e-4 for k in wa)


def _windows(trained, records, n=3000):
    art = load_artifact(trained[0].artifact)
    return dataset.build_windows(dataset.batches_from_records(records[:n]), art.vocab, art.window_config)


def test_a_sustained_score_is_the_lowest_of_the_window_and_of_it_without_its_newest_events(trained, records):
    scorer = Scorer.load(trained[0].artifact, "cpu", runtime="torch")
    scorer.artifact.meta.sustain = 3
    enc = _windows(trained, records).encoded()
    own = scorer.score_windows(enc)
    sustained = scorer.score(enc, floor=-np.inf)
    tokens = enc.attention_mask.sum(1) - 1  # the shape tokens, then the events
    events = tokens - scorer.artifact.vocab.n_shape
    open_ = ~(enc.input_ids == END).any(1)
    for row in np.flatnonzero((events >= 3) & open_)[:40]:
        n = int(tokens[row])
        cut = [Encoded(np.where(np.arange(enc.input_ids.shape[1]) > n - j, 0, enc.input_ids[row])[None],
                       np.where(np.arange(enc.input_ids.shape[1]) > n - j, 0, enc.attention_mask[row])[None],
                       enc.length[row:row + 1]) for j in (1, 2)]
        expected = min(own[row], *(scorer.score_windows(c)[0] for c in cut))
        assert sustained[row] == pytest.approx(expected, abs=1e-6)
    assert (sustained[(events < 3) & open_] == 0).all()  # fewer events than k: no alert possible


def test_an_ended_sessions_window_keeps_its_own_score_under_sustain(trained, records):
    scorer = Scorer.load(trained[0].artifact, "cpu", runtime="torch")
    scorer.artifact.meta.sustain = 3
    enc = _windows(trained, records).encoded()
    ended = (enc.input_ids == END).any(1)
    assert ended.any()
    assert np.array_equal(scorer.score(enc, floor=-np.inf)[ended], scorer.score_windows(enc)[ended])


def test_below_the_floor_a_window_keeps_its_own_score(trained, records):
    scorer = Scorer.load(trained[0].artifact, "cpu", runtime="torch")
    scorer.artifact.meta.sustain = 3
    enc = _windows(trained, records).encoded()
    own = scorer.score_windows(enc)
    floor = float(np.median(own))
    s = scorer.score(enc, floor=floor)
    assert (s[own < floor] == own[own < floor]).all()
    assert (s[own >= floor] <= own[own >= floor]).all()


def test_a_classifier_is_trained_with_sustained_alerts_and_zero_label_with_single_events(trained, zero_label):
    assert load_artifact(trained[0].artifact).meta.sustain == train.TrainConfig().sustain > 1
    assert load_artifact(zero_label[0].artifact).meta.sustain == 1


def test_artifact_records_threshold_fingerprint_and_checksums(trained):
    meta = json.loads((trained[0].artifact / "meta.json").read_text())
    assert meta["threshold"] == trained[0].threshold
    assert len(meta["data_fingerprint"]) == 32
    assert set(meta["checksums"]) == {"model.safetensors", "config.json", "vocab.json"}


def test_corrupt_weights_are_refused(trained, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(trained[0].artifact, bad)
    with open(bad / "model.safetensors", "r+b") as f:
        f.seek(200)
        f.write(b"\x00\x01\x02\x03")
    with pytest.raises(ArtifactError, match="checksum"):
        load_artifact(bad)


def test_pickle_files_are_refused(trained, tmp_path):
    import shutil

    bad = tmp_path / "pickled"
    shutil.copytree(trained[0].artifact, bad)
    (bad / "pytorch_model.bin").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(ArtifactError, match="pickle"):
        load_artifact(bad)


def test_other_encoding_version_is_refused(trained, tmp_path):
    bad = tampered(trained, tmp_path, "meta.json", lambda m: m.update(encoding_version=0))
    with pytest.raises(ArtifactError, match="encoding version"):
        load_artifact(bad)


def test_registry_switches_current_atomically(trained, tmp_path):
    reg = tmp_path / "reg"
    registry.publish(reg, trained[0].artifact, "v1")
    registry.publish(reg, trained[0].artifact, "v2", make_current=False)
    assert registry.current_version(reg) == "v1"
    registry.set_current(reg, "v2")
    assert registry.current_version(reg) == "v2"
    with pytest.raises(registry.RegistryError):
        registry.set_current(reg, "v3")


def test_empty_registry_is_a_clear_error(tmp_path):
    with pytest.raises(registry.RegistryError, match="seqsentry train"):
        registry.current(tmp_path)


def test_split_is_disjoint_by_user_and_chronological(records):
    vocab = dataset.learn_vocabulary(dataset.batches_from_records(records), WindowConfig(max_events=16))
    ws = dataset.build_windows(dataset.batches_from_records(records), vocab, WindowConfig(max_events=16))
    sp = dataset.split(ws)
    users = [set(ws.user[i].tolist()) for i in (sp.train, sp.val, sp.test)]
    assert not (users[0] & users[1]) and not (users[0] & users[2]) and not (users[1] & users[2])
    assert ws.ts[sp.train].max() < ws.ts[sp.val].min() and ws.ts[sp.train].max() < ws.ts[sp.test].min()


def test_one_window_per_event_and_window_labels_follow_attack_events(records):
    window = WindowConfig(max_events=16)
    vocab = dataset.learn_vocabulary(dataset.batches_from_records(records), window)
    ws = dataset.build_windows(dataset.batches_from_records(records), vocab, window)
    session_ends = (ws.input_ids == END).any(1)
    assert (~session_ends).sum() == len(records)
    by_event_label = np.array([r["label"] for r in records])
    # a window completed by an attack event is always positive
    positive_triggers = by_event_label.sum()
    assert (ws.label == 1).sum() >= positive_triggers
    assert set(ws.attack_names[1:]) <= set(synth.ATTACKS)


def test_threshold_calibration_hits_the_target_fpr_on_held_out_normals():
    rng = np.random.default_rng(0)
    val, test = rng.normal(size=20_000), rng.normal(size=20_000)
    for target in (0.001, 0.01, 0.05):
        thr = metrics.calibrate_threshold(val, target)
        assert (val >= thr).mean() <= target
        assert abs((test >= thr).mean() - target) < max(0.3 * target, 0.0015)


def test_the_alert_rate_bound_is_exceeded_in_about_one_calibration_draw_in_ten():
    rng = np.random.default_rng(3)
    for n, target in ((50, 0.005), (400, 0.01)):
        bound = metrics.alert_rate_bound(n, target)
        # the share of new normal users above each draw's threshold, exactly: scores uniform on [0, 1)
        shares = np.array([1 - metrics.calibrate_threshold(rng.random(n), target) for _ in range(4000)])
        assert 0.08 < (shares > bound).mean() < 0.12
        assert bound > shares.mean() > 0.8 * max(np.floor(target * (n + 1)), 1) / (n + 1)


def test_metrics_agree_with_scikit_learn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 5000)
    s = np.round(rng.random(5000) + 0.3 * y, 2)  # rounded: plenty of ties
    assert metrics.roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-9)
    assert metrics.average_precision(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-9)


def test_metrics_of_a_single_class_are_undefined_not_an_error():
    s = np.array([0.2, 0.9, 0.4])
    assert np.isnan(metrics.roc_auc(np.zeros(3, dtype=int), s))
    assert np.isnan(metrics.average_precision(np.zeros(3, dtype=int), s))
    assert np.isnan(metrics.roc_auc(np.ones(3, dtype=int), s)) and metrics.average_precision(np.ones(3, dtype=int), s) == 1.0


def test_precision_recall_at_threshold_on_a_known_case():
    y = np.array([1, 1, 0, 0, 1])
    s = np.array([0.9, 0.4, 0.8, 0.1, 0.7])
    r = metrics.at_threshold(y, s, 0.5)
    assert (r["tp"], r["fp"], r["fn"]) == (2, 1, 1)
    assert r["precision"] == pytest.approx(2 / 3) and r["recall"] == pytest.approx(2 / 3)


@pytest.fixture(scope="module")
def zero_label(records, tmp_path_factory):
    unlabeled = [{k: v for k, v in r.items() if k not in ("label", "attack")} for r in records]
    cfg = train.TrainConfig(**{**TINY, "pretrain_steps": 80, "zero_label": True})
    res = train.train(lambda: dataset.batches_from_records(unlabeled), tmp_path_factory.mktemp("zl"), cfg, show=False)
    return res, unlabeled


def test_zero_label_mode_gives_a_surprise_model_on_the_same_serving_path(zero_label):
    res, unlabeled = zero_label
    assert res.kind == "mlm" and not res.report
    scorer = Scorer.load(res.artifact, "cpu")
    ws = dataset.build_windows(dataset.batches_from_records(unlabeled[:2000]), scorer.artifact.vocab,
                               scorer.artifact.window_config)
    s = scorer.score(encoded(ws))
    assert np.isfinite(s).all() and (s > 0).all()


def test_zero_label_scores_an_event_type_never_seen_in_training_above_the_threshold(zero_label):
    res, unlabeled = zero_label
    scorer = Scorer.load(res.artifact, "cpu")
    user = unlabeled[0]["user_id"]
    mine = [r for r in unlabeled if r["user_id"] == user][:10]
    odd = [*mine, {**mine[-1], "ts": mine[-1]["ts"] + 1000, "type": "never-seen-before"}]
    ws = dataset.build_windows(dataset.batches_from_records(odd), scorer.artifact.vocab, scorer.artifact.window_config)
    s = scorer.score(encoded(ws))
    assert s[len(mine)] >= res.threshold > np.median(s[: len(mine)])


def test_user_threshold_keeps_the_share_of_normal_users_alerted_within_budget():
    rng = np.random.default_rng(2)
    users = rng.integers(0, 4000, 200_000)  # users with very different numbers of windows
    ts = rng.integers(0, 30 * metrics.DAY_MS, len(users))
    scores = rng.normal(size=len(users))
    thr, steps = metrics.calibrate_user_threshold(scores, users, ts, 0.01)
    per_user, per_day = metrics.user_maxima(scores, users, ts)
    assert (per_user >= thr).mean() <= 0.01 and (per_day >= thr).mean() <= 0.01
    assert (per_user >= thr).mean() > 0.005  # not needlessly strict either
    assert steps[0] == thr and steps == sorted(steps) and steps[-1] > per_user.max()


def test_severity_follows_the_calibrated_steps():
    from stream.alerts import severity

    steps = [1.0, 2.0, 4.0, 9.0]
    assert [severity(x, steps) for x in (1.0, 2.5, 5.0, 10.0)] == ["low", "medium", "high", "critical"]


@pytest.mark.parametrize("field,value,match", [
    ("threshold", "0.5", "finite number"),
    ("threshold", float("nan"), "finite number"),
    ("threshold", 2.0, r"\(0, 1\]"),
    ("severity", [0.1, 0.2], "severity"),
    ("window", {"max_events": 64, "bogus": 1}, "window config"),
    ("window", {"max_events": "64"}, "window config"),
    ("checksums", ["model.safetensors"], "checksums"),
    ("metrics", 3, "metrics"),
    ("user_alert_rate", "0.005", "user_alert_rate"),
    ("bogus_field", 1, "unreadable"),
    ("threshold", 10**400, "finite number"),
    ("window", {"max_events": 64.0}, "window config"),
    ("sustain", 0, "sustain"),
    ("sustain", "3", "sustain"),
    ("min_ended_events", 33, "min_ended_events"),  # the window holds 32
    ("min_ended_events", -1, "min_ended_events"),
    ("min_ended_events", True, "min_ended_events"),
])
def test_meta_fields_that_would_break_serving_are_refused_in_one_line(trained, tmp_path, field, value, match):
    bad = tampered(trained, tmp_path, "meta.json", lambda m: m.update({field: value}))
    with pytest.raises(ArtifactError, match=match) as err:
        load_artifact(bad)
    assert "\n" not in str(err.value)


def test_an_edited_meta_json_with_valid_fields_is_refused_by_the_manifest(trained, tmp_path):
    bad = tampered(trained, tmp_path, "meta.json", lambda m: m.update(version="someone-elses"))
    with pytest.raises(ArtifactError, match="checksum mismatch for meta.json"):
        load_artifact(bad)


def _signed_copy(trained, dest, monkeypatch):
    from stream.artifact import save_artifact

    art = load_artifact(trained[0].artifact)
    monkeypatch.setenv("SEQSENTRY_MODEL_KEY", "k" * 32)
    return save_artifact(dest, art.model, art.vocab, art.meta)


def test_with_a_signing_key_a_signed_artifact_loads(trained, tmp_path, monkeypatch):
    signed = _signed_copy(trained, tmp_path / "signed", monkeypatch)
    assert (signed / "SHA256SUMS.hmac").is_file()
    assert load_artifact(signed).version == trained[0].version


def test_with_a_signing_key_an_unsigned_artifact_is_refused(trained, monkeypatch):
    monkeypatch.setenv("SEQSENTRY_MODEL_KEY", "k" * 32)
    with pytest.raises(ArtifactError, match="not signed"):
        load_artifact(trained[0].artifact)


def test_with_a_signing_key_tampered_weights_with_recomputed_checksums_are_refused(trained, tmp_path, monkeypatch):
    from stream.artifact import file_sha256

    signed = _signed_copy(trained, tmp_path / "signed", monkeypatch)
    weights = bytearray((signed / "model.safetensors").read_bytes())
    weights[-8:] = b"\x00" * 8  # the last weights, inside the tensor data
    (signed / "model.safetensors").write_bytes(bytes(weights))
    meta = json.loads((signed / "meta.json").read_text())
    meta["checksums"]["model.safetensors"] = file_sha256(signed / "model.safetensors")
    (signed / "meta.json").write_text(json.dumps(meta))
    reseal(signed)
    with pytest.raises(ArtifactError, match="signature does not match") as err:
        load_artifact(signed)
    assert "\n" not in str(err.value)


def test_with_a_signing_key_a_garbled_signature_is_refused_in_one_line(trained, tmp_path, monkeypatch):
    signed = _signed_copy(trained, tmp_path / "signed", monkeypatch)
    (signed / "SHA256SUMS.hmac").write_text("é" * 64)
    with pytest.raises(ArtifactError, match="signature does not match"):
        load_artifact(signed)


def test_a_signature_that_is_not_a_regular_file_is_refused_without_reading_it(trained, tmp_path, monkeypatch):
    import os

    signed = _signed_copy(trained, tmp_path / "signed", monkeypatch)
    (signed / "SHA256SUMS.hmac").unlink()
    os.mkfifo(signed / "SHA256SUMS.hmac")  # reading it would block forever
    with pytest.raises(ArtifactError, match="not a regular file"):
        load_artifact(signed)


def test_an_impossible_sustain_is_refused_before_training():
    with pytest.raises(ValueError, match="sustain"):
        train.TrainConfig(sustain=0)


def test_a_short_signing_key_is_refused_in_one_line(trained, monkeypatch):
    monkeypatch.setenv("SEQSENTRY_MODEL_KEY", "short")
    with pytest.raises(ArtifactError, match="shorter than 16"):
        load_artifact(trained[0].artifact)


def test_a_log_with_non_ecommerce_event_types_trains_and_evaluates_unchanged(records, tmp_path, capsys):
    codes = {t: f"E{i}" for i, t in enumerate(synth.NORMAL_TYPES)}
    log = tmp_path / "codes.jsonl"
    logs.write_log(log, [[{**r, "type": codes.get(r["type"], "E99")} for r in records]])
    args = ["train", str(log), "--registry", str(tmp_path / "reg"), "--out", str(tmp_path / "runs"), "-q",
            "--pretrain-steps", "10", "--epochs", "1", "--layers", "1", "--hidden", "32", "--heads", "2",
            "--max-train-windows", "2000", "--window-events", "16"]
    assert main(args) == 0
    assert main(["evaluate", str(log), "--registry", str(tmp_path / "reg"), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "pr_auc" in out
    vocab = json.loads((registry.current(tmp_path / "reg") / "vocab.json").read_text())
    assert "E0" in vocab["types"] and "view" not in vocab["types"]


def test_a_current_link_pointing_outside_the_registry_is_refused(trained, tmp_path):
    import os

    reg = tmp_path / "reg"
    (reg / "versions").mkdir(parents=True)
    os.symlink(trained[0].artifact, reg / "current")
    with pytest.raises(registry.RegistryError, match="outside"):
        registry.current(reg)


@pytest.mark.parametrize("key,value", [("intermediate_size", 6_000_000), ("hidden_size", 0),
                                       ("num_hidden_layers", "2")])
def test_model_dimensions_past_the_limits_are_refused_before_allocating(trained, tmp_path, key, value):
    bad = tampered(trained, tmp_path, "config.json", lambda c: c.update({key: value}), checksummed=True)
    with pytest.raises(ArtifactError, match=key):
        load_artifact(bad)


def test_a_window_length_past_the_limit_is_refused(trained, tmp_path):
    bad = tampered(trained, tmp_path, "vocab.json", lambda v: v.update(max_events=100_000), checksummed=True)
    with pytest.raises(ArtifactError, match="window length"):
        load_artifact(bad)


def test_a_classifier_alerts_on_an_event_type_never_seen_in_training(trained, records):
    scorer = Scorer.load(trained[0].artifact, "cpu")
    user = records[0]["user_id"]
    mine = [r for r in records if r["user_id"] == user][:10]
    odd = [*mine, {**mine[-1], "ts": mine[-1]["ts"] + 1000, "type": "never-seen-before"}]
    ws = dataset.build_windows(dataset.batches_from_records(odd), scorer.artifact.vocab, scorer.artifact.window_config)
    s = scorer.score(encoded(ws))
    assert s[len(mine)] == 1.0 >= scorer.artifact.meta.threshold
    assert (s[: len(mine)] < 1.0).all()


# ---- a session that ends sooner than any training session did ----------------------------------------------
T0 = 1_700_000_000_000


def _sessions(lengths: list[int], label: int = 0, first: int = 0) -> list[Event]:
    """One user per length, each a session of that many events, sessions a day apart."""
    return [Event(f"s{first + i}", T0 + (first + i) * 86_400_000 + k * 1000, "view", label=label)
            for i, n in enumerate(lengths) for k in range(n)]


def _ended_windows(events: list[Event], vocab, window: WindowConfig) -> dataset.WindowSet:
    """Every window of ``events``, every session ended (the log's end-of-log marker)."""
    return dataset.build_windows(dataset.batches_from_events(sorted(events, key=lambda e: e.ts), window), vocab, window)


def _view_vocab(window: WindowConfig):
    return dataset.learn_vocabulary([EventBatch.from_events(_sessions([3]))], window, shape=False)


def test_enough_ended_training_sessions_set_the_fewest_events_a_normal_session_ended_with():
    window = WindowConfig(max_events=32)
    ws = _ended_windows(_sessions([5, 6, 7] * 300) + _sessions([2] * 40, label=1, first=900), _view_vocab(window), window)
    assert train.min_ended_events(ws, _view_vocab(window), 0.005) == (5, 900)  # attackers' short sessions do not count


def test_too_few_ended_training_sessions_leave_the_ended_too_soon_rule_off():
    window = WindowConfig(max_events=32)
    ws = _ended_windows(_sessions([5, 6, 7] * 100), _view_vocab(window), window)
    assert train.min_ended_events(ws, _view_vocab(window), 0.005) == (0, 300)  # 1/301 is no small share of 0.5 %


def test_an_ended_session_shorter_than_any_in_training_scores_as_unseen_for_both_model_kinds(trained, zero_label):
    import dataclasses

    from stream.model import UNSEEN_CLASSIFIER_SCORE, UNSEEN_SURPRISE

    for res, unseen in ((trained[0], UNSEEN_CLASSIFIER_SCORE), (zero_label[0], UNSEEN_SURPRISE)):
        scorer = Scorer.load(res.artifact, "cpu")
        art = scorer.artifact
        ws = _ended_windows(_sessions([2, 4]), art.vocab, art.window_config)
        ended = (ws.input_ids == END).any(1)
        before = scorer.score(encoded(ws), floor=-np.inf)
        art.meta = dataclasses.replace(art.meta, min_ended_events=3)
        after = scorer.score(encoded(ws), floor=-np.inf)
        short = ended & (ws.user == ws.users.index("s0"))
        assert short.sum() == 1 and after[short][0] == np.float32(unseen)
        assert np.array_equal(after[~short], before[~short])  # every other window keeps its own score


def test_a_window_past_the_type_ceiling_scores_as_unseen_for_both_model_kinds(trained, zero_label):
    import dataclasses

    from stream.encoding import type_counts
    from stream.model import UNSEEN_CLASSIFIER_SCORE, UNSEEN_SURPRISE

    for res, unseen in ((trained[0], UNSEEN_CLASSIFIER_SCORE), (zero_label[0], UNSEEN_SURPRISE)):
        scorer = Scorer.load(res.artifact, "cpu")
        art = scorer.artifact
        ws = _ended_windows(_sessions([2, 4]), art.vocab, art.window_config)
        before = scorer.score(encoded(ws), floor=-np.inf)
        views = type_counts(ws.input_ids, art.vocab)[:, art.vocab.types.index("view")]
        ceiling = [art.window_config.max_events] * (len(art.vocab.types) - 1)
        ceiling[art.vocab.types.index("view") - 1] = 3
        art.meta = dataclasses.replace(art.meta, type_ceiling=ceiling)
        after = scorer.score(encoded(ws), floor=-np.inf)
        past = views > 3
        assert past.sum() == 2 and (after[past] == np.float32(unseen)).all()  # s1's 4th view, and its end
        assert np.array_equal(after[~past], before[~past])  # every other window keeps its own score


def test_an_alert_on_a_session_that_ended_too_soon_says_so():
    from stream import explain

    ts, types, items = np.array([0, 1000], dtype=np.int64), np.array([0, 0]), np.zeros(2, dtype=np.uint32)
    s = explain.summarise(ts, types, items, ["view"], lambda t: True, closing=True, min_ended=13)
    assert "no training session ended with fewer than 13" in s.findings[0]
    quiet = explain.summarise(ts, types, items, ["view"], lambda t: True, closing=True, min_ended=2)
    assert "no training session" not in " ".join(quiet.findings)


def test_scores_carried_to_another_models_scale_keep_their_rank_among_the_reference():
    rng = np.random.default_rng(4)
    ref = rng.random(2000)
    own, target = ref, (ref ** 3 * 0.975).astype(np.float32)  # the same ranking, another scale, float32
    got = metrics.to_scale(np.array([0.5, 0.9]), own, target)
    assert got == pytest.approx([0.975 * 0.5 ** 3, 0.975 * 0.9 ** 3], rel=0.03) and got.dtype == np.float32
    # beyond every reference score of its own model: the top of the target's range, never past it
    assert metrics.to_scale(np.array([7.0]), own, target)[0] == target.max()


def test_a_classifiers_scores_never_pass_its_score_cap(trained, records):
    scorer = Scorer.load(trained[0].artifact, "cpu")
    art = scorer.artifact
    cap = train.score_cap(art.model)
    head = art.model.classifier
    logit = float(head.weight.detach().abs().sum() + head.bias.detach().sum())
    assert cap == pytest.approx(1 / (1 + np.exp(-logit)))
    ws = dataset.build_windows(dataset.batches_from_records(records[:3000]), art.vocab, art.window_config)
    assert scorer.score_windows(encoded(ws), 256).max() <= cap + 1e-6  # float32 scores, a float64 cap


def test_a_zero_label_model_has_no_score_cap(zero_label):
    assert train.score_cap(load_artifact(zero_label[0].artifact).model) is None


def test_train_warns_when_the_threshold_sits_at_the_classifiers_score_cap():
    # the 2026-12-07 demo model: threshold 0.992892 under a cap of 0.993249 (0.05 in logit)
    line = train.cap_line({"threshold": 0.992892, "score_cap": 0.993249})
    assert line.startswith("score cap: the threshold 0.992892 lies within 0.05 (in logit)")
    assert train.cap_line({"threshold": 0.976747, "score_cap": 0.993193}) is None  # HDFS supervised: 1.25
    assert train.cap_line({"threshold": 8.04, "score_cap": None}) is None  # zero-label
