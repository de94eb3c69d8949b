"""Train a seqsentry model from a recorded log: pretrain -> fine-tune -> calibrate -> report -> artifact.

1. Self-supervised pretraining: masked-event modelling (``BertForMaskedLM``) on the
   training windows - labels not needed.
2. With labels: ``BertForSequenceClassification`` initialised from the pretrained
   encoder, fine-tuned with AdamW + linear warm-up, positive-class weighting, and early
   stopping on validation PR-AUC.
   Without labels (zero-label mode): the pretrained model itself is the detector; a
   window's score is how surprising its newest event is (stream.model.next_surprise).
3. The threshold is calibrated on held-out normal *users* to an alert budget: the share of
   normal users alerted (a user is alerted when any window reaches it).
4. Baselines (IsolationForest, Markov chain) are scored on the same split; a report with
   plots is written; the artifact is saved and published to the registry.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from transformers import BertForMaskedLM, BertForSequenceClassification

from stream import progress, registry
from stream.artifact import (
    MAX_SUSTAIN,
    Artifact,
    Meta,
    data_fingerprint,
    load_artifact,
    save_artifact,
    signing_key,
)
from stream.encoding import END, MASK, N_SPECIAL, RUN_COUNTS, Vocabulary, ended_window_events, type_counts
from stream.events import EventBatch
from stream.model import UNSEEN_SURPRISE, ModelSize, Scorer, bert_config, pick_device
from stream.windows import WindowConfig
from training import attacks, dataset, defaults, metrics
from training import verdicts as verdict_report
from training.baselines import IsolationForestBaseline, MarkovBaseline

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Everything that shapes a training run (stored in the report for reproducibility)."""

    size: ModelSize = field(default_factory=ModelSize)
    window: WindowConfig = field(default_factory=WindowConfig)
    pretrain_steps: int = defaults.PRETRAIN_STEPS
    finetune_epochs: int = defaults.FINETUNE_EPOCHS
    patience: int = 2
    batch_size: int = defaults.BATCH_SIZE
    lr: float = defaults.LR
    warmup: float = 0.1
    weight_decay: float = 0.01
    mask_prob: float = 0.15
    user_alert_rate: float = defaults.USER_ALERT_RATE  # over the calibration log, and per day
    # a classifier alerts once this many consecutive events' windows reach the threshold
    # (Scorer.score); zero-label models score single events and always use 1
    sustain: int = defaults.SUSTAIN
    max_train_windows: int = defaults.MAX_TRAIN_WINDOWS
    seed: int = 0
    device: str = "auto"
    zero_label: bool = False  # force zero-label mode even when labels exist
    baselines: bool = True
    # a classifier artifact to continue from: its vocabulary, window and weights, no pretraining
    # (retraining on verdicts from scratch forgot attackers the current model caught: issue 22)
    init_from: Path | None = None
    # a log with too few calibration users for the budget (SMALL_CALIBRATION) calibrates on every
    # real user instead, each scored by a model trained in this many folds without them (0: off)
    cross_fit_folds: int = defaults.CROSS_FIT_FOLDS

    def __post_init__(self) -> None:
        # refused here, before minutes of training, rather than by the detector loading the result
        if not 1 <= self.sustain <= MAX_SUSTAIN:
            raise ValueError(f"sustain must be in [1, {MAX_SUSTAIN}], got {self.sustain}")
        if not 0.0 < self.user_alert_rate < 1.0:
            raise ValueError(f"user_alert_rate must be in (0, 1), got {self.user_alert_rate}")
        if self.cross_fit_folds < 0 or self.cross_fit_folds == 1:
            raise ValueError(f"cross_fit_folds must be 0 (off) or at least 2, got {self.cross_fit_folds}")


def _seed(seed: int) -> np.random.Generator:
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def _schedule(opt: torch.optim.Optimizer, total: int, warmup: float) -> torch.optim.lr_scheduler.LambdaLR:
    w = max(1, int(total * warmup))
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / w, max(0.0, (total - s) / max(1, total - w))))


