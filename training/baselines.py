"""Baselines scored on exactly the same windows as the transformer.

* ``isolation_forest`` - scikit-learn IsolationForest on per-window count and timing
  features (event-type shares, inter-event-gap bucket shares, repeat share, price-bucket
  shares, window length), all read back from the window's tokens.
* ``markov`` - a first-order Markov chain over (event type, gap bucket) states fitted on
  normal training windows; a window's score is its mean transition surprise (-log p).
"""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import IsolationForest

from stream.encoding import Vocabulary
from training.dataset import WindowSet


def window_features(ws: WindowSet, vocab: Vocabulary) -> np.ndarray:
    """[M, F] float32 features: shares of types, gap buckets, price buckets; repeat and regular-gap
    shares; length."""
    p = vocab.parts(ws.input_ids)
    type_i, dt_b, rep, price_b, ev = p.type, p.dt_bucket, p.repeat, p.price_bucket, p.is_event
    n = np.maximum(ev.sum(1, keepdims=True), 1)

    def shares(values: np.ndarray, k: int) -> np.ndarray:
        onehot = np.zeros((len(values), k), dtype=np.float32)
        rows = np.repeat(np.arange(len(values)), values.shape[1])
        np.add.at(onehot, (rows, values.ravel()), ev.ravel().astype(np.float32))
        return onehot / n

    return np.hstack([
        shares(type_i, len(vocab.types)), shares(dt_b, vocab.n_dt), shares(price_b, vocab.n_price),
        (rep & ev).sum(1, keepdims=True) / n, (p.regular & ev).sum(1, keepdims=True) / n,
        ev.sum(1, keepdims=True) / vocab.max_events,
    ]).astype(np.float32)


class IsolationForestBaseline:
    def __init__(self, vocab: Vocabulary, seed: int = 0) -> None:
        self.vocab = vocab
        self.model = IsolationForest(n_estimators=200, random_state=seed, n_jobs=-1)

    def fit(self, ws: WindowSet) -> IsolationForestBaseline:
        self.model.fit(window_features(ws, self.vocab))
        return self

    def score(self, ws: WindowSet) -> np.ndarray:
        return -self.model.score_samples(window_features(ws, self.vocab))  # higher = more anomalous


class MarkovBaseline:
    def __init__(self, vocab: Vocabulary, alpha: float = 0.1) -> None:
        self.vocab = vocab
        self.alpha = alpha
        self.k = len(vocab.types) * vocab.n_dt

    def _states(self, ws: WindowSet) -> tuple[np.ndarray, np.ndarray]:
        p = self.vocab.parts(ws.input_ids)
        return p.type * self.vocab.n_dt + p.dt_bucket, p.is_event

    def fit(self, ws: WindowSet) -> MarkovBaseline:
        st, ev = self._states(ws)
        pair = ev[:, 1:] & ev[:, :-1]
        counts = np.zeros((self.k, self.k))
        np.add.at(counts, (st[:, :-1][pair], st[:, 1:][pair]), 1)
        first = np.zeros(self.k)
        np.add.at(first, st[:, 1][ev[:, 1]], 1)
        self.log_trans = np.log((counts + self.alpha) / (counts + self.alpha).sum(1, keepdims=True))
        self.log_first = np.log((first + self.alpha) / (first + self.alpha).sum())
        return self

    def score(self, ws: WindowSet) -> np.ndarray:
        st, ev = self._states(ws)
        pair = ev[:, 1:] & ev[:, :-1]
        nll = -np.where(pair, self.log_trans[st[:, :-1], st[:, 1:]], 0).sum(1)
        nll -= np.where(ev[:, 1], self.log_first[st[:, 1]], 0)
        return nll / np.maximum(ev.sum(1), 1)
