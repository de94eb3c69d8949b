"""Training data from recorded logs, made by the live pipeline's own code.

A log is streamed through :class:`stream.windows.WindowStore` exactly as the consumer
streams Kafka, and every event's window is encoded with :func:`stream.encoding.encode`
at the moment that event completes it, and every ended session's window with its END
token when the stream closes it. So a window here is bit-for-bit the window the detector
would score for that event or session end.

**Window label.** A window is positive (1) when it holds at least one event labelled 1 -
i.e. its user is an attacker *and* the window covers attack behaviour. An account-
takeover victim's windows before the takeover are therefore negative. Windows of logs
without labels are -1 (unknown). A classifier is fine-tuned towards
:func:`fine_tuning_targets`, which count a positive window of an open session with fewer than
:data:`MIN_ATTACK_EVENTS` attack events as part of one.

**Splits** are by user *and* by time, never by random window (neighbouring windows of a
user overlap almost entirely, so a random split leaks): users are hashed into
train / validation / test groups, and validation and test only use windows after the
time cut, training only windows before it.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from stream import log_order, logs
from stream.encoding import END, N_SPECIAL, PAD, RUN_COUNTS, Encoded, Vocabulary, encode, fit_vocabulary
from stream.events import Event, EventBatch, validate_records
from stream.windows import Change, WindowConfig, Windows, WindowStore


@dataclass
class WindowSet:
    """Encoded windows, one per event, with labels and bookkeeping for evaluation."""

    input_ids: np.ndarray  # int32 [M, seq_len]
    label: np.ndarray  # int8 [M]: 1 attack window, 0 normal, -1 unknown
    attack: np.ndarray  # int16 [M]: index into attack_names (0 = none)
    user: np.ndarray  # int32 [M]: index into users
    ts: np.ndarray  # int64 [M]: event time of the event that completed the window
    seq_no: np.ndarray  # int32 [M]: that event's position in its user's history (1-based)
    run_counts: np.ndarray  # int32 [M, len(RUN_COUNTS)]: stream.encoding.Encoded.run_counts (0 without shape tokens)
    users: list[str]
    attack_names: list[str]
    evidence: np.ndarray | None = None  # int16 [M]: attack events (labelled 1) in the window; None: not counted

    def __len__(self) -> int:
        return len(self.label)

    @property
    def attention_mask(self) -> np.ndarray:
        return (self.input_ids != PAD).astype(np.int64)

    def encoded(self) -> Encoded:
        """The windows as the scorer takes them (events counted without CLS, END or padding)."""
        return Encoded(self.input_ids.astype(np.int64), self.attention_mask, (self.input_ids >= N_SPECIAL).sum(1),
                       self.run_counts)

    def joined(self, other: WindowSet) -> WindowSet:
        """These windows, then ``other``'s, indexed into this set's users and attack names (``other``
        must share them); a field either side did not count (None) is left out."""
        kw = {f.name: np.concatenate([getattr(self, f.name), getattr(other, f.name)]) for f in fields(self)
              if f.name not in ("users", "attack_names")
              and getattr(self, f.name) is not None and getattr(other, f.name) is not None}
        return WindowSet(**kw, users=self.users, attack_names=self.attack_names)

    def subset(self, idx: np.ndarray) -> WindowSet:
        """The windows at ``idx`` (indices or boolean mask)."""
        kw = {f.name: getattr(self, f.name)[idx] for f in fields(self)
              if f.name not in ("users", "attack_names") and getattr(self, f.name) is not None}
        return WindowSet(**kw, users=self.users, attack_names=self.attack_names)


def batches_from_log(path: Path | str, spec: logs.LogSpec | None = None, tally: logs.RejectTally | None = None,
                     max_reject_share: float | None = None) -> Iterator[EventBatch]:
    """Valid events of a log, batch by batch; rejected lines are skipped and, with ``tally``,
    counted there (past ``max_reject_share`` the end of the log raises, see logs.iter_events)."""
    for res in logs.iter_events(path, spec, tally, max_reject_share):
        yield res.events


def batches_from_records(records: Iterable[dict], chunk: int = 20_000) -> Iterator[EventBatch]:
    """Valid events from in-memory records (e.g. training.synth output)."""
    buf: list[dict] = []
    for r in records:
        buf.append(r)
        if len(buf) >= chunk:
            yield validate_records(buf).events
            buf = []
    if buf:
        yield validate_records(buf).events


def read_events(batches: Iterable[EventBatch]) -> tuple[list[Event], log_order.TimeOrder]:
    """Every valid event of a log, in time order (a stable sort: ties keep file order).

    Public logs are often grouped by user or session rather than by time; read in file
    order, almost every event would end a session (the partition clock would jump back and
    forth). Memory: the events themselves (a few hundred bytes each), which training holds
    anyway as windows.
    """
    evs: list[Event] = []
    for b in batches:
        evs += b.events
    ts = np.fromiter((e.ts for e in evs), dtype=np.int64, count=len(evs))
    order = log_order.TimeOrder(len(evs), log_order.out_of_order(ts), len({e.user_id for e in evs}))
    if order.sorted:
        evs = [evs[i] for i in log_order.stable_time_order(ts).tolist()]
    return evs, order


END_OF_LOG_USER = "<end of log>"


def batches_from_events(events: list[Event], window: WindowConfig, chunk: int = 20_000,
                        end_sessions: bool = True) -> Iterator[EventBatch]:
    """Time-ordered events as batches; with ``end_sessions`` one last marker event a session gap
    after the newest, so every session still open when the log stops ends (a short log otherwise
    holds no session end at all, and every ended session would look unheard of). Its own window
    is dropped by :func:`build_windows`."""
    for i in range(0, len(events), chunk):
        yield EventBatch.from_events(events[i : i + chunk])
    if end_sessions and events:
        last = max(e.ts for e in events[-chunk:])
        yield EventBatch.from_events([Event(END_OF_LOG_USER, last + window.session_gap_ms + 1, events[-1].type)])


def build_windows(batches: Iterable[EventBatch], vocab: Vocabulary, window: WindowConfig) -> WindowSet:
    """Stream batches through a window store and encode every event's window (the end-of-log
    marker's own window, see :func:`batches_from_events`, is left out)."""
    store = WindowStore(window)
    users: dict[str, int] = {}
    attack_names = ["none"]
    attack_idx = {"none": 0}
    out: dict[str, list[np.ndarray]] = {k: [] for k in ("ids", "label", "attack", "user", "ts", "seq", "runs",
                                                            "evidence")}

    def runs(enc: Encoded) -> np.ndarray:
        return enc.run_counts if enc.run_counts is not None else np.zeros((len(enc), len(RUN_COUNTS)), np.int32)
    for batch in batches:
        if not len(batch):
            continue
        events = batch.events

        def on_change(change: Change, batch: EventBatch = batch, events: list = events) -> None:
            w = change.windows
            enc = encode(w, store.type_names, vocab)
            lab = _window_labels(w)
            att = np.zeros(len(change.rows), dtype=np.int16)
            for j, row in enumerate(change.rows.tolist()):
                name = events[row].attack if lab[j] == 1 else None
                if name:
                    att[j] = attack_idx.setdefault(name, len(attack_names))
                    if att[j] == len(attack_names):
                        attack_names.append(name)
            out["ids"].append(enc.input_ids.astype(np.int32))
            out["label"].append(lab)
            out["attack"].append(att)
            out["user"].append(np.array([users.setdefault(batch.user_id[r], len(users)) for r in change.rows.tolist()],
                                        dtype=np.int32))
            out["ts"].append(batch.ts[change.rows])
            out["seq"].append(change.seq.astype(np.int32))
            out["runs"].append(runs(enc))
            out["evidence"].append(_attack_events(w))

        def on_close(change: Change) -> None:  # its rows are the closing message's, another user's
            w = change.windows
            enc = encode(w, store.type_names, vocab, True)
            out["ids"].append(enc.input_ids.astype(np.int32))
            out["label"].append(_window_labels(w))
            out["attack"].append(np.zeros(len(w), dtype=np.int16))  # filled from the user's attack below
            out["user"].append(np.array([users.setdefault(u, len(users)) for u in w.user_id], dtype=np.int32))
            out["ts"].append(w.ts[:, -1].copy())
            out["seq"].append(change.seq.astype(np.int32))
            out["runs"].append(runs(enc))
            out["evidence"].append(_attack_events(w))

        store.add(batch, on_change=on_change, on_close=on_close)
    cat = {k: (np.concatenate(v) if v else np.empty(0)) for k, v in out.items()}
    # a positive window whose trigger event was normal still belongs to its user's attack
    user_attack: dict[int, int] = {}
    for u, a in zip(cat["user"].tolist(), cat["attack"].tolist(), strict=True):
        if a:
            user_attack.setdefault(u, a)
    fill = (cat["label"] == 1) & (cat["attack"] == 0)
    cat["attack"][fill] = [user_attack.get(u, 0) for u in cat["user"][fill].tolist()]
    if END_OF_LOG_USER in users:
        keep = cat["user"] != users[END_OF_LOG_USER]
        cat = {k: v[keep] if k != "ids" else v.reshape(-1, vocab.seq_len)[keep] for k, v in cat.items()}
    return WindowSet(
        input_ids=cat["ids"].reshape(-1, vocab.seq_len).astype(np.int32),
        label=cat["label"].astype(np.int8),
        attack=cat["attack"].astype(np.int16),
        user=cat["user"].astype(np.int32),
        ts=cat["ts"].astype(np.int64),
        seq_no=cat["seq"].astype(np.int32),
        run_counts=cat["runs"].reshape(-1, len(RUN_COUNTS)).astype(np.int32),
        users=list(users),
        attack_names=attack_names,
        evidence=cat["evidence"].astype(np.int16),
    )


