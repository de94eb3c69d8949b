"""Model artifacts on disk: save, verify, load - safetensors only, every file checksummed.

An artifact is a directory::

    model.safetensors   weights (never a pickle)
    config.json         the transformers BertConfig
    vocab.json          the encoding vocabulary (stream.encoding), with its version
    meta.json           version id, kind, threshold, sustain, severity steps, window config,
                        data fingerprint, metrics, and sha256 of the three files above
    SHA256SUMS          sha256 of all four files, meta.json included
    SHA256SUMS.hmac     HMAC-SHA256 of SHA256SUMS under the registry's signing key (optional)

Checksums catch corruption. They cannot catch someone who rewrites a whole directory and
recomputes them; a signing key can: with ``SEQSENTRY_MODEL_KEY`` set (the key, or
``@/path/to/keyfile``), training signs what it writes and loading refuses any artifact
whose signature is missing or wrong - keep the key where the registry's writers are not.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import stat
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_model, save_model
from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification

from stream.encoding import ENCODING_VERSION, RUN_COUNTS, Vocabulary
from stream.errors import SeqsentryError
from stream.windows import WindowConfig

ARTIFACT_FILES = ("model.safetensors", "config.json", "vocab.json")
MANIFEST = "SHA256SUMS"
SIGNATURE = "SHA256SUMS.hmac"
KINDS = ("classifier", "mlm")
MAX_SUSTAIN = 16
KEY_ENV = "SEQSENTRY_MODEL_KEY"

class ArtifactError(SeqsentryError, ValueError):
    """An artifact that cannot be served: missing, corrupt, incompatible or unsafe."""


#: What an artifact may ask of the serving process, checked before anything is allocated:
#: far above any model seqsentry trains (2 x 64 by default), far below what would hurt a host.
LIMITS = {"hidden_size": 2048, "num_hidden_layers": 48, "num_attention_heads": 64, "intermediate_size": 16_384,
          "vocab_size": 2_000_000, "max_events": 1024, "parameters": 500_000_000, "file_bytes": 2_000_000_000,
          "json_bytes": 64 << 20, "header_bytes": 4 << 20}


def check_limits(path: Path, config: BertConfig, vocab: Vocabulary, window: dict) -> None:
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


def check_json_sizes(path: Path) -> None:
    """Refuse a meta.json, config.json or vocab.json larger than ``LIMITS["json_bytes"]`` before reading it."""
    for name in ("meta.json", "config.json", "vocab.json"):
        f = path / name
        if f.is_file() and f.stat().st_size > LIMITS["json_bytes"]:
            raise ArtifactError(f"{path}: {name} is {f.stat().st_size:,} bytes, over the "
                                f"{LIMITS['json_bytes']:,} limit")


def _model_class(kind: str) -> type[torch.nn.Module]:
    return BertForSequenceClassification if kind == "classifier" else BertForMaskedLM


def _header_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape from the safetensors header alone (the data is mapped, never read)."""
    weights = path / "model.safetensors"
    with open(weights, "rb") as f:
        head = f.read(8)
    if len(head) < 8 or struct.unpack("<Q", head)[0] > LIMITS["header_bytes"]:
        raise ArtifactError(f"{path}: model.safetensors has no safetensors header of at most "
                            f"{LIMITS['header_bytes']:,} bytes")
    try:
        with safe_open(str(weights), framework="pt") as st:
            return {name: tuple(st.get_slice(name).get_shape()) for name in st.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors' own checks: offsets past the file, bad JSON, unknown dtype
        raise ArtifactError(f"{path}: model.safetensors is not valid safetensors: {str(exc)[:300]}") from None


def check_weights(path: Path, kind: str, config: BertConfig) -> None:
    """Refuse weights that do not fit the config, and configs past the parameter limit, before any
    weight is allocated (issue 20: a config inside the dimension limits but huge cost +1 GB of RSS
    before its weights were refused): the model is built on PyTorch's meta device (shapes, no
    storage) and compared with the tensor shapes of the safetensors header."""
    with torch.device("meta"):
        skeleton = _model_class(kind)(config)
    params = sum(p.numel() for p in skeleton.parameters())
    if params > LIMITS["parameters"]:
        raise ArtifactError(f"{path}: {params:,} parameters, over the {LIMITS['parameters']:,} limit")
    expected = skeleton.state_dict(keep_vars=True)
    found = _header_shapes(path)
    wrong = [f"{n} {list(s)} (expected {list(expected[n].shape) if n in expected else 'none'})"
             for n, s in found.items() if n not in expected or tuple(expected[n].shape) != s]
    # save_model writes one of each group of tied tensors (the MLM decoder shares the embeddings)
    tied: dict[int, set[str]] = {}
    for name, tensor in expected.items():
        tied.setdefault(id(tensor), set()).add(name)
    missing = sorted(n for n in expected if n not in found and not tied[id(expected[n])] & found.keys())
    if wrong or missing:
        raise ArtifactError(f"{path}: weights do not fit the config: "
                            f"{'; '.join([*wrong[:3], *(f'missing {n}' for n in missing[:3])])}"
                            f"{' …' if len(wrong) + len(missing) > 3 else ''}")



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
    #: consecutive events whose windows must all reach the threshold before an alert (Scorer.score)
    sustain: int = 1
    #: an ended session's window holding fewer events than this scores as an event type never
    #: seen in training (Scorer.score): no normal training session ended so soon; 0 = off
    min_ended_events: int = 0
    #: a classifier's window whose RUN_COUNTS (stream.encoding) exceed any of these scores as an
    #: event type never seen in training (Scorer.beyond_ceiling); [] = off
    run_ceiling: list = field(default_factory=list)
    #: per type of the vocabulary after the unknown one (``types[1:]``), the most events of it
    #: a normal training user's window held; a window holding more scores as an event type
    #: never seen in training (Scorer.beyond_type_ceiling; training sets it for zero-label models); [] = off
    type_ceiling: list = field(default_factory=list)

    def validate(self, where: Path | str) -> None:
        """Refuse a meta whose fields would break serving (wrong types, non-finite, out of order)."""
        def bad(msg: str) -> ArtifactError:
            return ArtifactError(f"{where}/meta.json: {msg}")
        if not isinstance(self.version, str) or not self.version:
            raise bad("version must be a non-empty string")
        if self.kind not in KINDS:
            raise bad(f"unknown model kind {self.kind!r}")
        if not _finite(self.threshold):
            raise bad(f"threshold must be a finite number, got {self.threshold!r}")
        if self.kind == "classifier" and not 0.0 < self.threshold <= 1.0:
            raise bad(f"a classifier's threshold must lie in (0, 1], got {self.threshold}")
        sev = self.severity
        if not (isinstance(sev, list) and len(sev) == 4 and all(_finite(x) for x in sev)):
            raise bad("severity must be a list of 4 finite numbers")
        if list(sev) != sorted(sev) or sev[0] != self.threshold:
            raise bad("severity must start at the threshold and never decrease")
        if isinstance(self.sustain, bool) or not isinstance(self.sustain, int) or not 1 <= self.sustain <= MAX_SUSTAIN:
            raise bad(f"sustain must be an integer in [1, {MAX_SUSTAIN}], got {self.sustain!r}")
        if self.kind == "mlm" and self.sustain != 1:
            raise bad("a zero-label (mlm) model scores single events: sustain must be 1")
        for name in ("metrics", "checksums"):
            if not isinstance(getattr(self, name), dict):
                raise bad(f"{name} must be an object")
        if not all(isinstance(v, str) for v in self.checksums.values()):
            raise bad("checksums must map file names to sha256 strings")
        for name in ("data_fingerprint", "created_at"):
            if not isinstance(getattr(self, name), str):
                raise bad(f"{name} must be a string")
        if not _finite(self.user_alert_rate) or not 0.0 <= self.user_alert_rate < 1.0:
            raise bad(f"user_alert_rate must be a number in [0, 1), got {self.user_alert_rate!r}")
        if not isinstance(self.window, dict):
            raise bad("window must be an object")
        odd = [k for k, v in self.window.items() if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**53]
        if odd:
            raise bad(f"window config is invalid: {', '.join(map(str, odd))} must be whole milliseconds or counts")
        try:
            most = WindowConfig(**self.window).max_events
        except (TypeError, ValueError) as exc:
            raise bad(f"window config is invalid: {exc}") from None
        # after the window: its max_events bounds this field, so it must be known good first
        ended = self.min_ended_events
        if isinstance(ended, bool) or not isinstance(ended, int) or not 0 <= ended <= most:
            raise bad(f"min_ended_events must be an integer in [0, the window's max_events ({most})], got {ended!r}")
        ceiling = self.run_ceiling
        if not isinstance(ceiling, list) or (ceiling and (
                len(ceiling) != len(RUN_COUNTS)
                or any(isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < 2**31 for c in ceiling))):
            raise bad(f"run_ceiling must be [] or {len(RUN_COUNTS)} integers in [0, 2**31) "
                      f"({', '.join(RUN_COUNTS)}), got {ceiling!r}")
        if ceiling and self.kind != "classifier":
            raise bad("run_ceiling needs a classifier's window-shape encoding; a zero-label model has none")
        types = self.type_ceiling
        if not isinstance(types, list) or any(isinstance(c, bool) or not isinstance(c, int) or not 0 <= c <= most
                                              for c in types):
            raise bad(f"type_ceiling must be a list of integers in [0, the window's max_events ({most})], "
                      f"got {str(types)[:200]}")


def _finite(x: object) -> bool:
    """A JSON number (not a bool) that is finite as a float (10**400 is not)."""
    if isinstance(x, bool) or not isinstance(x, int | float):
        return False
    try:
        return math.isfinite(float(x))
    except OverflowError:
        return False


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks (what SHA256SUMS and meta checksums hold)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def signing_key() -> bytes | None:
    """The registry's signing key from ``SEQSENTRY_MODEL_KEY`` (the key, or ``@FILE``), or None."""
    value = os.environ.get(KEY_ENV, "")
    if not value:
        return None
    key = value.encode()
    if value.startswith("@"):
        try:
            key = Path(value[1:]).read_bytes().strip()
        except OSError as exc:
            raise ArtifactError(f"{KEY_ENV}=@{value[1:]}: cannot read the key file ({exc.strerror})") from None
    if len(key) < 16:
        raise ArtifactError(f"{KEY_ENV} is shorter than 16 bytes; use a long random key")
    return key


def _sums(digests: dict[str, str]) -> bytes:
    """SHA256SUMS's text for these digests (every artifact file, meta.json included)."""
    return "".join(f"{digests[n]}  {n}\n" for n in (*ARTIFACT_FILES, "meta.json")).encode()


def _digests(path: Path) -> dict[str, str]:
    return {n: file_sha256(path / n) for n in (*ARTIFACT_FILES, "meta.json")}


def manifest(path: Path) -> bytes:
    """What SHA256SUMS holds for the files of ``path`` as they are now."""
    return _sums(_digests(path))


def save_artifact(path: Path, model: torch.nn.Module, vocab: Vocabulary, meta: Meta) -> Path:
    """Write an artifact directory: weights as safetensors, checksums in meta.json and in
    SHA256SUMS (which covers meta.json too), signed when a signing key is set."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_model(model, str(path / "model.safetensors"))  # de-duplicates tied weights (MLM decoder)
    model.config.to_json_file(str(path / "config.json"))
    vocab.save(path / "vocab.json")
    digests = {name: file_sha256(path / name) for name in ARTIFACT_FILES}  # each file hashed once
    meta.checksums = dict(digests)
    (path / "meta.json").write_text(json.dumps(asdict(meta), indent=2, default=float))
    sums = _sums({**digests, "meta.json": file_sha256(path / "meta.json")})
    (path / MANIFEST).write_bytes(sums)
    key = signing_key()
    if key is not None:
        (path / SIGNATURE).write_text(hmac.new(key, sums, hashlib.sha256).hexdigest() + "\n")
    else:
        (path / SIGNATURE).unlink(missing_ok=True)  # a stale signature would sign nothing
    return path


def _small_file(path: Path, limit: int) -> bytes | None:
    """A regular file's bytes (None when absent); refuses anything else or anything larger than
    ``limit`` - a FIFO or a link to /dev/zero must not hang or fill the process."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
        raise ArtifactError(f"{path}: not a regular file of at most {limit} bytes")
    return path.read_bytes()


def _verify_manifest(path: Path) -> dict[str, str]:
    """Every file, meta.json included, must match SHA256SUMS; with a signing key set, SHA256SUMS
    must carry a valid signature. Returns the files' digests (each file is hashed once)."""
    sums = _small_file(path / MANIFEST, 4096)
    if sums is None:
        raise ArtifactError(f"{path}: missing {MANIFEST} (written by `seqsentry train`); retrain or re-publish")
    key = signing_key()
    if key is not None:
        sig = _small_file(path / SIGNATURE, 256)
        if sig is None:
            raise ArtifactError(f"{path}: not signed, and {KEY_ENV} is set: only signed models are loaded")
        if not hmac.compare_digest(sig.strip(), hmac.new(key, sums, hashlib.sha256).hexdigest().encode()):
            raise ArtifactError(f"{path}: signature does not match {MANIFEST} (tampered, or signed with another key)")
    digests = _digests(path)
    now = _sums(digests)
    if sums != now:
        differ = [ln.split("  ", 1)[-1] for ln in set(now.decode().splitlines()) - set(sums.decode(errors="replace").splitlines())]
        raise ArtifactError(f"{path}: checksum mismatch for {', '.join(sorted(differ)) or MANIFEST}: the files do not "
                            f"match {MANIFEST} (corrupt or tampered)")
    return digests


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


def check_model_dir(path: Path | str) -> None:
    """The cheap first check of a model path: it must be an existing directory (the artifact
    itself is verified by :func:`load_artifact`). Callers that wait for Kafka run it first."""
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"no such model directory: {path}")
    if not path.is_dir():
        raise ArtifactError(f"{path} is a file, not a model directory; give the artifact's directory")


