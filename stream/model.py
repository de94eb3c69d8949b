"""Model artifacts: build, save, load (safetensors only, checksummed), score and explain.

An artifact is a directory::

    model.safetensors   weights (never a pickle)
    config.json         the transformers BertConfig
    vocab.json          the encoding vocabulary (stream.encoding), with its version
    meta.json           version id, kind, threshold, window config, data fingerprint,
                        metrics, and sha256 of every file above

``kind`` is ``classifier`` (fine-tuned BertForSequenceClassification, score = P(attack))
or ``mlm`` (zero-label: BertForMaskedLM, score = surprise of the window's newest event -
or of its END for a closed session - given the events before it, in nats).
Both are served through :class:`Scorer`, so the rest of seqsentry does not care which.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_model, save_model
from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification

from stream.encoding import ENCODING_VERSION, END, MASK, N_SPECIAL, PAD, Encoded, Vocabulary
from stream.errors import SeqsentryError
from stream.windows import WindowConfig

log = logging.getLogger(__name__)
ARTIFACT_FILES = ("model.safetensors", "config.json", "vocab.json")
KINDS = ("classifier", "mlm")


class ArtifactError(SeqsentryError, ValueError):
    """An artifact that cannot be served: missing, corrupt, incompatible or unsafe."""


#: What an artifact may ask of the serving process, checked before anything is allocated:
#: far above any model seqsentry trains (2 x 64 by default), far below what would hurt a host.
LIMITS = {"hidden_size": 2048, "num_hidden_layers": 48, "num_attention_heads": 64, "intermediate_size": 16_384,
          "vocab_size": 2_000_000, "max_events": 1024, "parameters": 500_000_000, "file_bytes": 2_000_000_000}


def _check_limits(path: Path, config: BertConfig, vocab: Vocabulary, window: dict) -> None:
    """Refuse dimensions, parameter counts and window lengths past :data:`LIMITS` (before building the model)."""
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size"):
        value = getattr(config, key, None)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= LIMITS[key]:
            raise ArtifactError(f"{path}: config {key}={value!r} outside (0, {LIMITS[key]:,}]")
    h, layers, inter = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    params = config.vocab_size * h + layers * (4 * h * h + 2 * h * inter)
    if params > LIMITS["parameters"]:
        raise ArtifactError(f"{path}: about {params:,} parameters, over the {LIMITS['parameters']:,} limit")
    if not 0 < vocab.max_events <= LIMITS["max_events"] or window.get("max_events") != vocab.max_events:
        raise ArtifactError(f"{path}: window length {vocab.max_events} must be in (0, {LIMITS['max_events']}] and "
                            f"equal the window config's max_events ({window.get('max_events')})")
    if config.max_position_embeddings != vocab.seq_len:
        raise ArtifactError(f"{path}: max_position_embeddings {config.max_position_embeddings} != encoded length "
                            f"{vocab.seq_len}")
    size = (path / "model.safetensors").stat().st_size
    if size > LIMITS["file_bytes"]:
        raise ArtifactError(f"{path}: model.safetensors is {size:,} bytes, over the {LIMITS['file_bytes']:,} limit")


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


@dataclass
class Meta:
    """What an artifact says about itself (meta.json)."""

    version: str
    kind: str
    threshold: float
    window: dict
    encoding_version: int = ENCODING_VERSION
    data_fingerprint: str = ""
    created_at: str = ""
    metrics: dict = field(default_factory=dict)
    checksums: dict = field(default_factory=dict)
    #: score where each severity starts (low, medium, high, critical): low = the threshold,
    #: then the scores reached by 1/4, 1/16 and none of the calibration's normal users
    severity: list = field(default_factory=list)
    user_alert_rate: float = 0.0  # the share of normal users the threshold was calibrated to alert

    def validate(self, where: Path | str) -> None:
        """Refuse a meta whose fields would break serving (wrong types, non-finite, out of order)."""
        def bad(msg: str) -> ArtifactError:
            return ArtifactError(f"{where}/meta.json: {msg}")
        if not isinstance(self.version, str) or not self.version:
            raise bad("version must be a non-empty string")
        if self.kind not in KINDS:
            raise bad(f"unknown model kind {self.kind!r}")
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, int | float) \
                or not np.isfinite(self.threshold):
            raise bad(f"threshold must be a finite number, got {self.threshold!r}")
        if self.kind == "classifier" and not 0.0 < self.threshold <= 1.0:
            raise bad(f"a classifier's threshold must lie in (0, 1], got {self.threshold}")
        sev = self.severity
        if not (isinstance(sev, list) and len(sev) == 4 and all(isinstance(x, int | float) and not isinstance(x, bool)
                                                                 and np.isfinite(x) for x in sev)):
            raise bad("severity must be a list of 4 finite numbers")
        if list(sev) != sorted(sev) or sev[0] != self.threshold:
            raise bad("severity must start at the threshold and never decrease")
        if not isinstance(self.window, dict):
            raise bad("window must be an object")
        try:
            WindowConfig(**self.window)
        except (TypeError, ValueError) as exc:
            raise bad(f"window config is invalid: {exc}") from None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_artifact(path: Path, model: torch.nn.Module, vocab: Vocabulary, meta: Meta) -> Path:
    """Write an artifact directory (weights as safetensors, checksums in meta.json)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_model(model, str(path / "model.safetensors"))  # de-duplicates tied weights (MLM decoder)
    model.config.to_json_file(str(path / "config.json"))
    vocab.save(path / "vocab.json")
    meta.checksums = {name: _sha256(path / name) for name in ARTIFACT_FILES}
    (path / "meta.json").write_text(json.dumps(asdict(meta), indent=2, default=float))
    return path