def _attack_events(w: Windows) -> np.ndarray:
    """Events labelled 1 in each window."""
    return ((w.label == 1) & w.valid()).sum(1).astype(np.int16)


#: Attack events a window of a session still going needs before it counts as a whole positive in
#: fine-tuning (:func:`fine_tuning_targets`). Before that an attack's window is a session's first few
#: events, which normal users' sessions start with too. Taught as whole positives, they made the
#: demo's starter model score a quick two-to-four-event start as abuse: 17 of its 262 normal
#: calibration users reached its score cap beside the attackers (threshold 0.99018, cap 0.99065).
MIN_ATTACK_EVENTS = 4


def too_early_to_tell(ws: WindowSet, min_events: int = MIN_ATTACK_EVENTS) -> np.ndarray:
    """Positive windows of a session still open that hold fewer than ``min_events`` attack events
    (none when the windows were built without ``evidence``). An ended session's window is never
    early: the whole session is in it."""
    if ws.evidence is None:
        return np.zeros(len(ws), dtype=bool)
    return (ws.label == 1) & (ws.evidence < min_events) & ~(ws.input_ids == END).any(1)


def fine_tuning_targets(ws: WindowSet, min_events: int = MIN_ATTACK_EVENTS) -> np.ndarray:
    """What a classifier is fine-tuned towards for each window: its label, except that a window
    :func:`too_early_to_tell` counts as evidence / ``min_events`` of a positive. Its events are
    partly the attack's and mostly what any session starts with: left out, the positives were all
    longer than most sessions of a short-session platform, so length itself began to look like
    abuse (DIGINETICA, 3.9 events per user: 48 -> 43 of 64 attackers caught); as whole positives
    they put normal starts at the score cap (above)."""
    y = ws.label.astype(np.float32)
    early = too_early_to_tell(ws, min_events)
    y[early] = ws.evidence[early] / np.float32(min_events)
    return y