def load_artifact(path: Path | str, device: str = "cpu") -> Artifact:
    """Load and verify an artifact; raise :class:`ArtifactError` on anything suspicious.

    Only safetensors weights are read (no pickle is ever unpickled), every file's sha256
    must match SHA256SUMS and meta.json (and the signature, with a signing key set), and the
    encoding version must be this build's.
    """
    path = Path(path)
    check_model_dir(path)
    if not (path / "meta.json").is_file():
        raise ArtifactError(f"{path} is not a model artifact (no meta.json); train one with `seqsentry train`")
    unsafe = [p.name for p in path.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")]
    if unsafe:
        raise ArtifactError(f"{path} holds pickle-format files {unsafe}; only safetensors artifacts are loaded")
    check_json_sizes(path)
    try:
        meta = Meta(**json.loads((path / "meta.json").read_text()))
    except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}/meta.json is unreadable: {exc}") from None
    if meta.encoding_version != ENCODING_VERSION:
        raise ArtifactError(
            f"{path}: encoding version {meta.encoding_version} does not match this build's {ENCODING_VERSION}; retrain"
        )
    for name in ARTIFACT_FILES:
        if not (path / name).is_file():
            raise ArtifactError(f"{path}: missing {name}")
    meta.validate(path)  # first: a field that would break serving is named, not just "does not match"
    digests = _verify_manifest(path)
    for name in ARTIFACT_FILES:
        if digests[name] != meta.checksums.get(name):
            raise ArtifactError(f"{path}: checksum mismatch for {name} (corrupt or tampered)")
    try:
        vocab = Vocabulary.load(path / "vocab.json")
        config = BertConfig.from_json_file(str(path / "config.json"))
    except Exception as exc:
        raise ArtifactError(f"{path}: vocab.json or config.json is unreadable: {str(exc)[:300]}") from None
    if meta.run_ceiling and not vocab.shape:  # its windows would carry no run counts: every score would fail
        raise ArtifactError(f"{path}: meta.json: run_ceiling needs a vocabulary with window-shape tokens; this one has none")
    if meta.type_ceiling and len(meta.type_ceiling) != len(vocab.types) - 1:
        raise ArtifactError(f"{path}: meta.json: type_ceiling has {len(meta.type_ceiling)} entries; the vocabulary "
                            f"has {len(vocab.types) - 1} event types")
    check_limits(path, config, vocab, meta.window)
    check_weights(path, meta.kind, config)
    try:
        model = _model_class(meta.kind)(config)
        load_model(model, str(path / "model.safetensors"), strict=True)
    except Exception as exc:
        raise ArtifactError(f"{path}: weights do not fit the config: {str(exc)[:300]}") from None
    if config.vocab_size != vocab.size:
        raise ArtifactError(f"{path}: model vocabulary {config.vocab_size} != encoding vocabulary {vocab.size}")
    model.eval().to(device)
    return Artifact(path, meta, vocab, model)



def data_fingerprint(*arrays: np.ndarray) -> str:
    """sha256 over training arrays: the artifact records exactly what it was trained on."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:32]

