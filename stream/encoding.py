"""Windows -> fixed-length token ids and attention masks for a BERT-style model.

Each event becomes one composite token that carries its type, the log-scale bucket of
the time since the previous event in the window, whether its item already appeared
earlier in the window, whether its gap repeats the previous gap within 10 % (machine-
regular timing: people's gaps vary from one event to the next, scripts' do not; a log
bucket alone cannot see a bot that waits 45 s every time), and its price bucket. A sequence is ``[CLS] e_1 .. e_k [PAD]..``
with the newest ``max_events`` events, oldest first; the window of a session that has
just ended (stream.windows, session end) is ``[CLS] e_1 .. e_k [END] [PAD]..``, so the
model can learn which endings are normal.

A classifier's vocabulary also has *shape* tokens (``Vocabulary.shape``): right after CLS,
one token per window-level feature - how many events, how fast (events per minute over the
window's span), how regular (coefficient of variation of the gaps), how narrow (distinct-
item share, the most repeated item's share and count), the typical gap (geometric mean) and
how often it retraces an item-to-item step it took before - each a bucket computed from the
exact timestamps and items. A run that repeats itself then carries
its evidence as a whole: the longer a click farm loops over two items on a steady clock,
the more its shape says so, whereas per-token evidence is only ever one event's. Zero-label
models leave them out: their score is the newest event's surprise, and a shape computed
over the whole window would tell the model what that event was. The vocabulary (event types seen in
training, bucket edges, sizes) is learned from training data and saved inside the model
artifact; types it has never seen map to the unknown type.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from stream.window_defaults import DEFAULT_MAX_EVENTS
from stream.windows import Windows

# 2: the [END] token of a closed session; 3: the regular-gap bit; 4: window-shape tokens;
# 5: the most repeated item's count and the repeated item-to-item transitions as shape tokens
ENCODING_VERSION = 5
#: A gap is "regular" when it differs from the previous gap by at most this share of the larger.
REGULAR_GAP_TOLERANCE = 0.1
PAD, CLS, MASK, END = 0, 1, 2, 3
#: Window-shape features (one token each, after CLS) and the bucket edges of each; bucket 0
#: means "not defined for this window" (too few events, no items).
SHAPE_FEATURES: tuple[tuple[str, tuple[float, ...]], ...] = (
    ("events", (2, 3, 5, 8, 12, 20, 32, 48)),
    ("events_per_min", (0.5, 1, 2, 4, 8, 15, 30, 60)),
    ("gap_cv", (0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.8, 1.2)),
    ("distinct_item_share", (0.15, 0.3, 0.45, 0.6, 0.75, 0.9, 0.999)),
    ("top_item_share", (0.15, 0.3, 0.45, 0.6, 0.75, 0.9, 0.999)),
    ("typical_gap_s", (1, 3, 10, 30, 100, 300, 1000)),
    # counts, not shares: a share cannot tell two clicks on one item from twenty (the shares of
    # a short session are as extreme as a click farm's), and the absolute count is what grows
    # as a loop, a fake-order cycle or a re-run script goes on
    ("top_item_count", (2, 3, 4, 6, 8, 12, 20, 32)),
    # item-to-item steps (a -> b, a != b) already taken earlier in the window: a path walked
    # again - a replayed session, a scripted promo path, a loop over several items - whatever
    # its pace; people rarely retrace the same step more than twice within the hour
    ("repeated_transitions", (1, 2, 3, 5, 8, 12, 20, 32)),
)
#: The shape features that count how far a run has gone within the hour (events, events on the
#: most repeated item, retraced steps): they only grow while an abuser goes on, so a window that
#: counts more than nearly every user the platform has is evidence by itself
#: (``Meta.run_ceiling``, Scorer.beyond_ceiling), whatever the classifier makes of its order.
RUN_COUNTS: tuple[str, ...] = ("events", "top_item_count", "repeated_transitions")
SHAPE_BINS = 10  # per feature: 0 (undefined) .. 9
SHAPE_BASE = 4  # shape token ids follow the four specials
N_SHAPE = len(SHAPE_FEATURES)
_RUN_COLUMNS = [[name for name, _ in SHAPE_FEATURES].index(name) for name in RUN_COUNTS]
#: Event tokens start here; everything below (specials, shape tokens) is not an event.
N_SPECIAL = SHAPE_BASE + N_SHAPE * SHAPE_BINS
UNK_TYPE = "<unk>"
#: Share of events of types the vocabulary does not know past which score, run and faust warn.
UNKNOWN_TYPES_WARN = 0.2
#: Inter-event time bucket edges (ms); bucket 0 means "first event in the window".
DEFAULT_DT_EDGES_MS: tuple[int, ...] = (1_000, 3_000, 10_000, 30_000, 100_000, 300_000, 1_000_000, 3_600_000)
DEFAULT_PRICE_EDGES: tuple[float, ...] = (10.0, 30.0, 100.0, 300.0, 1000.0)


@dataclass(frozen=True)
class Vocabulary:
    """Everything needed to turn a window into tokens; saved with the model."""

    types: tuple[str, ...] = (UNK_TYPE,)
    dt_edges_ms: tuple[int, ...] = DEFAULT_DT_EDGES_MS
    price_edges: tuple[float, ...] = DEFAULT_PRICE_EDGES
    max_events: int = DEFAULT_MAX_EVENTS
    shape: bool = True  # window-shape tokens after CLS (classifiers); zero-label models leave them out
    version: int = ENCODING_VERSION
    _index: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.types or self.types[0] != UNK_TYPE:
            raise ValueError(f"types[0] must be {UNK_TYPE!r}")
        self._index.update({t: i for i, t in enumerate(self.types)})

    @property
    def n_dt(self) -> int:
        return len(self.dt_edges_ms) + 2

    @property
    def n_price(self) -> int:
        return len(self.price_edges) + 2

    @property
    def size(self) -> int:
        """Number of token ids, special tokens included."""
        return N_SPECIAL + len(self.types) * self.n_dt * 4 * self.n_price

    @property
    def first_known_token(self) -> int:
        """Token ids below this are special or of the unknown type (types[0] lays out first)."""
        return N_SPECIAL + self.n_dt * 4 * self.n_price

    @property
    def n_shape(self) -> int:
        """Shape tokens after CLS (0 or :data:`N_SHAPE`)."""
        return N_SHAPE if self.shape else 0

    @property
    def seq_len(self) -> int:
        """Length of an encoded sequence: CLS, shape tokens, ``max_events`` events and room for END."""
        return self.max_events + 2 + self.n_shape

    def type_index(self, name: str) -> int:
        """Vocabulary index of an event type (0 = unknown)."""
        return self._index.get(name, 0)

    @classmethod
    def fit(
        cls,
        type_counts: Counter[str],
        prices: np.ndarray | None = None,
        *,
        min_count: int = 1,
        max_types: int = 512,
        max_events: int = DEFAULT_MAX_EVENTS,
        shape: bool = True,
    ) -> Vocabulary:
        """Learn a vocabulary: the ``max_types`` most frequent types seen ``min_count``+ times,
        and price bucket edges at quantiles of the observed prices."""
        kept = [t for t, c in type_counts.most_common(max_types) if c >= min_count and t != UNK_TYPE]
        price_edges = DEFAULT_PRICE_EDGES
        if prices is not None:
            p = prices[np.isfinite(prices)]
            if len(p) >= 10:
                edges = np.unique(np.quantile(p, [0.2, 0.4, 0.6, 0.8, 0.95]).round(2))
                price_edges = tuple(float(e) for e in edges)
        return cls(types=(UNK_TYPE, *sorted(kept)), price_edges=price_edges, max_events=max_events, shape=shape)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("_index")
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Vocabulary:
        version = d.get("version")
        if version != ENCODING_VERSION:
            raise ValueError(f"encoding version {version} is not supported (this build uses {ENCODING_VERSION})")
        return cls(
            types=tuple(d["types"]),
            dt_edges_ms=tuple(int(x) for x in d["dt_edges_ms"]),
            price_edges=tuple(float(x) for x in d["price_edges"]),
            max_events=int(d["max_events"]),
            shape=_bool(d["shape"]),
            version=version,
        )

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: Path) -> Vocabulary:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def token(self, type_i: np.ndarray, dt_b: np.ndarray, repeat: np.ndarray, regular: np.ndarray,
              price_b: np.ndarray) -> np.ndarray:
        """Token ids from their parts (the one place the layout is written; :meth:`parts` inverts it)."""
        return N_SPECIAL + (((type_i * self.n_dt + dt_b) * 2 + repeat) * 2 + regular) * self.n_price + price_b

    def parts(self, ids: np.ndarray) -> TokenParts:
        """Vectorised inverse of :meth:`token` for an array of token ids; special tokens get
        zeros and False."""
        ids = np.asarray(ids, dtype=np.int64)
        is_event = ids >= N_SPECIAL
        t = np.where(is_event, ids - N_SPECIAL, 0)
        t, price_b = np.divmod(t, self.n_price)
        t, regular = np.divmod(t, 2)
        t, rep = np.divmod(t, 2)
        type_i, dt_b = np.divmod(t, self.n_dt)
        return TokenParts(type_i, dt_b, rep.astype(bool), regular.astype(bool), price_b, is_event)

    def describe(self, token: int) -> dict:
        """Human-readable parts of a token id (for explanations and debugging)."""
        if token < SHAPE_BASE:
            return {"special": ("PAD", "CLS", "MASK", "END")[token]}
        if token < N_SPECIAL:
            f, b = divmod(token - SHAPE_BASE, SHAPE_BINS)
            return {"shape": SHAPE_FEATURES[f][0], "bucket": b}
        p = self.parts(np.array(token))
        return {"type": self.types[int(p.type)], "dt_bucket": int(p.dt_bucket), "repeat": bool(p.repeat),
                "regular": bool(p.regular), "price_bucket": int(p.price_bucket)}


def _bool(v: object) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"vocabulary field shape must be true or false, got {v!r}")
    return v


class TokenParts(NamedTuple):
    """The parts of token ids, each an array shaped like the ids."""

    type: np.ndarray  # index into Vocabulary.types (0 = unknown)
    dt_bucket: np.ndarray  # 0 = first event in the window
    repeat: np.ndarray  # the item appeared earlier in the window
    regular: np.ndarray  # the gap repeats the previous gap within REGULAR_GAP_TOLERANCE
    price_bucket: np.ndarray  # 0 = no price
    is_event: np.ndarray  # False for special tokens


@dataclass(slots=True)
class Encoded:
    """A batch of encoded windows: ``input_ids``/``attention_mask`` are int64 [B, seq_len]."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    length: np.ndarray  # events per sequence (CLS not counted)
    #: int32 [B, len(RUN_COUNTS)], the window's RUN_COUNTS (0 where undefined); None when the
    #: vocabulary has no shape tokens (zero-label models) or the ids were made without windows
    run_counts: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.length)

    def take(self, idx: np.ndarray) -> Encoded:
        """The windows at ``idx`` (indices or boolean mask)."""
        counts = None if self.run_counts is None else self.run_counts[idx]
        return Encoded(self.input_ids[idx], self.attention_mask[idx], self.length[idx], counts)

    @staticmethod
    def concat(parts: Sequence[Encoded]) -> Encoded:
        """One batch of ``parts`` in order (run counts kept only when every part has them)."""
        counts = [e.run_counts for e in parts]
        return Encoded(np.concatenate([e.input_ids for e in parts]), np.concatenate([e.attention_mask for e in parts]),
                       np.concatenate([e.length for e in parts]),
                       None if any(c is None for c in counts) else np.concatenate(counts))


