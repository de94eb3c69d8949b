"""Models: build a BERT for the encoding, score windows with a loaded artifact, explain scores.

``kind`` is ``classifier`` (fine-tuned BertForSequenceClassification, score = P(attack))
or ``mlm`` (zero-label: BertForMaskedLM, score = surprise of the window's newest event -
or of its END for a closed session - given the events before it, in nats).
Both are served through :class:`Scorer`, so the rest of seqsentry does not care which.
Artifacts on disk (save, verify, load): :mod:`stream.artifact`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import BertConfig, BertForMaskedLM

from stream.artifact import Artifact, load_artifact
from stream.encoding import END, MASK, N_SPECIAL, PAD, Encoded, Vocabulary, ended_window_events, type_counts
from stream.errors import SeqsentryError


@dataclass(frozen=True)
class ModelSize:
    """Transformer size; the default trains on 2 CPU cores in minutes."""

    layers: int = 2
    hidden: int = 64
    heads: int = 4
    intermediate: int = 128
    dropout: float = 0.1


def bert_config(vocab: Vocabulary, size: ModelSize, num_labels: int = 1) -> BertConfig:
    """A BERT config for this vocabulary (built locally, never fetched from a hub)."""
    return BertConfig(
        vocab_size=vocab.size,
        hidden_size=size.hidden,
        num_hidden_layers=size.layers,
        num_attention_heads=size.heads,
        intermediate_size=size.intermediate,
        max_position_embeddings=vocab.seq_len,
        type_vocab_size=1,
        hidden_dropout_prob=size.dropout,
        attention_probs_dropout_prob=size.dropout,
        pad_token_id=PAD,
        num_labels=num_labels,
    )


def pick_device(requested: str = "auto") -> str:
    """``auto`` -> cuda when available else cpu; asking for cuda without one is an error."""
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise SeqsentryError("--device cuda was asked for but no CUDA device is available; use --device cpu or auto")
    return requested


#: Surprise of a token the model cannot have predicted (an event type never seen in training):
#: a probability of about 1e-13, finite so that scores stay valid JSON.
UNSEEN_SURPRISE = 30.0
#: A classifier's score for a window completed by an event of a type never seen in training.
UNSEEN_CLASSIFIER_SCORE = 1.0


@torch.inference_mode()
def next_surprise(model: BertForMaskedLM, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                  impossible: int = N_SPECIAL) -> torch.Tensor:
    """Zero-label score: -log p(newest token | the events before it), in nats.

    The newest position (the triggering event, or END for a closed session) is masked and
    predicted from its context - DeepLog's "is this what comes next?", one forward pass per
    window. Every event's window is scored, so every event is judged once, and a user's
    evidence is the maximum over its events (the first one past the threshold alerts):
    it is never averaged away by the normal events around it. Token ids below
    ``impossible`` - the special tokens but END, and every token of the unknown type, which
    training never holds - get probability 0: an event type never seen in training scores
    :data:`UNSEEN_SURPRISE`, DeepLog's "an unseen key is an anomaly".
    """
    b = input_ids.shape[0]
    rows = torch.arange(b, device=input_ids.device)
    last = attention_mask.sum(1) - 1
    target = input_ids[rows, last]
    masked = input_ids.clone()
    masked[rows, last] = MASK
    hidden = model.bert(input_ids=masked, attention_mask=attention_mask).last_hidden_state[rows, last]
    logits = model.cls(hidden).float()
    never = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
    never[:impossible] = True
    never[END] = False
    logits = logits.masked_fill(never, float("-inf"))
    nll = -torch.log_softmax(logits, dim=-1).gather(-1, target.unsqueeze(-1)).squeeze(-1)
    return nll.clamp(max=UNSEEN_SURPRISE)


def _logits_to_scores(model: torch.nn.Module, art: Artifact, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    if art.meta.kind == "classifier":
        return torch.sigmoid(model(input_ids=ids, attention_mask=mask).logits.float()[:, 0])
    return next_surprise(model, ids, mask, art.vocab.first_known_token)


@dataclass
class Scorer:
    """Scores encoded windows with one artifact on one device (fp16 on CUDA, ONNX Runtime on CPU)."""

    artifact: Artifact
    device: str = "cpu"
    half: bool = False
    onnx: object | None = None  # stream.onnx_runtime.OnnxClassifier when serving with ONNX Runtime

    @property
    def runtime(self) -> str:
        return "onnxruntime" if self.onnx is not None else "torch"

    @classmethod
    def load(cls, path: Path | str, device: str = "auto", runtime: str = "auto") -> Scorer:
        """Load a verified artifact for serving.

        ``runtime``: ``torch``, ``onnx`` (CPU classifiers; an error if ONNX Runtime is not
        installed) or ``auto`` (ONNX Runtime for a classifier on CPU when installed).
        """
        if runtime not in ("auto", "torch", "onnx"):
            raise SeqsentryError(f"unknown runtime {runtime!r}; choose auto, torch or onnx")
        dev = pick_device(device)
        art = load_artifact(path, dev)
        half = dev.startswith("cuda")
        if half:
            art.model.half()
        from stream import onnx_runtime

        onnx = None
        if runtime == "onnx" or (runtime == "auto" and onnx_runtime.available()):
            usable = dev == "cpu" and art.meta.kind == "classifier"
            if runtime == "onnx" and not (usable and onnx_runtime.available()):
                raise SeqsentryError("--runtime onnx serves classifiers on CPU and needs onnxruntime and onnx installed")
            if usable:
                onnx = onnx_runtime.OnnxClassifier(art.model, serving_thread_count())
        return cls(art, dev, half, onnx)

    def score(self, enc: Encoded, batch_size: int = 512, floor: float | None = None) -> np.ndarray:
        """Scores for a batch of encoded windows (higher = more anomalous), as alerts use them.

        With ``meta.sustain`` k > 1 (classifiers), a window scoring at least ``floor`` (default:
        the threshold) scores the lowest of itself and the same window without its newest
        1 .. k-1 events - the evidence must hold for k consecutive events (the window-shape
        tokens are the whole window's and stay). One odd window of a
        normal user (a lone fast gap that also starts every scraping run) then does not alert,
        while an attack does: every window after its first attack event still holds it. A
        window with fewer than k tokens scores 0. An ended session's window (END) keeps its own
        score: no later event can sustain it, and what is missing at a session's end (a
        sequence cut short) is evidence only that window holds. Below ``floor`` a window's
        score is its own, and a window whose lowest so far falls below ``floor`` is not scored
        further (alerts only ask whether it stays above); ``floor=-inf`` gives exact scores for
        every window (training, reports). The prefixes are the window's own events, so live
        and offline scoring of the same events agree. A classifier's window whose newest event
        has a type training never saw scores :data:`UNSEEN_CLASSIFIER_SCORE` (one such event is
        the evidence, as for zero-label models), and so does - for either kind - a window that
        :meth:`ended_too_soon` or is :meth:`beyond_type_ceiling`, and a classifier's window
        :meth:`beyond_ceiling`.
        """
        s = self.score_windows(enc, batch_size)
        meta = self.artifact.meta
        unseen = self._newest_is_unseen(enc) if meta.kind == "classifier" else np.zeros(len(s), dtype=bool)
        k = meta.sustain
        if k > 1:
            s = self._sustain(enc, s, k, meta.threshold if floor is None else floor, batch_size)
        unseen |= self.ended_too_soon(enc) | self.beyond_ceiling(enc) | self.beyond_type_ceiling(enc)
        if unseen.any():
            s[unseen] = UNSEEN_CLASSIFIER_SCORE if meta.kind == "classifier" else UNSEEN_SURPRISE
        return s

    def ended_too_soon(self, enc: Encoded) -> np.ndarray:
        """Windows of an ended session holding fewer events than ``meta.min_ended_events``: no
        normal session of the training log ended so soon (a block that stopped after two steps,
        a checkout abandoned before any view). Like an unseen event type, it is evidence on its
        own: the model's own estimate of an END it never saw there is soft (HDFS: 8 nats after
        two events, where the threshold was 8.04), the lookup's is not; training turns the rule
        on only when enough sessions ended to make it rare for normal users."""
        if not self.artifact.meta.min_ended_events:
            return np.zeros(len(enc), dtype=bool)
        events = ended_window_events(enc.input_ids, enc.attention_mask, self.artifact.vocab)
        return (events >= 0) & (events < self.artifact.meta.min_ended_events)

    def beyond_ceiling(self, enc: Encoded) -> np.ndarray:
        """Windows whose run counts (events in the window, events on its most repeated item,
        retraced item-to-item steps: ``Encoded.run_counts``) exceed ``meta.run_ceiling``, what
        all but a handful of the training log's normal users stayed within. Like an unseen
        event type it is evidence on its own: these counts only grow while a loop, a fake-order
        cycle or a takeover goes on, and a classifier, which learnt them as tokens among others,
        does not promise that more of them never scores lower (human-paced brushing, 35 events,
        20-32 on one item: 0.86 under a 0.95 line; YOOCHOOSE with the rule: 205 -> 212 of 240
        attackers caught, 20 -> 21 of 4,560 normal users). Training turns the rule on only when
        the log has users enough to make it rare (training.train.run_ceiling)."""
        ceiling = self.artifact.meta.run_ceiling
        if not ceiling or not len(enc):
            return np.zeros(len(enc), dtype=bool)
        if enc.run_counts is None:
            raise SeqsentryError("this model's run-count rule (meta.run_ceiling) needs windows encoded from events")
        return (enc.run_counts > np.asarray(ceiling, dtype=np.int64)).any(1)

    def beyond_type_ceiling(self, enc: Encoded) -> np.ndarray:
        """Windows holding more events of some type than any normal training user's window did
        (``meta.type_ceiling``; :func:`stream.encoding.type_counts`): a block that logged a step
        four times where every normal block logged it at most three, a fifth purchase within the
        hour where no shopper made more than four. Like an unseen event type it is evidence on
        its own: a zero-label model scores one event's surprise, and a step that repeats what
        the block just did is not surprising (HDFS: 469 abnormal blocks at most 6.8 nats under
        an 8.04 line, 887 of their pattern's 1,035 with a count no normal block reached).
        Training sets it for zero-label models, and only when such a count is rare among its own
        users (training.train.type_ceiling); applied here to whichever kind carries one."""
        if not self.artifact.meta.type_ceiling or not len(enc):
            return np.zeros(len(enc), dtype=bool)
        counts, limit = _type_counts_and_limit(self.artifact, enc)
        return (counts > limit).any(1)

    def _newest_is_unseen(self, enc: Encoded) -> np.ndarray:
        """Windows whose newest event (the one before END for an ended session) has a type the
        vocabulary never saw: a classifier's output on a token it never trained on means
        nothing, and an event type training never saw is evidence on its own (the lookup a
        fraud team tries first; zero-label models score it as impossible)."""
        ids = enc.input_ids
        last = enc.attention_mask.sum(1) - 1
        rows = np.arange(len(ids))
        last = np.where(ids[rows, last] == END, last - 1, last)
        tok = ids[rows, last]
        return (tok >= N_SPECIAL) & (tok < self.artifact.vocab.first_known_token)

    def _sustain(self, enc: Encoded, s: np.ndarray, k: int, floor: float, batch_size: int) -> np.ndarray:
        """The sustained scores of :meth:`score` (k > 1)."""
        rows = np.flatnonzero(s >= floor)
        rows = rows[~(enc.input_ids[rows] == END).any(1)]
        tokens = enc.attention_mask[rows].sum(1) - 1  # tokens after CLS: shape tokens, then events (no END here)
        events = tokens - self.artifact.vocab.n_shape
        cols = np.arange(enc.input_ids.shape[1])[None, :]
        for j in range(1, k):
            if not len(rows):
                break
            has = events > j
            s[rows[~has]] = 0.0
            rows, tokens, events = rows[has], tokens[has], events[has]
            drop = cols >= (tokens - j + 1)[:, None]  # the newest j tokens
            ids = np.where(drop, PAD, enc.input_ids[rows])
            mask = np.where(drop, 0, enc.attention_mask[rows])
            s[rows] = np.minimum(s[rows], self.score_windows(Encoded(ids, mask, (ids >= N_SPECIAL).sum(1)), batch_size))
            keep = s[rows] >= floor
            rows, tokens, events = rows[keep], tokens[keep], events[keep]
        return s

    @torch.inference_mode()
    def score_windows(self, enc: Encoded, batch_size: int = 512) -> np.ndarray:
        """Each window's own score: P(attack) for a classifier, the newest token's surprise for mlm."""
        out = np.empty(len(enc), dtype=np.float32)
        seq = int(enc.attention_mask.sum(1).max()) if len(enc) else 1  # trim padding columns
        pin = self.device.startswith("cuda")
        for i in range(0, len(enc), batch_size):
            ids_np = np.ascontiguousarray(enc.input_ids[i : i + batch_size, :seq])
            mask_np = np.ascontiguousarray(enc.attention_mask[i : i + batch_size, :seq])
            if self.onnx is not None:
                out[i : i + len(ids_np)] = self.onnx(ids_np, mask_np)
                continue
            ids, mask = torch.from_numpy(ids_np), torch.from_numpy(mask_np)
            if pin:
                ids, mask = ids.pin_memory(), mask.pin_memory()
            ids = ids.to(self.device, non_blocking=True)
            mask = mask.to(self.device, non_blocking=True)
            out[i : i + len(ids)] = _logits_to_scores(self.artifact.model, self.artifact, ids, mask).cpu().numpy()
        return out

    def explain(self, enc: Encoded, row: int, top: int = 5) -> list[tuple[int, float]]:
        """Which events of window ``row`` drove its score: (event position, weight) by occlusion.

        Each event is replaced by [MASK] in turn; its weight is how much the score drops.
        Positions index the window's events oldest-first (0 = oldest kept); position
        ``length`` is the END of a closed session. A zero-label score is the surprise of the
        newest token itself, so that token's weight is the whole score.
        """
        return self.explain_many(enc, [row], top)[0]

    def explain_many(self, enc: Encoded, rows: list[int], top: int = 5) -> list[list[tuple[int, float]]]:
        """:meth:`explain` for several windows, with every occluded copy scored in one batched call
        (an alert burst costs a few batches, not a model call per alert)."""
        h = 1 + self.artifact.vocab.n_shape  # events start after CLS and the shape tokens
        sizes = [int(enc.attention_mask[r].sum()) - h for r in rows]  # events (+ END)
        if not rows or not sum(sizes):
            return [[] for _ in rows]
        src = np.repeat(np.asarray(rows), np.asarray(sizes) + 1)
        ids, mask = enc.input_ids[src].copy(), enc.attention_mask[src]
        starts = np.r_[0, np.cumsum(np.asarray(sizes) + 1)[:-1]]
        for start, n in zip(starts.tolist(), sizes, strict=True):
            ids[np.arange(start + 1, start + n + 1), np.arange(h, h + n)] = MASK
        scores = self.score_windows(Encoded(ids, mask, enc.length[src]))
        out = []
        for start, n in zip(starts.tolist(), sizes, strict=True):
            if n == 0:
                out.append([])
                continue
            weights = scores[start] - scores[start + 1 : start + n + 1]
            if self.artifact.meta.kind == "mlm":
                weights[-1] = scores[start]
            order = np.argsort(-weights, kind="stable")[:top]
            out.append([(int(i), float(weights[i])) for i in order])
        return out


def serving_thread_count() -> int:
    """SEQSENTRY_TORCH_THREADS, else all cores but one (also ONNX Runtime's intra-op threads)."""
    n = os.environ.get("SEQSENTRY_TORCH_THREADS")
    return int(n) if n else max(1, (os.cpu_count() or 1) - 1)


def serving_threads(device: str) -> int:
    """Torch CPU threads for serving: SEQSENTRY_TORCH_THREADS, else all cores but one.

    The consumer thread (fetch, parse, windows) needs a core of its own: on 2 cores, 1
    torch thread streams ~40 % more windows/s than 2 (bench/race.py, docs/benchmarks.md).
    """
    threads = serving_thread_count()
    if device == "cpu":
        torch.set_num_threads(threads)
    return threads


def types_beyond_ceiling(artifact: Artifact, enc: Encoded) -> list[list[tuple[str, int, int]]]:
    """Per window, each type it holds more events of than the artifact's ``meta.type_ceiling``
    allows, as (type, events, ceiling): what :meth:`Scorer.beyond_type_ceiling` acted on, for the
    alert to name."""
    if not artifact.meta.type_ceiling or not len(enc):
        return [[] for _ in range(len(enc))]
    counts, limit = _type_counts_and_limit(artifact, enc)
    names = artifact.vocab.types
    return [[(names[t], int(counts[r, t]), int(limit[t])) for t in np.flatnonzero(counts[r] > limit).tolist()]
            for r in range(len(enc))]


def _type_counts_and_limit(artifact: Artifact, enc: Encoded) -> tuple[np.ndarray, np.ndarray]:
    # column 0 holds types the vocabulary never saw: the unseen-type rules judge those
    limit = np.asarray([np.iinfo(np.int64).max, *artifact.meta.type_ceiling], dtype=np.int64)
    return type_counts(enc.input_ids, artifact.vocab), limit
