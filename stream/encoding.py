"""Windows -> fixed-length token ids and attention masks for a BERT-style model.

Each event becomes one composite token that carries its type, the log-scale bucket of
the time since the previous event in the window, whether its item already appeared
earlier in the window, whether its gap repeats the previous gap within 10 % (machine-
regular timing: people's gaps vary from one event to the next, scripts' do not; a log
bucket alone cannot see a bot that waits 45 s every time), and its price bucket. A sequence is ``[CLS] e_1 .. e_k [PAD]..``
with the newest ``max_events`` events, oldest first; the window of a session that has
just ended (stream.windows, session end) is ``[CLS] e_1 .. e_k [END] [PAD]..``, so the
model can learn which endings are normal. The vocabulary (event types seen in
training, bucket edges, sizes) is learned from training data and saved inside the model
artifact; types it has never seen map to the unknown type.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from stream.windows import Windows

ENCODING_VERSION = 3  # 2: the [END] token of a closed session (sequences max_events + 2 long); 3: the regular-gap bit
#: A gap is "regular" when it differs from the previous gap by at most this share of the larger.
REGULAR_GAP_TOLERANCE = 0.1
PAD, CLS, MASK, END = 0, 1, 2, 3
N_SPECIAL = 4
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
    max_events: int = 64
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
    def seq_len(self) -> int:
        """Length of an encoded sequence: CLS, ``max_events`` events and room for END."""
        return self.max_events + 2

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
        max_events: int = 64,
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
        return cls(types=(UNK_TYPE, *sorted(kept)), price_edges=price_edges, max_events=max_events)

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
        if token < N_SPECIAL:
            return {"special": ("PAD", "CLS", "MASK", "END")[token]}
        p = self.parts(np.array(token))
        return {"type": self.types[int(p.type)], "dt_bucket": int(p.dt_bucket), "repeat": bool(p.repeat),
                "regular": bool(p.regular), "price_bucket": int(p.price_bucket)}


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

    def __len__(self) -> int:
        return len(self.length)


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

    # right-aligned (store layout) -> left-aligned after CLS (model layout)
    src = np.clip((n - length)[:, None] + np.arange(e)[None, :], 0, n - 1)
    keep = np.arange(e)[None, :] < length[:, None]
    ids = np.full((b, e + 2), PAD, dtype=np.int64)
    ids[:, 0] = CLS
    ids[:, 1 : e + 1] = np.where(keep, np.take_along_axis(tokens, src, axis=1), PAD)
    mask = np.zeros((b, e + 2), dtype=np.int64)
    mask[:, 0] = 1
    mask[:, 1 : e + 1] = keep
    if closing:
        ids[np.arange(b), length + 1] = END
        mask[np.arange(b), length + 1] = 1
    return Encoded(ids, mask, length.astype(np.int64))


def fit_vocabulary(events: Iterable, *, max_events: int = 64, min_count: int = 1) -> Vocabulary:
    """Learn a vocabulary from an iterable of :class:`~stream.events.EventBatch` (training logs)."""
    counts: Counter[str] = Counter()
    prices: list[np.ndarray] = []
    for batch in events:
        counts.update(batch.type)
        prices.append(batch.price[np.isfinite(batch.price)])
    all_prices = np.concatenate(prices) if prices else None
    return Vocabulary.fit(counts, all_prices, min_count=min_count, max_events=max_events)
