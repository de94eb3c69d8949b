"""Artifact limits are checked from the files' headers before anything is allocated (issue 20, item 6)."""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file, save_model
from transformers import BertConfig, BertForMaskedLM

from bench.faults import refused_load_rss_mb
from stream.artifact import LIMITS, ArtifactError, check_weights, file_sha256, load_artifact
from tests.artifacts import reseal

# What a 1.2 GB model asks for while staying inside every dimension limit (about 300M parameters).
HUGE = {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096}


def _hostile_copy(tiny_model, tmp_path: Path, name: str, edit: Callable[[Path], None]) -> Path:
    """A copy of the trained artifact with file ``name`` rewritten by ``edit(path)`` and every checksum
    recomputed: a consistent, hostile artifact (only a signing key would catch its author)."""
    art = tmp_path / "hostile"
    shutil.copytree(tiny_model[0].artifact, art)
    edit(art / name)
    meta = json.loads((art / "meta.json").read_text())
    meta["checksums"][name] = file_sha256(art / name)
    (art / "meta.json").write_text(json.dumps(meta))
    return reseal(art)


def _edit_json(**changes: object) -> Callable[[Path], None]:
    def edit(path: Path) -> None:
        path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
    return edit


def test_a_huge_config_inside_the_limits_is_refused_before_its_model_is_allocated(tiny_model, tmp_path):
    # issue 20: this cost +1 GB of RSS (the model was built) before the weights were found not to fit
    art = _hostile_copy(tiny_model, tmp_path, "config.json", _edit_json(**HUGE))
    growth, error = refused_load_rss_mb(art)  # in a fresh process: its own peak RSS
    assert "weights do not fit the config" in error
    assert growth < 200, f"the refused load grew the peak RSS by {growth:.0f} MB"


def test_a_dimension_without_its_own_limit_is_caught_by_the_exact_parameter_count(tiny_model, tmp_path):
    art = _hostile_copy(tiny_model, tmp_path, "config.json", _edit_json(type_vocab_size=20_000_000))
    with pytest.raises(ArtifactError, match=f"over the {LIMITS['parameters']:,} limit"):
        load_artifact(art)


def test_a_tensor_whose_shape_differs_from_the_config_is_named(tiny_model, tmp_path):
    def widen(path: Path) -> None:
        tensors = load_file(path)
        name = "bert.embeddings.word_embeddings.weight"
        tensors[name] = tensors[name].repeat(2, 1)
        save_file(tensors, path)

    art = _hostile_copy(tiny_model, tmp_path, "model.safetensors", widen)
    with pytest.raises(ArtifactError, match="word_embeddings.weight"):
        load_artifact(art)


def test_a_safetensors_header_length_past_the_limit_is_refused_without_reading_it(tiny_model, tmp_path):
    def claim_huge_header(path: Path) -> None:
        data = path.read_bytes()
        path.write_bytes(struct.pack("<Q", 5 << 30) + data[8:])

    art = _hostile_copy(tiny_model, tmp_path, "model.safetensors", claim_huge_header)
    with pytest.raises(ArtifactError, match="no safetensors header"):
        load_artifact(art)


def test_an_oversized_json_file_is_refused_before_it_is_read(tiny_model, tmp_path, monkeypatch):
    limit = max((tiny_model[0].artifact / n).stat().st_size for n in ("meta.json", "config.json", "vocab.json"))
    monkeypatch.setitem(LIMITS, "json_bytes", limit + 100)  # every file of the artifact fits, with room to spare
    art = _hostile_copy(tiny_model, tmp_path, "vocab.json", lambda p: p.write_text(p.read_text() + " " * limit))
    with pytest.raises(ArtifactError, match="vocab.json is .* bytes, over"):
        load_artifact(art)


def test_the_trained_artifact_still_loads(tiny_model):
    assert load_artifact(tiny_model[0].artifact).meta.kind == "classifier"


def test_tied_weights_written_once_fit_a_zero_label_model(tmp_path):
    # save_model writes the MLM decoder once (it shares the word embeddings): not a missing tensor
    config = BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=20)
    save_model(BertForMaskedLM(config), str(tmp_path / "model.safetensors"))
    check_weights(tmp_path, "mlm", config)
