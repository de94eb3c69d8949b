"""What training makes of a log: time order, session ends, small logs, its own cost, its progress."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stream import log_order, logs, progress
from stream.cli import main
from stream.encoding import END
from stream.events import Event
from stream.model import UNSEEN_SURPRISE, ModelSize
from stream.windows import WindowConfig
from training import dataset, defaults, train

T0 = 1_700_000_000_000
TINY = dict(size=ModelSize(layers=1, hidden=32, heads=2, intermediate=64), window=WindowConfig(max_events=16),
            pretrain_steps=20, finetune_epochs=1, max_train_windows=2000, batch_size=64, baselines=False)


def sessions(users: int, seed: int = 0, per_user: int = 5) -> list[Event]:
    """Short click sessions of ``users`` people, a few seconds to minutes apart, in time order."""
    rng = np.random.default_rng(seed)
    evs = []
    for u in range(users):
        t = T0 + int(rng.integers(0, 600_000))
        for _ in range(per_user):
            evs.append(Event(f"p{u}", t, "click", item_id=f"i{int(rng.integers(30))}"))
            t += int(rng.lognormal(np.log(20_000), 0.8))
    return sorted(evs, key=lambda e: e.ts)


def write(path, evs: list[Event]):
    path.write_text("".join(json.dumps(e.to_record()) + "\n" for e in evs))
    return path


def grouped(evs: list[Event]) -> list[Event]:
    return sorted(evs, key=lambda e: (e.user_id, e.ts))


def test_a_log_grouped_by_user_is_read_in_time_order_and_says_so():
    evs = sessions(20)
    got, order = dataset.read_events([dataset.EventBatch.from_events(grouped(evs))])
    assert [e.ts for e in got] == sorted(e.ts for e in evs)
    assert order.sorted and "sorted by time" in order.line()


def test_a_log_in_time_order_is_left_as_it_is():
    evs = sessions(20)
    got, order = dataset.read_events([dataset.EventBatch.from_events(evs)])
    assert got == evs and not order.sorted and "already in time order" in order.line()


def test_score_reads_a_grouped_log_in_time_order_with_its_rejects_first(tmp_path):
    evs = sessions(10)
    log = write(tmp_path / "g.jsonl", grouped(evs))
    with open(log, "a") as f:
        f.write('{"user_id": "x"}\n')  # no ts: refused, still handed over to be dead-lettered
    chunks, order = log_order.chunks_in_time_order(log)
    records = [r for c in chunks for r in c.records]
    assert order.sorted and order.events == len(evs)
    assert "ts" not in records[0]
    assert [r["ts"] for r in records[1:]] == sorted(e.ts for e in evs)


def test_sorted_chunks_say_which_file_record_each_came_from(tmp_path):
    log = write(tmp_path / "g.jsonl", grouped(sessions(6)))
    lines = log.read_text().splitlines()
    chunks, _ = log_order.chunks_in_time_order(log)
    for c in chunks:
        assert [json.loads(lines[i]) for i in c.rows] == c.records


def test_every_session_still_open_at_the_end_of_a_training_log_ends():
    evs = sessions(12)  # spans ~10 min: shorter than the session gap, so nothing ends by itself
    vocab = dataset.learn_vocabulary([dataset.EventBatch.from_events(evs)], WindowConfig())
    ws = dataset.build_windows(dataset.batches_from_events(evs, WindowConfig()), vocab, WindowConfig())
    ended = (ws.input_ids == END).any(1)
    assert len(np.unique(ws.user[ended])) == 12
    assert dataset.END_OF_LOG_USER not in [ws.users[u] for u in np.unique(ws.user)]
    assert len(ws) == len(evs) + 12  # one window per event, one per ended session, none of the marker's


def test_pretraining_steps_follow_the_size_of_the_log():
    cfg = train.TrainConfig()
    assert train.pretrain_steps_for(cfg, 500) == defaults.MIN_PRETRAIN_STEPS
    assert train.pretrain_steps_for(cfg, 3_000) == int(np.ceil(defaults.PRETRAIN_EPOCHS * 3_000 / cfg.batch_size))
    assert train.pretrain_steps_for(cfg, 10**6) == cfg.pretrain_steps


@pytest.fixture(scope="module")
def small_logs(tmp_path_factory):
    d = tmp_path_factory.mktemp("small")
    return write(d / "train.jsonl", sessions(30, seed=1)), d


def test_a_tiny_log_calibrates_on_every_user_each_scored_by_a_model_never_fine_tuned_on_them(small_logs):
    log, d = small_logs
    res = train.train(lambda: logs_batches(log), d / "runs", train.TrainConfig(**TINY), show=False)
    report = json.loads((res.report_dir / "report.json").read_text())["training"]["calibration"]
    assert report["held_out_users"] < 30 * train.SMALL_CALIBRATION * 2 and report["calibration_users"] == 30
    assert report["cross_fit_folds"] == defaults.CROSS_FIT_FOLDS and "never fine-tuned on them" in report["rule"]
    assert res.threshold > max(cal_maxima(res)) and len(cal_maxima(res)) == 30


def test_cross_fitting_pretrains_once_and_fine_tunes_every_fold_from_that_pretraining(small_logs, monkeypatch):
    # pretraining again per fold made Taobao's 2,215 events train for 629 s where YOOCHOOSE's 40,853 take 311 s
    log, d = small_logs
    pretrained, inits = [], []
    real_pretrain, real_finetune = train.pretrain, train.finetune

    def counting_pretrain(*a, **k):
        pretrained.append(real_pretrain(*a, **k))
        return pretrained[-1]

    def recording_finetune(init, *a, **k):
        inits.append(init)
        return real_finetune(init, *a, **k)

    monkeypatch.setattr(train, "pretrain", counting_pretrain)
    monkeypatch.setattr(train, "finetune", recording_finetune)
    res = train.train(lambda: logs_batches(log), d / "runs-once", train.TrainConfig(**TINY), show=False)
    report = json.loads((res.report_dir / "report.json").read_text())["training"]["calibration"]
    assert report["cross_fit_folds"] == defaults.CROSS_FIT_FOLDS
    assert len(pretrained) == 1
    assert len(inits) == 1 + defaults.CROSS_FIT_FOLDS and all(i is pretrained[0] for i in inits)


def test_a_tiny_cross_fitted_log_says_the_smallest_budget_its_users_support(small_logs):
    log, d = small_logs
    res = train.train(lambda: logs_batches(log), d / "runs-line", train.TrainConfig(**TINY), show=False)
    report = json.loads((res.report_dir / "report.json").read_text())["training"]["calibration"]
    assert not report["supported"] and report["smallest_supported_rate_mean"] == pytest.approx(1 / 31)
    assert report["smallest_supported_rate"] == pytest.approx(1 - 0.1 ** (1 / 30))  # 90 % confidence
    assert res.budget is not None and "cannot support 0.50%" in res.budget
    assert "support is 7.4% of new normal users" in res.budget and "3.2% on average" in res.budget
    assert (res.report_dir / "calibration.png").stat().st_size > 0


def test_without_cross_fitting_a_tiny_log_says_it_can_honour_no_budget_and_calibrates_conservatively(small_logs):
    log, d = small_logs
    res = train.train(lambda: logs_batches(log), d / "runs-off", train.TrainConfig(**TINY, cross_fit_folds=0), show=False)
    assert res.budget is not None and "cannot support 0.50%" in res.budget and "nor any budget" in res.budget
    report = json.loads((res.report_dir / "report.json").read_text())["training"]["calibration"]
    assert not report["supported"] and report["rule"] == "set above every real user of the log"
    assert report["smallest_supported_rate"] is None and report["cross_fit_folds"] == 0


def test_cross_fit_folds_are_blocks_of_real_training_users_by_first_event():
    n = 10
    users = [f"u{i}" for i in range(n)] + ["attacker", "dismissed"]
    user = np.repeat(np.arange(n + 2), 3).astype(np.int32)
    ts = np.r_[[T0 + 1000 * (n - u) + k for u in range(n) for k in range(3)], [T0] * 6]  # u9 arrived first
    label = np.r_[np.zeros(3 * n), [1, 1, 1], [0, 0, 0]].astype(np.int8)
    ws = dataset.WindowSet(input_ids=np.ones((len(user), 4), np.int32), label=label, ts=ts.astype(np.int64),
                           user=user, attack=np.zeros(len(user), np.int16),
                           seq_no=np.ones(len(user), np.int32), run_counts=np.zeros((len(user), 3), np.int32),
                           users=users, attack_names=[])
    sp = dataset.Split(train=np.arange(len(user)), val=np.zeros(0, np.int64), test=np.zeros(0, np.int64))
    folds = train.cross_fit_folds(ws, sp, 3, train_only=["dismissed"])
    held = [sorted({ws.users[u] for u in ws.user[f]}) for f in folds]
    assert sorted(u for h in held for u in h) == sorted(users[:n])  # the attacker and the dismissed user always train
    assert held == [["u6", "u7", "u8", "u9"], ["u3", "u4", "u5"], ["u0", "u1", "u2"]]
    assert train.cross_fit_folds(ws, sp, 0) == []


def windowset(users: list[str], user: list[int], ts: list[int], label: list[int], ids: list[list[int]]):
    n = len(user)
    return dataset.WindowSet(input_ids=np.asarray(ids, np.int32), label=np.asarray(label, np.int8),
                             attack=np.zeros(n, np.int16), user=np.asarray(user, np.int32),
                             ts=np.asarray(ts, np.int64), seq_no=np.ones(n, np.int32),
                             run_counts=np.zeros((n, 3), np.int32), users=users, attack_names=[])


def test_a_fold_model_never_trains_on_an_injected_copy_of_a_held_users_history():
    # u0 is held; "inj-takeover" replays u0's first window (same time, same tokens) before its attack
    ws = windowset(["u0", "u1", "inj-takeover", "inj-bot"], [0, 0, 1, 2, 2, 3],
                   [T0, T0 + 5, T0 + 9, T0, T0 + 7, T0 + 3], [0, 0, 0, 0, 1, 1],
                   [[5, 6], [5, 7], [8, 9], [5, 6], [9, 9], [6, 6]])
    sp = dataset.Split(train=np.arange(6), val=np.zeros(0, np.int64), test=np.zeros(0, np.int64))
    kept = train.fold_training(ws, sp, np.array([0, 1]))
    assert sorted({ws.users[u] for u in ws.user[kept]}) == ["inj-bot", "u1"]


def test_cross_fit_folds_hold_whole_histories_and_leave_users_after_the_first_confirmed_abuse_training():
    ws = windowset(["a", "b", "c", "late"], [0, 0, 1, 1, 2, 3], [T0, T0 + 99, T0 + 1, T0 + 98, T0 + 2, T0 + 50],
                   [0, 0, 0, 0, 0, 0], [[5, 6]] * 6)
    sp = dataset.Split(train=np.array([0, 2, 4, 5]), val=np.zeros(0, np.int64), test=np.zeros(0, np.int64))
    folds = train.cross_fit_folds(ws, sp, 3, trusted_until=T0 + 50)
    assert [sorted(f.tolist()) for f in folds] == [[0, 1], [2, 3], [4]]  # windows 1 and 3 lie outside training


def test_no_fold_of_a_real_tiny_log_trains_on_its_held_users_windows(small_logs, monkeypatch):
    log, d = small_logs
    seen = []
    real = train.fold_training

    def spy(ws, sp, held):
        kept = real(ws, sp, held)
        naive = np.setdiff1d(sp.train, held)
        key = train._window_keys
        seen.append((np.isin(key(ws, kept), key(ws, held)).any(), np.isin(key(ws, naive), key(ws, held)).any(),
                     np.intersect1d(ws.user[kept], ws.user[held]).size))
        return kept

    monkeypatch.setattr(train, "fold_training", spy)
    train.train(lambda: logs_batches(log), d / "runs-spy", train.TrainConfig(**TINY), show=False)
    assert len(seen) == defaults.CROSS_FIT_FOLDS
    assert not any(leak or shared for leak, _, shared in seen)
    assert any(naive for _, naive, _ in seen)  # the injected takeovers did copy held users' windows


def test_a_continued_classifier_is_not_cross_fitted(small_logs):
    log, d = small_logs
    first = train.train(lambda: logs_batches(log), d / "runs-a", train.TrainConfig(**TINY), show=False)
    res = train.train(lambda: logs_batches(log), d / "runs-b", train.TrainConfig(**TINY, init_from=first.artifact),
                      show=False)
    cal = json.loads((res.report_dir / "report.json").read_text())["training"]["calibration"]
    assert cal["cross_fit_folds"] == 0 and cal["smallest_supported_rate"] is None


def test_cross_fit_folds_must_be_off_or_at_least_two():
    with pytest.raises(ValueError, match="cross_fit_folds"):
        train.TrainConfig(cross_fit_folds=1)


def test_a_small_zero_label_log_alerts_only_on_event_types_training_never_saw(small_logs):
    log, d = small_logs
    res = train.train(lambda: logs_batches(log), d / "zl", train.TrainConfig(**TINY, zero_label=True), show=False)
    assert res.kind == "mlm" and res.threshold == UNSEEN_SURPRISE
    assert "set to alert on unseen event types only" in (res.report_dir / "report.md").read_text()
    assert (res.report_dir / "calibration.png").exists()


def test_train_prints_how_it_read_the_log_and_the_budget_line(small_logs, tmp_path, capsys):
    log, _ = small_logs
    grouped_log = write(tmp_path / "grouped.jsonl", grouped(sessions(30, seed=1)))
    args = ["train", str(grouped_log), "--no-registry", "--out", str(tmp_path / "runs"), "-q", "--pretrain-steps", "10",
            "--epochs", "1", "--layers", "1", "--hidden", "32", "--heads", "2", "--window-events", "16"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "sorted by time before windowing" in out and "alert budget:" in out


def test_train_cross_fit_folds_0_turns_cross_fitting_off(small_logs, tmp_path, capsys):
    log, _ = small_logs
    args = ["train", str(log), "--no-registry", "--out", str(tmp_path / "runs"), "-q", "--pretrain-steps", "10",
            "--epochs", "1", "--layers", "1", "--hidden", "32", "--heads", "2", "--window-events", "16",
            "--cross-fit-folds", "0"]
    assert main(args) == 0
    assert "nor any budget" in capsys.readouterr().out


def test_progress_goes_to_plain_lines_when_stderr_is_not_a_terminal(capsys, monkeypatch):
    monkeypatch.setattr(progress, "interactive", lambda: False)
    with progress.bar(True) as bar:
        task = bar.add_task("pretrain", total=100, rate="")
        for _ in range(100):
            bar.update(task, advance=1, rate="loss 1.0")
    lines = capsys.readouterr().err.strip().splitlines()
    assert 5 <= len(lines) <= 12 and lines[-1].startswith("pretrain: 100/100 loss 1.0")


def logs_batches(path):
    return dataset.batches_from_log(path, logs.LogSpec())


def test_a_calibration_set_short_of_the_budget_but_not_tiny_is_cut_at_its_highest_user(tmp_path):
    log = write(tmp_path / "mid.jsonl", sessions(100, seed=2))  # ~20 calibration users; a 2 % budget needs 50
    cfg = train.TrainConfig(**{**TINY, "user_alert_rate": 0.02})
    res = train.train(lambda: logs_batches(log), tmp_path / "runs", cfg, show=False)
    cal = json.loads((res.report_dir / "report.json").read_text())["training"]["calibration"]
    assert 50 * train.SMALL_CALIBRATION <= cal["calibration_users"] < 50
    assert cal["rule"] == "the highest calibration user" and res.budget is not None
    assert res.threshold > max(cal_maxima(res))


def cal_maxima(res) -> list[float]:
    return json.loads((res.report_dir / "report.json").read_text())["training"]["calibration_maxima"]


def test_a_recorded_stream_with_a_few_late_events_is_read_as_it_is(tmp_path):
    evs = sessions(30)
    late = Event("p0", evs[-1].ts - 86_400_000, "click")  # a day behind: the live detector dead-letters it
    log = write(tmp_path / "stream.jsonl", [*evs, late])
    chunks, order = log_order.chunks_in_time_order(log)
    assert [r["ts"] for c in chunks for r in c.records][-1] == late.ts and not order.sorted
    assert "arrived late" in order.line()


def window_set(first_ts: list[int], attackers: set[int]) -> dataset.WindowSet:
    """Three windows per user, starting at ``first_ts[u]``; ``attackers``' windows positive."""
    u = np.repeat(np.arange(len(first_ts)), 3)
    ts = np.asarray(first_ts, dtype=np.int64)[u] + np.tile([0, 1000, 2000], len(first_ts))
    label = np.isin(u, sorted(attackers)).astype(np.int8)
    return dataset.WindowSet(input_ids=np.zeros((len(u), 4), dtype=np.int32), label=label,
                             attack=label.astype(np.int16), user=u.astype(np.int32), ts=ts,
                             seq_no=np.tile([1, 2, 3], len(first_ts)).astype(np.int32),
                             run_counts=np.zeros((len(u), 3), np.int32),
                             users=[f"u{i}" for i in range(len(first_ts))], attack_names=["", "injected:loop"])


