"""The detection steps shared by the live service and offline scoring.

``ingest`` (consumer side): valid events -> window store -> a snapshot of the window each
event completes, and of each session that ended (:class:`Pending`). ``score`` (inference side): encode -> model ->
threshold -> cooldown -> alerts with explanations. `seqsentry run` calls them from two
threads with Kafka around them; `seqsentry score` calls them in a loop over a file.
Because both call exactly this code, a recorded log gives the same alerts either way.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from stream import alerts, explain
from stream.artifact import Artifact
from stream.encoding import Encoded, encode
from stream.events import EventBatch
from stream.metrics import Metrics
from stream.model import Scorer, types_beyond_ceiling
from stream.windows import Change, Windows, WindowStore

log = logging.getLogger(__name__)
LENGTH_BUCKETS = (8, 16, 32, 64, 128, 256)
SESSION_END = "<session end>"  # the explanation's name for the END of a closed session


@dataclass
class Pending:
    """Windows completed in one round of one batch, waiting for inference."""

    windows: Windows
    type_names: list[str]  # the store's type table (append-only, safe to read from another thread)
    event_time: np.ndarray  # int64 event time of each completing event
    trigger_event: list[str]  # stable identity of each completing event (for alert ids)
    event_ids: list[str | None]
    topic: str | None = None
    partition: int | None = None
    offsets: np.ndarray | None = None  # Kafka offset of each completing event
    index: np.ndarray | None = None  # input position (in its parsed batch) of each completing message
    item_ids: list[str | None] | None = None  # item_id of each completing event, as sent (None: session end)
    log: str | None = None  # offline: the log scored (stream.offline sets it), named in the alert's trigger
    log_records: np.ndarray | None = None  # offline: the log record (0-based) of each input position of the batch
    kafka_ts: np.ndarray | None = None  # Kafka timestamp (ms) of each completing message
    enqueued: float = field(default_factory=time.monotonic)
    ticket: object | None = None  # the service's commit ticket
    closing: bool = False  # windows of ended sessions (encoded with END; the trigger is the closing message)
    # users the store evicted since the previous pending: their cooldown is forgotten before these windows
    # are scored, at the same point of the stream as offline scoring (the consumer may be batches ahead)
    forget: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.event_time)


def _trigger_identity(e) -> str:  # noqa: ANN001 - an events.Event
    return e.event_id if e.event_id is not None else f"{e.ts}|{e.type}|{e.item_id or ''}|{e.session_id or ''}"


_WINDOW_ARRAYS = ("ts", "type", "item", "price", "label", "length")  # Windows' fields after user_id, in order


@dataclass
class Detector:
    """Model + cooldown + the two pipeline steps. ``score`` is called from one thread only."""

    scorer: Scorer
    cooldown_ms: int = 600_000
    explain_top: int = 5
    coalesce: bool = False
    shadow: Scorer | None = None
    metrics: Metrics | None = None
    max_users: int | None = None  # overrides the model's per-store user cap

    def __post_init__(self) -> None:
        self.cooldown = alerts.Cooldown(self.cooldown_ms)
        self._evicted: list[str] = []  # consumer thread: evicted users not yet handed to a pending
        self._next: Scorer | None = None
        self._swap_lock = threading.RLock()  # re-entrant: request_swap holds it while _maybe_swap takes it

    @property
    def window_config(self):  # noqa: ANN201
        return self.scorer.artifact.window_config

    def new_store(self) -> WindowStore:
        """A window store shaped for the serving model."""
        cfg = self.window_config
        if self.max_users is not None:
            cfg = dataclasses.replace(cfg, max_users=self.max_users)
        return WindowStore(cfg, initial_capacity=min(1024, cfg.max_users))

    # ---- consumer side -------------------------------------------------------------
    def ingest(self, store: WindowStore, batch: EventBatch, *, topic: str | None = None, partition: int | None = None,
               offsets: np.ndarray | None = None, kafka_ts: np.ndarray | None = None) -> tuple[list[Pending], np.ndarray]:
        """Add valid events to ``store``; return the windows to score and the too-late batch rows.

        ``offsets``/``kafka_ts`` are indexed by input position (``batch.index``).
        """
        pending: list[Pending] = []

        def on_change(change: Change) -> None:
            rows = change.rows
            src = batch.index[rows]
            evs = [batch.events[r] for r in rows.tolist()]
            pending.append(Pending(
                windows=change.windows, type_names=store.type_names, event_time=batch.ts[rows],
                trigger_event=[_trigger_identity(e) for e in evs], event_ids=[e.event_id for e in evs],
                topic=topic, partition=partition,
                offsets=None if offsets is None else offsets[src], kafka_ts=None if kafka_ts is None else kafka_ts[src],
                index=src, item_ids=[e.item_id for e in evs],
            ))

        def on_close(change: Change) -> None:
            w, src = change.windows, batch.index[change.rows]
            last_ts = w.ts[:, -1]
            last_type = [store.type_names[int(t)] for t in w.type[:, -1].tolist()]
            pending.append(Pending(
                windows=w, type_names=store.type_names, event_time=last_ts.copy(),
                trigger_event=[f"end|{t}|{ty}" for t, ty in zip(last_ts.tolist(), last_type, strict=True)],
                event_ids=[None] * len(w), topic=topic, partition=partition,
                offsets=None if offsets is None else offsets[src], kafka_ts=None if kafka_ts is None else kafka_ts[src],
                index=src, closing=True,
            ))

        evictions: list[tuple[int, list[str]]] = []
        store.on_evict = lambda users: evictions.append((len(pending), users))
        try:
            res = store.add(batch, on_change=on_change, on_close=on_close)
        finally:
            store.on_evict = None
        self._hand_over_evictions(pending, evictions)
        return pending, res.too_late

    def _hand_over_evictions(self, pending: list[Pending], evictions: list[tuple[int, list[str]]]) -> None:
        """Give each eviction's users to the first pending created after it (later ones: the next
        step's first), so that scoring forgets their cooldown where the stream evicted them: after
        the windows before the eviction, before those after it - the order offline scoring has."""
        if not pending:
            self._evicted += [u for _, users in evictions for u in users]
            return
        pending[0].forget, self._evicted = self._evicted, []
        for at, users in evictions:
            if at < len(pending):
                pending[at].forget += users
            else:
                self._evicted += users

    # ---- inference side ----------------------------------------------------------------
    def request_swap(self, scorer: Scorer, on_swapped: Callable[[Scorer], None] | None = None) -> None:
        """Serve ``scorer`` from the next batch on (hot reload; thread-safe hand-over).

        The swap happens here, at once and under the swap lock: the serving scorer, the
        model-info metric and the caller's record of the serving version (``on_swapped``)
        change together, so nothing ever reports a version that is not the one serving. A
        batch already scoring keeps the scorer it took at its start (``score`` reads it once).
        """
        with self._swap_lock:
            self._next = scorer
            self._maybe_swap(on_swapped)

    def _maybe_swap(self, on_swapped: Callable[[Scorer], None] | None = None) -> None:
        # Also called by score() at the start of each batch: taking the lock there means a
        # batch never starts halfway through a swap.
        with self._swap_lock:
            nxt, self._next = self._next, None
            if nxt is None:
                return
            log.info("model swapped: %s -> %s", self.scorer.artifact.version, nxt.artifact.version)
            self.scorer = nxt
            if self.metrics:
                self.metrics.model_info.info({"version": nxt.artifact.version, "kind": nxt.artifact.meta.kind})
            if on_swapped is not None:
                on_swapped(nxt)

    def _encode(self, pendings: list[Pending], scorer: Scorer) -> Encoded:
        """The pendings' windows encoded, in order: one ``encode`` call per store type table and
        kind (event windows, session ends), not per pending - a batch that users came back within
        arrives as two pendings per session they ended (window_sessions.capture_closes)."""
        vocab = scorer.artifact.vocab
        groups: dict[tuple[int, bool, int], list[int]] = {}
        for i, p in enumerate(pendings):
            groups.setdefault((id(p.type_names), p.closing, p.windows.ts.shape[1]), []).append(i)
        if len(groups) == len(pendings):
            return Encoded.concat([encode(p.windows, p.type_names, vocab, p.closing) for p in pendings])
        starts = np.cumsum([0, *(len(p) for p in pendings)])
        parts, rows = [], []
        for (_, closing, _), members in groups.items():
            ws = [pendings[i].windows for i in members]
            joined = Windows([u for w in ws for u in w.user_id],
                             *(np.concatenate([getattr(w, f) for w in ws]) for f in _WINDOW_ARRAYS))
            parts.append(encode(joined, pendings[members[0]].type_names, vocab, closing))
            rows.append(np.concatenate([np.arange(starts[i], starts[i + 1]) for i in members]))
        order = np.empty(starts[-1], dtype=np.int64)
        order[np.concatenate(rows)] = np.arange(starts[-1])
        return Encoded.concat(parts).take(order)

    def _score_bucketed(self, scorer: Scorer, enc: Encoded, keep: np.ndarray) -> np.ndarray:
        """Scores for ``keep`` rows, grouped into length buckets so short windows pay no padding."""
        scores = np.full(len(enc), np.nan, dtype=np.float32)
        idx = np.flatnonzero(keep)
        bucket = np.searchsorted(np.asarray(LENGTH_BUCKETS), enc.length[idx])
        for b in np.unique(bucket).tolist():
            sel = idx[bucket == b]
            scores[sel] = scorer.score(enc.take(sel))
        return scores

    def score(self, pendings: list[Pending]) -> list[list[dict]]:
        """Score every pending window; return the alerts of each pending, in order."""
        self._maybe_swap()
        scorer = self.scorer
        if not pendings:
            return []
        t0 = time.perf_counter()
        enc = self._encode(pendings, scorer)
        sizes = [len(p) for p in pendings]
        users = [u for p in pendings for u in p.windows.user_id]
        keep = np.ones(len(enc), dtype=bool)
        if self.coalesce:  # only each user's newest window in this batch (throughput over determinism)
            last = {u: i for i, u in enumerate(users)}
            keep[:] = False
            keep[list(last.values())] = True
        scores = self._score_bucketed(scorer, enc, keep)
        m = self.metrics
        if m:
            m.inference.observe(time.perf_counter() - t0)
            m.count_scored(int(keep.sum()))
            m.batch_size.observe(int(keep.sum()))
        if self.shadow is not None:
            self._shadow(pendings, keep, scores)
        art = scorer.artifact
        # Scores are float32: compare with the threshold as a float32 too, and show that value in the
        # alert, so that a score shown is never below the threshold shown beside it.
        thr = np.float32(art.meta.threshold)
        fire: list[tuple[int, int, int]] = []  # (pending, row in pending, row in batch) past threshold and cooldown
        offset = 0
        for i, (p, n) in enumerate(zip(pendings, sizes, strict=True)):
            if p.forget:
                self.cooldown.forget(p.forget)
            for j in np.flatnonzero(scores[offset : offset + n] >= thr).tolist():
                if self.cooldown.allow(users[offset + j], int(p.event_time[j])):
                    fire.append((i, j, offset + j))
                elif m:
                    m.alerts_suppressed.inc()
            offset += n
        # Occlusion weights only mean something for a classifier: a zero-label score is the newest
        # event's surprise, so that event would carry the whole weight (see _alert).
        rows = [row for _, _, row in fire]
        why = (scorer.explain_many(enc, rows, self.explain_top) if art.meta.kind == "classifier"
               else [None] * len(rows))
        over = types_beyond_ceiling(art, enc.take(np.asarray(rows, dtype=np.int64)))
        out: list[list[dict]] = [[] for _ in pendings]
        for (i, j, row), pairs, types in zip(fire, why, over, strict=True):
            out[i].append(self._alert(pendings[i], j, enc, row, float(scores[row]), float(thr), art, pairs, types))
        return out

    def _shadow(self, pendings: list[Pending], keep: np.ndarray, scores: np.ndarray) -> None:
        sh = self.shadow
        assert sh is not None
        s2 = self._score_bucketed(sh, self._encode(pendings, sh), keep)
        a = scores[keep] >= self.scorer.artifact.meta.threshold
        b = s2[keep] >= sh.artifact.meta.threshold
        if self.metrics:
            self.metrics.shadow_windows.inc(int(keep.sum()))
            self.metrics.shadow_agree.inc(int((a == b).sum()))

    def _alert(self, p: Pending, j: int, enc: Encoded, row: int, score: float, thr: float, art: Artifact,
               why: list[tuple[int, float]] | None, over_types: list[tuple[str, int, int]]) -> dict:
        """The alert for window ``j`` of ``p`` (batch row ``row``). ``over_types``: the types whose
        count passed the model's type ceiling (model.types_beyond_ceiling). ``why``: the classifier's occlusion
        weights (position, weight), positions counting events oldest first; None for zero-label models,
        whose explanation is the one event they scored."""
        w = p.windows
        n = int(w.length[j])
        ts, types, items, prices = w.ts[j, -n:], w.type[j, -n:], w.item[j, -n:], w.price[j, -n:]
        gaps = [None, *np.diff(ts).tolist()]
        events = [{"ts": int(t), "type": p.type_names[int(ty)],
                   "price": None if np.isnan(pr) else float(f"{pr:.7g}"),  # float32 -> its shortest decimal
                   "item_hash": explain.item_hex(it), "gap_ms": g}
                  for t, ty, pr, it, g in zip(ts.tolist(), types.tolist(), prices.tolist(), items.tolist(), gaps,
                                              strict=True)]
        vocab = art.vocab
        summary = explain.summarise(ts, types, items, p.type_names, lambda t: vocab.type_index(t) != 0,
                                    closing=p.closing, min_ended=art.meta.min_ended_events,
                                    run_ceiling=art.meta.run_ceiling,
                                    run_counts=() if enc.run_counts is None else enc.run_counts[row],
                                    over_types=over_types)
        n_enc = int(enc.length[row])
        encoded_events = events[-n_enc:] if n_enc else []
        if p.closing:
            encoded_events = [*encoded_events, {"ts": events[-1]["ts"], "type": SESSION_END, "price": None}]
        if why is None:  # zero-label: the event whose surprise is the score (the newest, or the session's end)
            explanation = [{**encoded_events[-1], "position": len(encoded_events) - 1}] if encoded_events else []
        else:
            explanation = [{**encoded_events[pos], "position": pos, "weight": round(weight, 6)} for pos, weight in why]
        trigger = {"topic": p.topic, "partition": p.partition,
                   "offset": None if p.offsets is None else int(p.offsets[j]), "event_id": p.event_ids[j],
                   "item_id": None if p.item_ids is None else p.item_ids[j]}
        if p.log is not None:
            rec = None if p.log_records is None or p.index is None else int(p.log_records[p.index[j]])
            trigger |= {"log": p.log, "record": rec}
        return alerts.build(user_id=w.user_id[j], score=score, threshold=thr, severity_steps=art.meta.severity,
                            model_version=art.version, event_time=int(p.event_time[j]), trigger=trigger,
                            trigger_event=p.trigger_event[j], window=events, explanation=explanation,
                            window_events=n, summary=summary)