@dataclass
class Artifact:
    """A loaded, verified model ready to score."""

    path: Path
    meta: Meta
    vocab: Vocabulary
    model: torch.nn.Module

    @property
    def version(self) -> str:
        return self.meta.version

    @property
    def window_config(self) -> WindowConfig:
        return WindowConfig(**self.meta.window)


def load_artifact(path: Path | str, device: str = "cpu") -> Artifact:
    """Load and verify an artifact; raise :class:`ArtifactError` on anything suspicious.

    Only safetensors weights are read (no pickle is ever unpickled), every file's sha256
    must match meta.json, and the encoding version must be this build's.
    """
    path = Path(path)
    if not (path / "meta.json").is_file():
        raise ArtifactError(f"{path} is not a model artifact (no meta.json); train one with `seqsentry train`")
    unsafe = [p.name for p in path.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")]
    if unsafe:
        raise ArtifactError(f"{path} holds pickle-format files {unsafe}; only safetensors artifacts are loaded")
    try:
        meta = Meta(**json.loads((path / "meta.json").read_text()))
    except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}/meta.json is unreadable: {exc}") from None
    if meta.encoding_version != ENCODING_VERSION:
        raise ArtifactError(
            f"{path}: encoding version {meta.encoding_version} does not match this build's {ENCODING_VERSION}; retrain"
        )
    meta.validate(path)
    for name in ARTIFACT_FILES:
        if not (path / name).is_file():
            raise ArtifactError(f"{path}: missing {name}")
        if _sha256(path / name) != meta.checksums.get(name):
            raise ArtifactError(f"{path}: checksum mismatch for {name} (corrupt or tampered)")
    try:
        vocab = Vocabulary.load(path / "vocab.json")
        config = BertConfig.from_json_file(str(path / "config.json"))
    except Exception as exc:
        raise ArtifactError(f"{path}: vocab.json or config.json is unreadable: {str(exc)[:300]}") from None
    _check_limits(path, config, vocab, meta.window)
    try:
        cls = BertForSequenceClassification if meta.kind == "classifier" else BertForMaskedLM
        model = cls(config)
        load_model(model, str(path / "model.safetensors"), strict=True)
    except Exception as exc:
        raise ArtifactError(f"{path}: weights do not fit the config: {str(exc)[:300]}") from None
    if config.vocab_size != vocab.size:
        raise ArtifactError(f"{path}: model vocabulary {config.vocab_size} != encoding vocabulary {vocab.size}")
    model.eval().to(device)
    return Artifact(path, meta, vocab, model)


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

    @torch.inference_mode()
    def score(self, enc: Encoded, batch_size: int = 512) -> np.ndarray:
        """Scores for a batch of encoded windows (higher = more anomalous)."""
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
        sizes = [int(enc.attention_mask[r].sum()) - 1 for r in rows]  # tokens after CLS: events (+ END)
        if not rows or not sum(sizes):
            return [[] for _ in rows]
        src = np.repeat(np.asarray(rows), np.asarray(sizes) + 1)
        ids, mask = enc.input_ids[src].copy(), enc.attention_mask[src]
        starts = np.r_[0, np.cumsum(np.asarray(sizes) + 1)[:-1]]
        for start, n in zip(starts.tolist(), sizes, strict=True):
            ids[np.arange(start + 1, start + n + 1), np.arange(1, n + 1)] = MASK
        scores = self.score(Encoded(ids, mask, enc.length[src]))
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


def data_fingerprint(*arrays: np.ndarray) -> str:
    """sha256 over training arrays: the artifact records exactly what it was trained on."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:32]


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