def _step(loss: torch.Tensor, model: torch.nn.Module, opt: torch.optim.Optimizer,
          sched: torch.optim.lr_scheduler.LambdaLR) -> None:
    """One optimisation step with gradient clipping (shared by pretraining and fine-tuning)."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sched.step()


def _tensors(ids: np.ndarray, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    t = torch.from_numpy(ids.astype(np.int64)).to(device)
    return t, (t != 0).long()


def pretrain(train: dataset.WindowSet, vocab: Vocabulary, cfg: TrainConfig, device: str, show: bool) -> BertForMaskedLM:
    """Masked-event modelling on (unlabelled) training windows."""
    rng = _seed(cfg.seed)
    model = BertForMaskedLM(bert_config(vocab, cfg.size)).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = _schedule(opt, cfg.pretrain_steps, cfg.warmup)
    with progress.bar(show) as bar:
        task = bar.add_task("pretrain (masked events)", total=cfg.pretrain_steps, rate="")
        for _ in range(cfg.pretrain_steps):
            idx = rng.integers(0, len(train), cfg.batch_size)
            ids, mask = _tensors(train.input_ids[idx], device)
            events = (ids >= N_SPECIAL) | (ids == END)
            pick = events & (torch.rand(ids.shape, device=device) < cfg.mask_prob)
            # the newest position is always masked: next-event prediction is what zero-label scoring asks
            pick[torch.arange(len(ids), device=device), mask.sum(1) - 1] = True
            labels = torch.where(pick, ids, torch.full_like(ids, -100))
            masked = torch.where(pick, torch.full_like(ids, MASK), ids)
            loss = model(input_ids=masked, attention_mask=mask, labels=labels).loss
            _step(loss, model, opt, sched)
            bar.update(task, advance=1, rate=f"loss {loss.item():.3f}")
    return model.eval()


def _rules(kind: str, sustain: int = 1, min_ended: int = 0, run_ceiling: list[int] | None = None,
           type_ceiling: list[int] | None = None) -> Meta:
    """The scoring rules of the artifact being trained (its kind, ``sustain``, ``min_ended_events``,
    ``run_ceiling``, ``type_ceiling``), for scoring before the artifact exists."""
    return Meta("-", kind, 0.0, {}, sustain=sustain, min_ended_events=min_ended, run_ceiling=list(run_ceiling or []),
                type_ceiling=list(type_ceiling or []))


def _score(model: torch.nn.Module, rules: Meta, ws: dataset.WindowSet, vocab: Vocabulary, device: str) -> np.ndarray:
    """Scores as the detector computes them under ``rules`` (:func:`_rules`), exact for every window."""
    art = Artifact(Path("."), rules, vocab, model.eval())
    return Scorer(art, device).score(ws.encoded(), floor=-np.inf)


def finetune(init: BertForMaskedLM | BertForSequenceClassification, train: dataset.WindowSet, val: dataset.WindowSet,
             vocab: Vocabulary, cfg: TrainConfig, device: str, show: bool) -> tuple[BertForSequenceClassification, float]:
    """Classifier from the pretrained encoder (``init`` a masked-event model) or continued from a
    classifier (``init`` one, left untouched); early stopping on validation PR-AUC. A continued
    classifier is kept as it was unless an epoch beats it on validation."""
    rng = _seed(cfg.seed + 1)
    y_val = val.label.astype(np.int64)
    best, best_state, bad = -1.0, None, 0
    if isinstance(init, BertForSequenceClassification):
        model = copy.deepcopy(init).to(device)
        best = metrics.average_precision(y_val, _score(model, _rules("classifier"), val, vocab, device))
        best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        log.info("continued classifier: validation PR-AUC %.4f before fine-tuning", best)
    else:
        model = BertForSequenceClassification(bert_config(vocab, cfg.size, num_labels=1)).to(device)
        model.bert.load_state_dict(init.bert.state_dict(), strict=False)  # pooler is new; the rest is pretrained
    pos = max(int((train.label == 1).sum()), 1)
    neg = max(int((train.label == 0).sum()), 1)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(min(neg / pos, 50.0), device=device))
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    targets = dataset.fine_tuning_targets(train)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = _schedule(opt, steps_per_epoch * cfg.finetune_epochs, cfg.warmup)
    with progress.bar(show) as bar:
        task = bar.add_task("fine-tune (classifier)", total=steps_per_epoch * cfg.finetune_epochs, rate="")
        for epoch in range(cfg.finetune_epochs):
            model.train()
            for idx in np.array_split(rng.permutation(len(train)), steps_per_epoch):
                ids, mask = _tensors(train.input_ids[idx], device)
                y = torch.from_numpy(targets[idx]).to(device)
                loss = loss_fn(model(input_ids=ids, attention_mask=mask).logits[:, 0], y)
                _step(loss, model, opt, sched)
                bar.update(task, advance=1, rate=f"epoch {epoch + 1} loss {loss.item():.3f} best val AP {max(best, 0):.3f}")
            ap = metrics.average_precision(y_val, _score(model, _rules("classifier"), val, vocab, device))
            log.info("epoch %d: validation PR-AUC %.4f", epoch + 1, ap)
            if ap > best:
                best, bad = ap, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                bad += 1
                if bad >= cfg.patience:
                    break
    if best_state is not None:
        model.load_state_dict(best_state)
    return model.eval(), best


def _cap(ws: dataset.WindowSet, n: int, rng: np.random.Generator) -> dataset.WindowSet:
    """At most n windows: every positive (up to n/2, more when the rest are fewer) plus a random sample of the rest."""
    if len(ws) <= n:
        return ws
    pos, neg = np.flatnonzero(ws.label == 1), np.flatnonzero(ws.label != 1)
    n_pos = min(len(pos), max(n // 2, n - len(neg)))  # a small log's injected attackers may outnumber it
    pos = rng.choice(pos, n_pos, replace=False)
    rest = rng.choice(neg, min(len(neg), n - n_pos), replace=False)
    return ws.subset(np.sort(np.r_[pos, rest]))


def _fit(train_ws: dataset.WindowSet, val_ws: dataset.WindowSet, vocab: Vocabulary, cfg: TrainConfig,
         device: str, show: bool, start: Artifact | None) -> tuple[torch.nn.Module, BertForMaskedLM | None]:
    """The classifier for ``train_ws`` (a capped sample), pretrained then fine-tuned, and the
    pretrained masked-event model it started from (the cross-fitted folds fine-tune it too); or
    ``start``'s classifier continued, and None."""
    if start is not None:
        return finetune(start.model, train_ws, val_ws, vocab, cfg, device, show)[0], None
    steps = pretrain_steps_for(cfg, len(train_ws))
    mlm = pretrain(train_ws, vocab, dataclasses.replace(cfg, pretrain_steps=steps), device, show)
    return finetune(mlm, train_ws, val_ws, vocab, cfg, device, show)[0], mlm