def test_calibration_users_of_a_platform_log_are_its_latest_real_users():
    rng = np.random.default_rng(4)
    first = rng.permutation(1000) * 60_000 + T0
    attackers = set(range(900, 1000))
    ws = window_set(first.tolist(), attackers)
    held = set(np.unique(ws.user[dataset.split_platform(ws).val]).tolist())
    real = [u for u in range(1000) if u not in attackers]
    latest = sorted(real, key=lambda u: first[u])[-180:]  # 20 % of the 900 real users
    assert held - attackers == set(latest)
    assert 0 < len(held & attackers) < len(attackers)  # attackers are still split, by hash
    assert not set(np.unique(ws.user[dataset.split_platform(ws).train]).tolist()) & held


def test_the_threshold_lets_a_new_normal_user_through_at_most_at_the_budget():
    from training import metrics

    scores = np.arange(1, 336, dtype=np.float32)  # 335 calibration users: j = floor(0.005 * 336) = 1
    assert metrics.calibrate_threshold(scores, 0.005) > scores.max()
    scores = np.arange(1, 2101, dtype=np.float32)  # 2,100: j = 10, so 9 of them reach it
    assert (scores >= metrics.calibrate_threshold(scores, 0.005)).sum() == 9
    # over many draws a new score passes at most at the budget: 350 users at 1 % give 3 / 351 (a plain
    # quantile lets 4 / 351 = 1.14 % through)
    rng = np.random.default_rng(0)
    passed = [rng.normal() >= metrics.calibrate_threshold(rng.normal(size=350), 0.01) for _ in range(20_000)]
    assert np.mean(passed) <= 0.01