def with_evidence(ws: WindowSet, min_events: int = MIN_ATTACK_EVENTS) -> WindowSet:
    """The windows without those :func:`too_early_to_tell`: what validation ranks (early stopping
    asks whether the model finds the attacks, not whether it guesses a session's first events)."""
    early = too_early_to_tell(ws, min_events)
    return ws.subset(~early) if early.any() else ws


def _window_labels(w: Windows) -> np.ndarray:
    """1 if a window holds an attack event, 0 if it holds labelled events only, -1 if unlabelled."""
    valid = w.valid()
    has_label = (w.label >= 0) & valid
    return np.where(has_label.any(1), ((w.label == 1) & valid).any(1), -1).astype(np.int8)


def learn_vocabulary(batches: Iterable[EventBatch], window: WindowConfig, shape: bool = True) -> Vocabulary:
    """Vocabulary from a log's events (types and price buckets); ``shape``: window-shape tokens."""
    return fit_vocabulary(batches, max_events=window.max_events, shape=shape)


@dataclass(frozen=True)
class Split:
    """Index arrays of the train / validation / test windows."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def calibration(self, ws: WindowSet) -> np.ndarray:
        """Every window of the validation users who never attack (whole histories, both sides of
        the time cut): the normal users an alert budget is calibrated on."""
        val_users = np.unique(ws.user[self.val])
        attackers = np.unique(ws.user[ws.label == 1])
        return np.flatnonzero(np.isin(ws.user, np.setdiff1d(val_users, attackers)))


def user_bucket(users: list[str]) -> np.ndarray:
    """Stable 0..99 bucket per user (crc32: the same in every process)."""
    return np.array([zlib.crc32(u.encode()) % 100 for u in users], dtype=np.int16)


def first_event_ts(ws: WindowSet) -> np.ndarray:
    """Each user's first event time (int64 max for a user with no window)."""
    first = np.full(len(ws.users), np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first, ws.user, ws.ts)
    return first