def cross_fit_folds(ws: dataset.WindowSet, sp: dataset.Split, folds: int, train_only: Iterable[str] = (),
                    trusted_until: int | None = None) -> list[np.ndarray]:
    """The training split's real users in ``folds`` blocks by first event (a block is the users of
    one stretch of the log), as indices into ``ws`` of every window of theirs (whole histories, as
    calibration users are scored); [] when fewer than two users or ``folds`` is 0. Injected
    attackers and ``train_only`` users (dismissed alerts, a sample biased to the top) always train,
    and so do users who arrive at or after ``trusted_until`` (the first confirmed abuse: they may
    include attackers nobody has judged, whom calibration must not see - dataset.split_platform)."""
    train_idx = np.asarray(sp.train)
    attackers = np.unique(ws.user[ws.label == 1])
    forced_names = set(train_only)
    forced = [i for i, u in enumerate(ws.users) if u in forced_names]
    users = np.setdiff1d(np.unique(ws.user[train_idx]), np.r_[attackers, forced].astype(ws.user.dtype))
    first = dataset.first_event_ts(ws)
    if trusted_until is not None:
        users = users[first[users] < trusted_until]
    if folds == 0 or len(users) < 2:
        return []
    users = users[np.argsort(first[users], kind="stable")]
    blocks = np.array_split(users, min(folds, len(users)))
    return [np.flatnonzero(np.isin(ws.user, b)) for b in blocks]


def _window_keys(ws: dataset.WindowSet, idx: np.ndarray) -> np.ndarray:
    """One hashable key per window (its event time and tokens), to find copies across users."""
    rows = np.ascontiguousarray(np.c_[ws.ts[idx].astype(np.int64), ws.input_ids[idx].astype(np.int64)])
    return rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).ravel()


def fold_training(ws: dataset.WindowSet, sp: dataset.Split, held: np.ndarray) -> np.ndarray:
    """The training windows a fold model may learn from: the training split without the held
    users' windows, and without any injected user with a window identical to one of theirs (a
    takeover replays its victim's real events, labelled normal, under a fresh id, and a replay
    copies a real session: trained on, they would show the fold model the very windows it is
    meant not to have seen)."""
    train_idx = np.setdiff1d(sp.train, held)
    copied = np.isin(_window_keys(ws, train_idx), _window_keys(ws, held))
    copiers = np.intersect1d(np.unique(ws.user[train_idx[copied]]), np.unique(ws.user[ws.label == 1]))
    return train_idx[~np.isin(ws.user[train_idx], copiers)]


def _cross_fit(ws: dataset.WindowSet, sp: dataset.Split, folds: list[np.ndarray], vocab: Vocabulary,
               cfg: TrainConfig, device: str, rules: Meta, show: bool,
               verdicts: dict[str, int] | None, served: torch.nn.Module, mlm: BertForMaskedLM) -> np.ndarray:
    """Out-of-fold scores, aligned with ``np.concatenate(folds)``, on the ``served`` model's scale:
    each fold's windows scored by a classifier fine-tuned the way the real one is (early stopping
    on the same validation users) on :func:`fold_training`'s windows, from the served model's own
    masked-event pretraining ``mlm`` - which sees no labels, and which every fold pretraining
    again made a small log's training cost six times the served model's (Taobao's 2,215 events:
    629 s in the benchmark, where YOOCHOOSE's 40,853 take 311 s) - then carried over by rank
    (``metrics.to_scale``) through the windows neither model trained on (validation and test
    users). Raw fold scores are not on the served model's scale: on a 43-user log the folds' highest
    normal user scored 0.991, above every window the served model scores (0.975), and nothing alerted."""
    rng = np.random.default_rng(cfg.seed + 7)
    val_ws = dataset.with_evidence(ws.subset(sp.val))
    ref_ws = ws.subset(np.union1d(sp.val, sp.test))  # one set on a platform log
    served_ref = _score(served, rules, ref_ws, vocab, device)
    parts = []
    for k, held in enumerate(folds):
        with progress.phase(show, f"cross-fitting the threshold: model {k + 1} of {len(folds)} without "
                                  f"{len(np.unique(ws.user[held])):,} of the log's users ..."):
            tr = ws.subset(fold_training(ws, sp, held))
            sample = _cap(tr, cfg.max_train_windows, rng)
            if verdicts:
                sample = verdict_report.with_hard_negatives(sample, tr, verdicts)
            model = finetune(mlm, sample, val_ws, vocab, cfg, device, False)[0]
            own = _score(model, rules, ws.subset(held), vocab, device)
            parts.append(metrics.to_scale(own, _score(model, rules, ref_ws, vocab, device), served_ref))
    return np.concatenate(parts)


def _evaluate(model: torch.nn.Module, rules: Meta, vocab: Vocabulary, device: str, cfg: TrainConfig,
              rng: np.random.Generator, train_ws: dataset.WindowSet, cal_ws: dataset.WindowSet,
              test_ws: dataset.WindowSet, threshold: float) -> tuple[dict[str, np.ndarray], dict]:
    """The model and the baselines on the test users, each at its own user-level threshold."""
    scores = {"transformer": _score(model, rules, test_ws, vocab, device)}
    report = {"transformer": metrics.evaluate(scores["transformer"], test_ws, threshold)}
    if cfg.baselines:
        normal_train = train_ws.subset(train_ws.label == 0)
        for name, base in (("isolation_forest", IsolationForestBaseline(vocab, cfg.seed)),
                           ("markov", MarkovBaseline(vocab))):
            base.fit(normal_train if name == "markov" else _cap(train_ws, cfg.max_train_windows, rng))
            thr, _ = metrics.calibrate_user_threshold(base.score(cal_ws), cal_ws.user, cal_ws.ts, cfg.user_alert_rate)
            scores[name] = base.score(test_ws)
            report[name] = metrics.evaluate(scores[name], test_ws, thr)
    report["transformer"]["calibration"] = {
        "user_alert_rate": cfg.user_alert_rate,
        "test_normal_user_alert_rate": report["transformer"]["users"]["normal_user_alert_rate"]}
    return scores, report