def test_a_few_verdicts_keep_the_platform_split(tmp_path, monkeypatch):
    evs = sessions(100, seed=5)
    for e in evs:  # one confirmed abuser and one dismissed user among 100, as `feedback` labels them
        e.label = 1 if e.user_id == "p0" else 0
    calls = []
    monkeypatch.setattr(dataset, "split", lambda *a, **k: calls.append("labelled") or dataset.Split(
        *(np.empty(0, dtype=np.int64),) * 3))
    train.train(lambda: [dataset.EventBatch.from_events(evs)], tmp_path / "runs", train.TrainConfig(**TINY),
                show=False, verdicts={"p0": 1, "p1": 0})
    assert calls == []  # the labelled split would train only on traffic before the median timestamp


def test_dismissed_alerts_train_and_never_calibrate():
    first = [T0 + i * 60_000 for i in range(100)]  # u99 is the latest user
    ws = window_set(first, set())
    plain = dataset.split_platform(ws)
    assert 99 in set(ws.user[plain.val].tolist())
    sp = dataset.split_platform(ws, train_only=["u99", "u98"])
    held = set(ws.user[sp.val].tolist())
    assert {98, 99}.isdisjoint(held) and {98, 99} <= set(ws.user[sp.train].tolist())
    assert len(held) == 20  # still a fifth of the real users: the next latest take their place