def encode(windows: Windows, type_names: list[str], vocab: Vocabulary, closing: bool = False) -> Encoded:
    """Encode a batch of windows read from a store whose type table is ``type_names``;
    ``closing`` marks them as windows of ended sessions (an END token follows the events)."""
    b = len(windows)
    e = vocab.max_events
    # keep the newest `e` columns of the store's right-aligned rows
    ts, types, items, prices = (a[:, -e:] for a in (windows.ts, windows.type, windows.item, windows.price))
    n = ts.shape[1]
    length = np.minimum(windows.length, n)
    valid = np.arange(n)[None, :] >= (n - length)[:, None]

    uniq, inv = np.unique(types, return_inverse=True)
    lut = np.array([vocab.type_index(type_names[t]) for t in uniq.tolist()], dtype=np.int64)
    type_idx = lut[inv.reshape(types.shape)]

    dt = np.diff(ts, axis=1, prepend=ts[:, :1])
    has_prev = np.zeros_like(valid)
    has_prev[:, 1:] = valid[:, :-1]
    dt_b = np.where(has_prev, 1 + np.searchsorted(np.asarray(vocab.dt_edges_ms), dt, side="right"), 0)
    prev_dt = np.zeros_like(dt)
    prev_dt[:, 1:] = dt[:, :-1]
    has_prev_gap = np.zeros_like(valid)
    has_prev_gap[:, 2:] = valid[:, :-2]
    regular = has_prev_gap & (np.abs(dt - prev_dt) <= REGULAR_GAP_TOLERANCE * np.maximum(dt, prev_dt))

    same = items[:, :, None] == items[:, None, :]
    earlier = np.tril(np.ones((n, n), dtype=bool), k=-1)[None]
    repeat = (same & earlier & valid[:, None, :]).any(axis=2) & (items != 0)

    price_b = np.where(
        np.isnan(prices), 0, 1 + np.searchsorted(np.asarray(vocab.price_edges), np.nan_to_num(prices), side="right")
    )
    tokens = vocab.token(type_idx, dt_b, repeat, regular, price_b)

    # right-aligned (store layout) -> left-aligned after CLS and the shape tokens (model layout)
    h = 1 + vocab.n_shape
    src = np.clip((n - length)[:, None] + np.arange(e)[None, :], 0, n - 1)
    keep = np.arange(e)[None, :] < length[:, None]
    ids = np.full((b, vocab.seq_len), PAD, dtype=np.int64)
    ids[:, 0] = CLS
    ids[:, h : h + e] = np.where(keep, np.take_along_axis(tokens, src, axis=1), PAD)
    mask = np.zeros((b, vocab.seq_len), dtype=np.int64)
    mask[:, :h] = 1
    mask[:, h : h + e] = keep
    counts = None
    if vocab.shape:
        features = shape_features(ts, items, valid, dt, has_prev)
        ids[:, 1:h] = shape_tokens(features)
        counts = np.nan_to_num(features[:, _RUN_COLUMNS], nan=0.0).astype(np.int32)
    if closing:
        ids[np.arange(b), length + h] = END
        mask[np.arange(b), length + h] = 1
    return Encoded(ids, mask, length.astype(np.int64), counts)