@dataclass
class TrainResult:
    artifact: Path
    version: str
    kind: str
    threshold: float
    report: dict
    report_dir: Path
    seconds: float
    order: str = ""  # how the log was read (time order, sorted)
    budget: str | None = None  # the alert-budget warning, when the calibration users cannot support it
    verdicts: dict | None = None  # confirmed attackers / dismissed users of the labels, and how many it alerts


def pretrain_steps_for(cfg: TrainConfig, windows: int) -> int:
    """Pretraining steps for ``windows`` training windows: about PRETRAIN_EPOCHS passes over
    them, at most ``cfg.pretrain_steps`` - so a 2,500-event log trains in seconds, not minutes."""
    return int(min(cfg.pretrain_steps, max(defaults.MIN_PRETRAIN_STEPS,
                                           math.ceil(defaults.PRETRAIN_EPOCHS * windows / cfg.batch_size))))


#: Below this share of the users a budget needs, the highest calibration user is itself too
#: uncertain a line (one of a few dozen people), and the threshold is set conservatively.
SMALL_CALIBRATION = 0.25
LABELLED_LOG_SHARE = 0.5  # users with a label past which a log is a labelled data set, not verdicts


#: The ended-too-soon rule (Scorer.ended_too_soon) is on only when a new normal session ends
#: sooner than every training session with probability 1 / (ended + 1) at most this share of the
#: budget: at 0.5 %, 799 ended training sessions.
ENDED_RULE_SHARE = 0.25


def min_ended_events(train_ws: dataset.WindowSet, vocab: Vocabulary, user_alert_rate: float) -> tuple[int, int]:
    """``meta.min_ended_events`` and the ended normal training sessions it comes from.

    The fewest events any normal training user's ended-session window held. Training
    sessions and a new normal one are exchangeable, so the new one ends with fewer events
    than all n of them with probability at most 1 / (n + 1) - the rule's own false-alarm
    rate, which must be a small share of the budget (and calibration, which runs the rule,
    sees what it adds). 0 (off) with too few ended sessions.
    """
    events = ended_window_events(train_ws.input_ids, train_ws.attention_mask, vocab)[train_ws.label == 0]
    events = events[events >= 0]
    n = len(events)
    if not n or 1 / (n + 1) > ENDED_RULE_SHARE * user_alert_rate:
        return 0, n
    return int(events.min()), n


#: The run-count ceilings (Scorer.beyond_ceiling) together may alert at most this share of the
#: budget of new normal users, split evenly over the counts: at 0.5 %, each is the j-th highest
#: training user with j / (users + 1) <= 0.042 %, so on from 2,399 normal training users.
RUN_RULE_SHARE = 0.25


def run_ceiling(ws: dataset.WindowSet, user_alert_rate: float,
                users: np.ndarray | None = None) -> tuple[list[int], int, int]:
    """``meta.run_ceiling``, the normal training users it comes from and its rank j among them.

    ``users``: the training users (indices into ``ws.users``; None: every user of ``ws``), each
    counted over all of its windows in ``ws`` - a new user is judged on its whole history, while a
    labelled log's training split holds only its users' early windows.

    Per count of ``RUN_COUNTS``, the j-th highest of the normal training users' own highest
    counts. A new normal user and the n training users are exchangeable, so the new one's
    highest count passes the j-th highest of theirs with probability at most j / (n + 1), and
    j is the largest with j / (n + 1) at most RUN_RULE_SHARE * budget / len(RUN_COUNTS): the
    counts together alert at most RUN_RULE_SHARE of the budget (calibration, which runs the
    rule on later users, sees what they add). Users with any attack window (injected, labelled)
    are not normal users. [] (off) when the users are too few for j >= 1.
    """
    rows, normal_users, inv = _normal_users(ws, users)
    n = len(normal_users)
    j = math.floor(RUN_RULE_SHARE * user_alert_rate / len(RUN_COUNTS) * (n + 1))
    if j < 1:
        return [], n, 0
    most = np.zeros((n, len(RUN_COUNTS)), dtype=np.int64)
    np.maximum.at(most, inv, ws.run_counts[rows])
    return [int(c) for c in -np.sort(-most, axis=0)[j - 1]], n, j


#: The type ceiling (Scorer.beyond_type_ceiling) is on when its estimated share of new normal
#: users alerted is at most this share of the budget: at 0.5 %, (users holding a type's highest
#: count alone + 1) / (users + 1) <= 0.125 % - from 799 users when no one holds one alone.
TYPE_RULE_SHARE = 0.25
_TYPE_COUNT_CHUNK = 16_384  # windows counted at a time: [chunk, types] int32, 34 MB at 512 types