def test_after_confirmed_abuse_the_calibration_users_are_the_latest_who_came_before_it():
    first = [T0 + i * 60_000 for i in range(1000)]
    ws = window_set(first, set())
    cut = T0 + 700 * 60_000  # the earliest confirmed attacker's first event: users 700.. arrived after it
    held = set(ws.user[dataset.split_platform(ws, trusted_until=cut, min_cal=199).val].tolist())
    assert held == set(range(500, 700))  # a fifth of the 1000 real users, the latest before the cut
    assert not held & set(ws.user[dataset.split_platform(ws, trusted_until=cut, min_cal=199).train].tolist())


def test_too_few_users_before_confirmed_abuse_keep_the_latest_users_calibrating():
    ws = window_set([T0 + i * 60_000 for i in range(1000)], set())
    held = set(ws.user[dataset.split_platform(ws, trusted_until=T0 + 150 * 60_000, min_cal=199).val].tolist())
    assert held == set(range(800, 1000))  # 150 users before it cannot support the budget: as without it


def test_the_first_confirmed_abuse_is_the_earliest_event_of_a_user_labelled_abuse():
    ws = window_set([T0, T0 + 60_000, T0 + 120_000], set())
    assert dataset.first_confirmed_abuse(ws, {"u2": 1, "u1": 0}) == T0 + 120_000
    assert dataset.first_confirmed_abuse(ws, {"u1": 0, "ghost": 1}) is None