def type_counts(input_ids: np.ndarray, vocab: Vocabulary) -> np.ndarray:
    """int32 [B, len(vocab.types)]: how many events of each vocabulary type each window holds
    (column 0: types the vocabulary does not know; CLS, shape tokens, END and padding count
    nothing). Read from the token ids, so it is the same for both model kinds and for every
    window the scorer sees (``Meta.type_ceiling``, Scorer.beyond_type_ceiling)."""
    ids = np.asarray(input_ids)
    parts = vocab.parts(ids)
    b, k = len(ids), len(vocab.types)
    rows = np.broadcast_to(np.arange(b)[:, None], ids.shape)
    flat = (rows * k + parts.type)[parts.is_event]
    return np.bincount(flat, minlength=b * k).reshape(b, k).astype(np.int32)


def ended_window_events(input_ids: np.ndarray, attention_mask: np.ndarray, vocab: Vocabulary) -> np.ndarray:
    """Events each window of an ended session holds (CLS, shape tokens and END not counted);
    -1 for the windows of sessions still open."""
    closed = (input_ids == END).any(1)
    return np.where(closed, attention_mask.sum(1) - 2 - vocab.n_shape, -1)


def shape_features(ts: np.ndarray, items: np.ndarray, valid: np.ndarray, dt: np.ndarray,
                   has_gap: np.ndarray) -> np.ndarray:
    """Window-level features (float64 [B, N_SHAPE], NaN = undefined), in SHAPE_FEATURES order.

    ``ts``/``items``/``valid`` are the store's right-aligned columns, ``dt`` each event's gap
    to the previous column and ``has_gap`` where that gap lies inside the window.
    """
    b, n = ts.shape
    count = valid.sum(1)
    gaps = np.where(has_gap, dt, 0).astype(np.float64)
    n_gaps = has_gap.sum(1)
    span_min = gaps.sum(1) / 60_000
    mean = gaps.sum(1) / np.maximum(n_gaps, 1)
    var = (np.where(has_gap, (gaps - mean[:, None]) ** 2, 0.0)).sum(1) / np.maximum(n_gaps, 1)
    log_gap = np.where(has_gap, np.log(np.maximum(gaps, 1.0)), 0.0).sum(1) / np.maximum(n_gaps, 1)
    # items: every empty slot and every event without an item counts as its own distinct value
    cols = np.broadcast_to(np.arange(n), (b, n))
    has_item = valid & (items != 0)
    key = np.where(has_item, items.astype(np.int64), -1 - cols)
    srt = np.sort(key, axis=1)
    new = np.ones((b, n), dtype=bool)
    new[:, 1:] = srt[:, 1:] != srt[:, :-1]
    distinct = new.sum(1) - (n - has_item.sum(1))  # distinct real items
    run = np.cumsum(new, axis=1) - 1
    counts = np.bincount((np.arange(b)[:, None] * n + run).ravel(), weights=(srt >= 0).ravel(), minlength=b * n)
    top = counts.reshape(b, n).max(1)
    n_items = has_item.sum(1)
    step, retraced = retraced_steps(items, has_gap)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.stack([
            count.astype(np.float64),
            np.where(n_gaps > 0, n_gaps / np.maximum(span_min, 1 / 60), np.nan),
            np.where((n_gaps >= 2) & (mean > 0), np.sqrt(var) / mean, np.nan),
            np.where(n_items >= 2, distinct / n_items, np.nan),
            np.where(n_items >= 2, top / n_items, np.nan),
            np.where(n_gaps > 0, np.exp(log_gap) / 1000, np.nan),
            np.where(n_items >= 2, top, np.nan),
            np.where(step.sum(1) >= 2, retraced.sum(1), np.nan),
        ], axis=1)  # fmt: skip
    return out