def _normal_users(ws: dataset.WindowSet, users: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Windows of normal users (no attack window; among ``users`` if given), those users and
    each window's index among them."""
    attackers = np.unique(ws.user[ws.label != 0])
    normal = ~np.isin(ws.user, attackers)
    if users is not None:
        normal &= np.isin(ws.user, users)
    normal_users, inv = np.unique(ws.user[normal], return_inverse=True)
    return np.flatnonzero(normal), normal_users, inv


def type_ceiling(ws: dataset.WindowSet, vocab: Vocabulary, user_alert_rate: float,
                 users: np.ndarray | None = None) -> tuple[list[int], int, int]:
    """``meta.type_ceiling``, the normal training users it comes from and how many of them hold
    some type's highest count alone.

    Per known event type, the most events of it any normal training user's window held (each
    user over its whole history in ``ws``; ``users`` as in :func:`run_ceiling`). A new normal
    user passes all n users' highest in some type with probability E[M] / (n + 1), M being how
    many of the n + 1 users hold some type's highest count alone; adding one user adds at most
    one such user, so M <= m + 1 with m counted among the n. The rule is on only when
    (m + 1) / (n + 1) is at most TYPE_RULE_SHARE of the budget. That is an estimate (m stands in
    for its expectation, the leave-one-out rate), not a bound like :func:`run_ceiling`'s
    j / (n + 1), and the rule is rarely the budget's only draw: held-out calibration users, scored
    with it, show what it adds (HDFS: estimated 0.10 %; 0.06 % of test normal sessions log some
    step more often than every training session did). Counts tie at the top in a closed grammar
    (HDFS: every normal block logs a step at most three times, thousands of them exactly three),
    and do not where one heavy user sets the line - then the rule stays off unless the users are
    many. [] (off) otherwise.
    """
    rows, normal_users, inv = _normal_users(ws, users)
    n, k = len(normal_users), len(vocab.types)
    if n < 2:
        return [], n, n
    # a count never exceeds the window's max_events (at most 1,024: artifact LIMITS): int16 keeps
    # [users, types] at 100 MB for 100k users and 512 types
    most = np.zeros((n, k), dtype=np.int16)
    for start in range(0, len(rows), _TYPE_COUNT_CHUNK):
        part = slice(start, start + _TYPE_COUNT_CHUNK)
        np.maximum.at(most, inv[part], type_counts(ws.input_ids[rows[part]], vocab).astype(most.dtype))
    top2 = np.sort(most, axis=0)[-2:]
    alone = len(np.unique(most.argmax(0)[1:][top2[1, 1:] > top2[0, 1:]]))
    if (alone + 1) / (n + 1) > TYPE_RULE_SHARE * user_alert_rate:
        return [], n, alone
    # a type no normal training user had (vocabularies are learnt from the whole log) is left to the
    # calibration users it came from: here it is not rare evidence, only unmeasured
    return [int(c) if c else vocab.max_events for c in top2[1, 1:]], n, alone


def _calibrate(model: torch.nn.Module, rules: Meta, vocab: Vocabulary, device: str, cfg: TrainConfig,
               ws: dataset.WindowSet, cal_ws: dataset.WindowSet, show: bool,
               cross_fit: Callable[[], tuple[dataset.WindowSet, np.ndarray, int] | None] | None = None,
               ) -> tuple[float, list[float], dict]:
    """Threshold and severity steps for the alert budget, and what the calibration users can support.

    With fewer normal calibration users than the budget needs (1 / budget - 1: 199 at 0.5 %), the
    quantile is simply the highest user: a new normal user passes it with probability
    1 / (users + 1) on average, and ``train`` reports the smallest budget they support as the share
    it stays under with 90 % confidence (``metrics.alert_rate_bound``: 4.5 % at 50 users, not 2.0 %). With fewer than
    a quarter of what the budget needs (50 at 0.5 %) one odd user moves even that. A classifier
    then calibrates on every real user of the log: ``cross_fit()`` gives the training users'
    windows, each scored by a model trained without them, or None when it cannot (the held-out
    users are scored by the model itself), and the rule above applies to all of them. A classifier fits the users it
    trained on, so their own scores say nothing about new ones (a 20-user Taobao log, threshold
    above all of them under the model: 46.5 % of its later users alerted). Without cross-fitting
    (``cfg.cross_fit_folds`` 0, or too few users) a classifier's threshold is set above every real
    user of the log and no budget is promised; a zero-label model's is the surprise of an event
    type never seen in training (it alerts only on what training never saw). ``cal_ws``: the
    calibration users' windows, out of ``ws`` (the whole log).
    """
    n_cal = len(np.unique(cal_ws.user))
    with progress.phase(show, f"calibrating the alert budget on {n_cal:,} held-out users ..."):
        cal_scores = _score(model, rules, cal_ws, vocab, device)
    need = math.ceil(1 / cfg.user_alert_rate) - 1  # the conformal rule's j >= 1 (metrics.calibrate_threshold)
    scores, user, ts, folds = cal_scores, cal_ws.user, cal_ws.ts, 0
    small = n_cal < need * SMALL_CALIBRATION
    fitted = cross_fit() if small and rules.kind == "classifier" and cross_fit is not None else None
    if fitted is not None:
        oof_ws, oof, folds = fitted
        scores, user, ts = np.r_[cal_scores, oof], np.r_[cal_ws.user, oof_ws.user], np.r_[cal_ws.ts, oof_ws.ts]
    n = len(np.unique(user))
    threshold, severity = metrics.calibrate_user_threshold(scores, user, ts, cfg.user_alert_rate)
    info = {"calibration_users": n, "held_out_users": n_cal, "cross_fit_folds": folds, "users_needed": need,
            "user_alert_rate": cfg.user_alert_rate, "supported": n_cal >= need,
            "smallest_supported_rate": metrics.alert_rate_bound(n, 0.0), "smallest_supported_rate_mean": 1 / (n + 1),
            "alert_rate_bound": metrics.alert_rate_bound(n, cfg.user_alert_rate),
            "budget_confidence": metrics.BUDGET_CONFIDENCE,
            "rule": "quantile" if n >= need else "the highest calibration user"}
    if folds:
        # approximate: the folds' models are not the model that serves, and the earlier blocks are
        # scored by models that learned from later users, so the line the user reads keeps saying so
        info["rule"] += f", every real user of the log scored by a model never fine-tuned on them ({folds} folds)"
    elif small:
        # a line above a few dozen people promises nothing about the next ones
        info["smallest_supported_rate"] = info["smallest_supported_rate_mean"] = info["alert_rate_bound"] = None
        if rules.kind == "mlm":
            threshold, info["rule"] = UNSEEN_SURPRISE, "set to alert on unseen event types only"
        else:
            real = ws.subset(np.flatnonzero(~np.isin(ws.user, np.unique(ws.user[ws.label == 1]))))
            top = float(_score(model, rules, real, vocab, device).max())
            threshold = max(threshold, float(np.nextafter(np.float32(top), np.float32(np.inf))))
            info["rule"] = "set above every real user of the log"
        severity = [threshold, *(max(threshold, s) for s in severity[1:])]
    info["threshold"] = threshold
    info["calibration_user_maxima"] = metrics.user_maxima(scores, user, ts)[0].tolist()
    return threshold, severity, info


#: Logit distance below which a classifier's threshold counts as sitting at its score cap.
CAP_HEADROOM_LOGIT = 0.25


def score_cap(model: torch.nn.Module) -> float | None:
    """The highest score a classifier can give, or None for a model without that bound.

    BERT's pooled output is a tanh, so the one-logit head adds at most the sum of its absolute
    weights to its bias: every window the model finds clearly abusive scores just under this cap,
    and among them it cannot rank (the demo's starter model: cap 0.99325, nine attackers and the
    calibration's highest normal user all at 0.99291)."""
    if not isinstance(model, BertForSequenceClassification) or not isinstance(
            getattr(model.bert.pooler, "activation", None), torch.nn.Tanh):
        return None
    head = model.classifier
    logit = float(head.weight.detach().abs().sum() + head.bias.detach().sum())
    return float(1.0 / (1.0 + math.exp(-logit)))


def cap_line(info: dict) -> str | None:
    """The one line ``train`` prints when its threshold sits at the classifier's score cap."""
    cap, thr = info.get("score_cap"), info.get("threshold")
    if cap is None or thr is None or not 0.0 < thr < 1.0:
        return None
    headroom = math.log(cap / (1 - cap)) - math.log(thr / (1 - thr))
    if headroom >= CAP_HEADROOM_LOGIT:
        return None
    return (f"score cap: the threshold {thr:.6g} lies within {max(headroom, 0.0):.2f} (in logit) of the highest score "
            f"this classifier can give ({cap:.6g}; its pooled output is a tanh). The windows it finds most suspicious "
            "all score about alike there, so an attacker who looks like its most suspicious calibration user is caught "
            "or missed by a hair. More normal users in the log lower the line.")


def budget_line(info: dict) -> str | None:
    """The one line ``train`` prints when its calibration users cannot support the budget."""
    if info["supported"]:
        return None
    if info.get("cross_fit_folds"):
        return (f"alert budget: {info['held_out_users']} held-out users cannot support {info['user_alert_rate']:.2%} "
                f"of normal users alerted (that needs {info['users_needed']:,}); calibrated instead on all "
                f"{info['calibration_users']} users of the log, cross-fitted, the smallest budget they support is "
                f"{_supported(info)}, and the threshold is {info['rule']}. Train on a longer log for a firmer budget.")
    if info["smallest_supported_rate"] is None:
        return (f"alert budget: {info['calibration_users']} calibration users cannot support "
                f"{info['user_alert_rate']:.2%} of normal users alerted (that needs {info['users_needed']:,}), nor any "
                f"budget: so few cannot tell how many new users a threshold alerts. The threshold is {info['rule']}; "
                f"check the share alerted with `seqsentry score` on a later recording, or train on a longer log.")
    return (f"alert budget: {info['calibration_users']} calibration users cannot support "
            f"{info['user_alert_rate']:.2%} of normal users alerted (that needs {info['users_needed']:,}); the smallest "
            f"budget they support is {_supported(info)}, and the threshold is {info['rule']}. Train on a longer log "
            f"for a tighter budget.")


def _supported(info: dict) -> str:
    """The smallest supported budget in words: what it stays under 9 times in 10, and its average."""
    return (f"{info['smallest_supported_rate']:.1%} of new normal users (it stays under that with "
            f"{info['budget_confidence']:.0%} confidence; {info['smallest_supported_rate_mean']:.1%} on average)")


def model_size(config) -> ModelSize:
    """The :class:`ModelSize` of a loaded model's BERT config."""
    return ModelSize(layers=config.num_hidden_layers, hidden=config.hidden_size, heads=config.num_attention_heads,
                     intermediate=config.intermediate_size, dropout=config.hidden_dropout_prob)


def _continued(cfg: TrainConfig, kind: str, device: str) -> Artifact | None:
    """The verified artifact ``cfg.init_from`` names, or None; only a classifier continues."""
    if cfg.init_from is None:
        return None
    if kind != "classifier":
        raise ValueError("--init-from continues a classifier; a zero-label model trains from scratch")
    start = load_artifact(cfg.init_from, device)  # verified like the detector loads it: checksums, fields, limits
    if start.meta.kind != "classifier":
        raise ValueError(f"--init-from {cfg.init_from}: a {start.meta.kind} model; only a classifier can be continued")
    return start


def train(batches_factory, out: Path, cfg: TrainConfig, registry_dir: Path | None = None,
          show: bool = True, verdicts: dict[str, int] | None = None) -> TrainResult:
    """Full run. ``batches_factory()`` returns an iterable of EventBatch (read once, then held in time order).

    Without ``cfg.zero_label`` the model is a classifier: the log's own users are the normal
    class, attackers made from the same log (training.attacks) and any labelled attackers
    the positive class. With it, the pretrained masked-event model is the detector.
    ``verdicts`` (user -> label of the labels file, training.verdicts): the report says how many
    confirmed attackers and dismissed users it held and how many of each the model alerts.
    """
    t0 = time.monotonic()
    device = pick_device(cfg.device)
    signing_key()  # a key that cannot be read or is too short fails now, not after training
    rng = _seed(cfg.seed)
    kind = "mlm" if cfg.zero_label else "classifier"
    start = _continued(cfg, kind, device)
    if start is not None:  # its windows and its encoder's size, or the weights would not fit
        cfg = dataclasses.replace(cfg, window=start.window_config, size=model_size(start.model.config))
    with progress.phase(show, "reading the log ..."):
        real, order = dataset.read_events(batches_factory())
    if not real:
        raise ValueError("the log holds no valid events to train on")
    log.info("%s", order.line())
    has_labels = any(e.label == 1 for e in real)
    # A labelled log (most users carry a label) splits by user and time, for an honest test; a few
    # analysts' verdicts on a platform's log keep the platform split, or they would cost the model
    # every event after the median timestamp (issue 22: 25 -> 7 attackers caught after 20 verdicts)
    # (a labels file labels every user it does not list 0: count the users it lists)
    labelled = set(verdicts) if verdicts is not None else {e.user_id for e in real if e.label is not None}
    labelled_log = has_labels and len(labelled) >= LABELLED_LOG_SHARE * len({e.user_id for e in real})
    for e in real:  # the platform's own users are its normal class unless labelled otherwise
        if e.label is None:
            e.label = 0
    events = real
    if kind == "classifier":
        with progress.phase(show, "injecting attacks into the log's own traffic ..."):
            injected = attacks.inject(real, cfg.seed)
            events = sorted(real + injected, key=lambda e: e.ts)
    vocab = start.vocab if start is not None else dataset.learn_vocabulary(
        [EventBatch.from_events(real)], cfg.window, shape=kind == "classifier")
    with progress.phase(show, f"windowing {len(events):,} events: every event's window, every ended session's ..."):
        ws = dataset.build_windows(dataset.batches_from_events(events, cfg.window), vocab, cfg.window)
    dismissed = [u for u, label in (verdicts or {}).items() if label == 0]
    trusted_until = None if labelled_log else dataset.first_confirmed_abuse(ws, verdicts or {})
    sp = dataset.split(ws) if labelled_log else dataset.split_platform(
        ws, train_only=dismissed, trusted_until=trusted_until, min_cal=math.ceil(1 / cfg.user_alert_rate) - 1)
    train_ws, val_ws, test_ws = ws.subset(sp.train), ws.subset(sp.val), ws.subset(sp.test)
    log.info("windows: %d train, %d val, %d test (kind=%s)", len(train_ws), len(val_ws), len(test_ws), kind)
    train_capped = _cap(train_ws, cfg.max_train_windows, rng)
    if verdicts:  # dismissed users (hard negatives) train on every window of theirs, beside the sample
        train_capped = verdict_report.with_hard_negatives(train_capped, train_ws, verdicts)
    if kind == "classifier":  # its pretraining may see everything; the zero-label model learns normal traffic only
        model, mlm = _fit(train_capped, dataset.with_evidence(val_ws), vocab, cfg, device, show, start)
    else:
        mlm = None  # zero-label models are not cross-fitted: the pretrained model is the detector
        pre_ws = train_ws.subset(train_ws.label != 1)
        model = pretrain(pre_ws, vocab, dataclasses.replace(cfg, pretrain_steps=pretrain_steps_for(cfg, len(pre_ws))),
                         device, show)
    sustain = cfg.sustain if kind == "classifier" else 1
    cal_ws = ws.subset(sp.calibration(ws))
    min_ended, ended_sessions = min_ended_events(train_ws, vocab, cfg.user_alert_rate)
    # a vocabulary without shape tokens counts nothing
    ceiling, ceiling_users, ceiling_rank = (run_ceiling(ws, cfg.user_alert_rate, np.unique(train_ws.user))
                                            if kind == "classifier" and vocab.shape else ([], 0, 0))
    # zero-label only: a classifier reads each type's count from its window's tokens and learnt from the
    # injected attacks what a count means; on HDFS with labels 3 of 1,000 normal test sessions passed a
    # ceiling (1 alerted by nothing else) and it caught no abnormal one the classifier missed
    types, type_users, types_alone = (type_ceiling(ws, vocab, cfg.user_alert_rate, np.unique(train_ws.user))
                                      if kind == "mlm" else ([], 0, 0))
    rules = _rules(kind, sustain, min_ended, ceiling, types)

    def cross_fit() -> tuple[dataset.WindowSet, np.ndarray, int] | None:
        # no pretraining to fine-tune folds from (mlm None): a continued classifier, already trained on
        # this platform's users (no model of it has not seen them), or a zero-label model
        folds = [] if mlm is None else cross_fit_folds(ws, sp, cfg.cross_fit_folds, train_only=dismissed,
                                                       trusted_until=trusted_until)
        if not folds:
            return None
        oof = _cross_fit(ws, sp, folds, vocab, cfg, device, rules, show, verdicts, model, mlm)
        return ws.subset(np.concatenate(folds)), oof, len(folds)

    threshold, severity, calibration = _calibrate(model, rules, vocab, device, cfg, ws, cal_ws, show, cross_fit)
    calibration |= {"min_ended_events": min_ended, "ended_training_sessions": ended_sessions,
                    "run_ceiling": ceiling, "run_ceiling_users": ceiling_users, "run_ceiling_rank": ceiling_rank,
                    # None: no normal training user had the type, so its ceiling (max_events) is no measure
                    "type_ceiling": {name: c if c < vocab.max_events else None
                                     for name, c in zip(vocab.types[1:], types, strict=True)} if types else {},
                    "type_ceiling_users": type_users, "type_ceiling_alone": types_alone, "type_ceiling_kind": kind}
    log.info("%s", metrics.run_ceiling_line(calibration)[2:])
    log.info("%s", metrics.type_ceiling_line(calibration)[2:])
    calibration["score_cap"] = score_cap(model)
    line, capped = budget_line(calibration), cap_line(calibration)
    for warning in (line, capped):
        if warning:
            log.warning("%s", warning)
    log.info("threshold %.4g for %.2f%% of %d calibration users", threshold, 100 * cfg.user_alert_rate,
             calibration["calibration_users"])

    version = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + f"-{kind}"
    report: dict = {}
    scores: dict[str, np.ndarray] = {}
    evaluable = (test_ws.label >= 0).all() and (test_ws.label == 1).any() and (test_ws.label == 0).any()
    if evaluable:
        with progress.phase(show, "evaluating on test users, with the baselines ..."):
            scores, report = _evaluate(model, rules, vocab, device, cfg, rng, train_ws, cal_ws, test_ws, threshold)
    verdict_info = verdict_report.summarise(lambda sub: _score(model, rules, sub, vocab, device), ws, sp,
                                            threshold, verdicts) if verdicts else None
    fingerprint = data_fingerprint(ws.input_ids, ws.label)
    meta = Meta(version=version, kind=kind, threshold=threshold, window=asdict(cfg.window),
                data_fingerprint=fingerprint, created_at=datetime.now(UTC).isoformat(),
                metrics=report.get("transformer", {}), severity=severity, user_alert_rate=cfg.user_alert_rate, sustain=sustain,
                min_ended_events=min_ended, run_ceiling=ceiling, type_ceiling=types)
    meta.validate(out / version)  # what the detector will check: never publish what it would refuse
    with progress.phase(show, "writing the artifact and the report ..."):
        art_dir = save_artifact(out / version, model.cpu(), vocab, meta)
        report_dir = art_dir / "report"
        info = {"log": {"events": order.events, "users": order.users, "sorted_by_time": order.sorted,
                        "injected_attackers": len({e.user_id for e in events}) - order.users},
                "calibration": {k: v for k, v in calibration.items() if k != "calibration_user_maxima"},
                "calibration_maxima": calibration["calibration_user_maxima"],
                "budget_line": line, "cap_line": capped, **({"verdicts": verdict_info} if verdict_info else {}),
                **({"continued_from": start.version} if start is not None else {})}
        metrics.write_report(report_dir, report, scores, test_ws, title=f"seqsentry {version}", info=info,
                             calibration_maxima=np.asarray(calibration["calibration_user_maxima"]))
    if registry_dir is not None:
        art_dir = registry.publish(registry_dir, art_dir, version)
        report_dir = art_dir / "report"
    return TrainResult(art_dir, version, kind, threshold, report, report_dir, time.monotonic() - t0,
                       order=order.line(), budget=line, verdicts=verdict_info)


#: Generated events a starter model trains on: enough users that its held-out calibration users
#: support the default 0.5 % budget (199 needed; 60,000 events gave 147, and the demo's normal
#: users were alerted at the 0.7 % those could support: 2 of 282, precision 85.7 %; 120,000: 1 of 282).
STARTER_EVENTS = 120_000


def train_on_generated(registry_dir: Path, *, events: int = STARTER_EVENTS, seed: int = 43, attacker_fraction: float = 0.05,
                       device: str = "auto", out: Path | None = None, show: bool = True) -> TrainResult:
    """A starter model trained on generated traffic (demo, `run --bootstrap-model`), published to the registry."""
    from training import synth

    records = synth.generate_list(events=events, seed=seed, attacker_fraction=attacker_fraction)
    cfg = TrainConfig(pretrain_steps=200, finetune_epochs=2, max_train_windows=15_000, device=device)
    return train(lambda: dataset.batches_from_records(records), out or Path(registry_dir) / "runs", cfg,
                 registry_dir=registry_dir, show=show)


def default_config(**overrides: object) -> TrainConfig:
    """TrainConfig with overrides, ignoring None values (CLI convenience)."""
    return TrainConfig(**{k: v for k, v in overrides.items() if v is not None})