def split_platform(ws: WindowSet, cal_users: float = 0.2, train_only: Iterable[str] = (),
                   trusted_until: int | None = None, min_cal: int = 1) -> Split:
    """Split for a platform's own traffic with injected attackers and no labels of its own.

    Real users are held out *by time*: the latest ``cal_users`` of them by first event
    calibrate the threshold, the earlier ones train. A deployed model scores users who come
    after everyone it learned from, and drift (another week, another season, another mix of
    visitors) moves normal users' scores up more often than down: a threshold set on users
    of the training period itself broke the budget on later traffic (DIGINETICA: 1.9 % of
    new normal users alerted at 0.5 %). Ties in time keep a stable hash order. Injected
    attackers (users with a positive window) hash 80 / 20 into training and validation.
    Validation and test are the held-out real users plus the held-out injected attackers:
    early stopping and the report see users the model never trained on. Users in ``train_only``
    (analysts' dismissed alerts) always train and never calibrate: they are the normal users an
    earlier model scored highest, a sample biased to the top, and held out they would set the
    threshold (two dismissed users among 400 calibration users decide it at a 0.5 % budget).
    ``trusted_until`` (the first event of the earliest confirmed attacker): from then on the log
    is known to hold abuse, and the users who arrive after it include attackers nobody has
    judged yet; the calibration users are then the latest who arrived before it, as long as at
    least ``min_cal`` did (else the latest overall, as without it). Those after it train.
    """
    n = len(ws.users)
    attacker = np.zeros(n, dtype=bool)
    attacker[np.unique(ws.user[ws.label == 1])] = True
    first = first_event_ts(ws)
    bucket = user_bucket(ws.users)
    forced = np.isin(np.asarray(ws.users, dtype=object), list(train_only)) if ws.users else np.zeros(0, dtype=bool)
    real = np.flatnonzero(~attacker & ~forced & (first < np.iinfo(np.int64).max))
    k = int(round(cal_users * len(real)))
    k = max(k, 1) if len(real) > 1 else k  # a tiny log still calibrates on someone (and trains on the rest)
    pool = real
    if trusted_until is not None:
        before = real[first[real] < trusted_until]
        if len(before) >= max(k, min_cal):
            pool = before
    latest = pool[np.lexsort((bucket[pool], first[pool]))][len(pool) - k:]
    held_user = attacker & (bucket < cal_users * 100)
    held_user[latest] = True
    held = held_user[ws.user]
    return Split(train=np.flatnonzero(~held), val=np.flatnonzero(held), test=np.flatnonzero(held))


def first_confirmed_abuse(ws: WindowSet, verdicts: Mapping[str, int]) -> int | None:
    """The first event time of the earliest user the verdicts confirm as abuse (None: no such user
    in the log)."""
    abuse = [i for i, u in enumerate(ws.users) if verdicts.get(u) == 1]
    if not abuse:
        return None
    at = np.isin(ws.user, abuse)
    return int(ws.ts[at].min()) if at.any() else None


def split(ws: WindowSet, val_users: float = 0.2, test_users: float = 0.2, time_cut: float = 0.5) -> Split:
    """Split by user groups and chronologically (see module docstring).

    A log without labels has nothing to test against: its users split 80 / 20 into
    training and calibration, over the whole time range.
    """
    bucket = user_bucket(ws.users)[ws.user]
    if not (ws.label >= 0).any():
        cal = bucket < val_users * 100
        return Split(train=np.flatnonzero(~cal), val=np.flatnonzero(cal), test=np.empty(0, dtype=np.int64))
    t_cut = np.quantile(ws.ts, time_cut) if len(ws) else 0
    test_b = bucket < test_users * 100
    val_b = (bucket >= test_users * 100) & (bucket < (test_users + val_users) * 100)
    train_b = ~(test_b | val_b)
    early = ws.ts < t_cut
    return Split(
        train=np.flatnonzero(train_b & early),
        val=np.flatnonzero(val_b & ~early),
        test=np.flatnonzero(test_b & ~early),
    )
