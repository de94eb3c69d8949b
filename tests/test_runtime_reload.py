"""Hot reload without a broker: the swap is atomic and records the serving version where it happens."""

from __future__ import annotations

from stream.detector import Detector
from stream.metrics import Metrics
from stream.windows import WindowConfig
from tests.doubles import ModelFreeScorer, model_free_artifact


def scorer(version: str) -> ModelFreeScorer:
    return ModelFreeScorer(model_free_artifact(WindowConfig(), version=version))


def test_a_requested_swap_serves_the_new_model_and_reports_its_version_together():
    m = Metrics()
    det = Detector(scorer("v1"), metrics=m)
    seen: list[str] = []
    new = scorer("v2")
    det.request_swap(new, on_swapped=lambda s: seen.append((det.scorer is s, s.artifact.version)))
    assert det.scorer is new
    assert seen == [(True, "v2")]  # the caller's record is written inside the swap, after the model changed
    assert m.registry.get_sample_value("seqsentry_model_info", {"version": "v2", "kind": "classifier"}) == 1


def test_a_batch_without_a_swap_request_keeps_the_serving_model():
    det = Detector(scorer("v1"))
    before = det.scorer
    assert det.score([]) == []
    assert det.scorer is before


def test_runs_logging_shows_model_swaps_at_info(caplog):
    import logging

    from stream.commands.service import show_info_logs

    saved = {name: logging.getLogger(name).level for name in ("stream", "training")}
    caplog.set_level(logging.WARNING)  # the default --log-level, on the root logger
    caplog.handler.setLevel(logging.NOTSET)  # the capture itself filters nothing
    try:
        show_info_logs()
        Detector(scorer("v1")).request_swap(scorer("v2"))
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        ("stream.detector", logging.INFO, "model swapped: v1 -> v2")]


def _watcher(tmp_path, monkeypatch, loads: list[str]):
    """A watcher over a registry in ``tmp_path`` whose model loads succeed only for a version with ``model.ok``."""
    import os

    from stream.runtime import reload
    from stream.runtime.config import ServiceConfig

    def load(path, device="auto", runtime="auto"):
        loads.append(str(path))
        if not (path / "model.ok").exists():
            raise reload.ArtifactError(f"{path}: incomplete artifact")
        return scorer(path.name)

    monkeypatch.setattr(reload.Scorer, "load", load)
    (tmp_path / "versions").mkdir()
    os.symlink("versions/v2", tmp_path / "current")  # points at a version not published yet
    serving = ["v1"]
    det = Detector(scorer("v1"))
    cfg = ServiceConfig(bootstrap="unused:9092", registry=tmp_path)
    return reload.RegistryWatcher(cfg, det, Metrics(), serving_version=lambda: serving[-1],
                                  on_swapped=serving.append), det, serving


def test_a_refused_version_is_not_reloaded_while_its_files_are_unchanged(tmp_path, monkeypatch, caplog):
    loads: list[str] = []
    watcher, _, serving = _watcher(tmp_path, monkeypatch, loads)
    (tmp_path / "versions" / "v2").mkdir()  # published without its model: refused
    watcher.check()
    watcher.check()
    assert len(loads) == 1 and serving == ["v1"]
    assert len([r for r in caplog.records if r.message.startswith("refusing model v2")]) == 1


def test_a_refused_version_is_loaded_once_it_is_published_properly(tmp_path, monkeypatch, caplog):
    import logging

    loads: list[str] = []
    watcher, det, serving = _watcher(tmp_path, monkeypatch, loads)
    watcher.check()  # refused: the version does not exist yet
    (tmp_path / "versions" / "v2").mkdir()
    (tmp_path / "versions" / "v2" / "model.ok").write_text("ok")
    with caplog.at_level(logging.INFO, logger="stream.runtime.reload"):
        watcher.check()
    det.score([])  # the swap happens at the next batch
    assert serving[-1] == "v2" and det.scorer.artifact.version == "v2"
    assert [r.message for r in caplog.records if "refused before" in r.message]
