"""Test helpers for artifacts edited on disk."""

from __future__ import annotations

import json
from pathlib import Path

from stream import logs
from stream.artifact import MANIFEST, load_artifact, manifest, save_artifact
from stream.cli import main


def reseal(path: Path) -> Path:
    """Rewrite SHA256SUMS to match the files as they are now - what someone who can write the
    whole artifact directory can always do (only a signing key catches it)."""
    (Path(path) / MANIFEST).write_bytes(manifest(Path(path)))
    return path


def with_meta(src: Path, out: Path, **fields: object) -> Path:
    """The artifact at ``src`` saved again at ``out`` with ``fields`` written into its meta.json
    as they are (no validation on the way: the loader is what is tested), checksums consistent."""
    art = load_artifact(src)
    save_artifact(out, art.model, art.vocab, art.meta)
    meta = json.loads((out / "meta.json").read_text()) | fields
    (out / "meta.json").write_text(json.dumps(meta))
    return reseal(out)


def offline_alerts(model: Path, records: list[dict], work: Path) -> list[dict]:
    """``records`` written as a log under ``work`` and scored with ``seqsentry score --model
    model`` on the CPU; the alerts it wrote."""
    log, out = work / "scored.jsonl", work / "alerts.jsonl"
    logs.write_log(log, [records])
    assert main(["score", str(log), "--model", str(model), "--out", str(out), "-q", "--device", "cpu"]) == 0
    return [json.loads(x) for x in out.read_text().splitlines()]