def retraced_steps(items: np.ndarray, has_gap: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each window (rows of item hashes, 0 = none) steps from one item to another, and
    where that step a -> b was already taken earlier in the same window (both bool, shaped like
    ``items``; ``has_gap``: where the previous column is in the window). A path walked again."""
    n = items.shape[1]
    prev = np.zeros_like(items)
    prev[:, 1:] = items[:, :-1]
    step = has_gap & (items != 0) & (prev != 0) & (prev != items)
    same_step = (items[:, :, None] == items[:, None, :]) & (prev[:, :, None] == prev[:, None, :])
    earlier = np.tril(np.ones((n, n), dtype=bool), k=-1)[None]
    return step, (same_step & earlier & step[:, None, :]).any(2) & step


def shape_tokens(features: np.ndarray) -> np.ndarray:
    """Token ids of :func:`shape_features` values: one bucket per feature, 0 where undefined."""
    out = np.empty(features.shape, dtype=np.int64)
    for f, (_, edges) in enumerate(SHAPE_FEATURES):
        v = features[:, f]
        bucket = np.where(np.isnan(v), 0, 1 + np.searchsorted(np.asarray(edges, dtype=np.float64), np.nan_to_num(v),
                                                               side="right"))
        out[:, f] = SHAPE_BASE + f * SHAPE_BINS + bucket
    return out


def fit_vocabulary(events: Iterable, *, max_events: int = DEFAULT_MAX_EVENTS, min_count: int = 1, shape: bool = True) -> Vocabulary:
    """Learn a vocabulary from an iterable of :class:`~stream.events.EventBatch` (training logs)."""
    counts: Counter[str] = Counter()
    prices: list[np.ndarray] = []
    for batch in events:
        counts.update(batch.type)
        prices.append(batch.price[np.isfinite(batch.price)])
    all_prices = np.concatenate(prices) if prices else None
    return Vocabulary.fit(counts, all_prices, min_count=min_count, max_events=max_events, shape=shape)