def attack_log() -> list[Event]:
    """Two normal users and an attacker whose six-event run starts after one normal event."""
    evs = [e for e in sessions(2)]
    t = T0 + 100_000
    evs.append(Event("bot", t, "click", item_id="i1", label=0))
    evs += [Event("bot", t + 2_000 * (k + 1), "click", item_id="i1", label=1, attack="loop") for k in range(6)]
    for e in evs:
        e.label = 0 if e.label is None else e.label
    return sorted(evs, key=lambda e: e.ts)


def test_every_window_counts_the_attack_events_it_holds():
    evs = attack_log()
    vocab = dataset.learn_vocabulary([dataset.EventBatch.from_events(evs)], WindowConfig())
    ws = dataset.build_windows(dataset.batches_from_events(evs, WindowConfig()), vocab, WindowConfig())
    bot = ws.users.index("bot")
    open_ = (ws.user == bot) & ~(ws.input_ids == END).any(1)
    assert ws.evidence[open_][np.argsort(ws.ts[open_])].tolist() == [0, 1, 2, 3, 4, 5, 6]
    assert (ws.evidence[ws.user != bot] == 0).all()


def test_an_attack_window_too_early_to_tell_counts_as_part_of_a_positive():
    evs = attack_log()
    vocab = dataset.learn_vocabulary([dataset.EventBatch.from_events(evs)], WindowConfig())
    ws = dataset.build_windows(dataset.batches_from_events(evs, WindowConfig()), vocab, WindowConfig())
    y = dataset.fine_tuning_targets(ws, min_events=4)
    bot = (ws.user == ws.users.index("bot"))
    ended = (ws.input_ids == END).any(1)
    by_evidence = dict(zip(ws.evidence[bot & ~ended].tolist(), y[bot & ~ended].tolist(), strict=True))
    assert by_evidence == {0: 0.0, 1: 0.25, 2: 0.5, 3: 0.75, 4: 1.0, 5: 1.0, 6: 1.0}
    assert y[bot & ended].tolist() == [1.0]  # the whole session is in an ended window
    assert (y[~bot] == 0).all()


def test_validation_ranks_only_attack_windows_that_hold_evidence():
    ws = windowset(["u0", "bot"], [0, 1, 1, 1], [T0, T0, T0 + 1, T0 + 2], [0, 1, 1, 1],
                   [[5, 6, 0], [5, 6, 0], [5, 6, 7], [5, 6, END]])
    ws.evidence = np.array([0, 2, 4, 2], np.int16)
    kept = dataset.with_evidence(ws, min_events=4)
    assert kept.ts.tolist() == [T0, T0 + 1, T0 + 2] and kept.label.tolist() == [0, 1, 1]


def test_the_classifier_and_its_folds_fine_tune_with_partial_credit_and_validate_on_evidence(small_logs, monkeypatch):
    log, d = small_logs
    seen = []
    real_finetune = train.finetune

    def recording_finetune(init, train_ws, val_ws, *a, **k):
        seen.append((train_ws, val_ws))
        return real_finetune(init, train_ws, val_ws, *a, **k)

    monkeypatch.setattr(train, "finetune", recording_finetune)
    train.train(lambda: logs_batches(log), d / "runs-evidence", train.TrainConfig(**TINY), show=False)
    assert len(seen) == 1 + defaults.CROSS_FIT_FOLDS
    for train_ws, val_ws in seen:
        early = dataset.too_early_to_tell(train_ws)
        assert early.any() and (dataset.fine_tuning_targets(train_ws)[early] < 1).all()
        assert (val_ws.label == 1).any() and not dataset.too_early_to_tell(val_ws).any()
