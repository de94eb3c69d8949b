"""Hot reload without a broker: the swap is atomic and records the serving version where it happens."""

from __future__ import annotations

from types import SimpleNamespace

from stream.detector import Detector
from stream.metrics import Metrics
from stream.windows import WindowConfig


def scorer(version: str) -> SimpleNamespace:
    return SimpleNamespace(artifact=SimpleNamespace(version=version, meta=SimpleNamespace(kind="classifier"),
                                                    window_config=WindowConfig()))


def test_a_requested_swap_serves_the_new_model_and_reports_its_version_together():
    m = Metrics()
    det = Detector(scorer("v1"), metrics=m)
    seen: list[str] = []
    new = scorer("v2")
    det.request_swap(new, on_swapped=lambda s: seen.append((det.scorer is s, s.artifact.version)))
    assert det.scorer is new
    assert seen == [(True, "v2")]  # the caller's record is written inside the swap, after the model changed
    assert m.value("seqsentry_model_info", {"version": "v2", "kind": "classifier"}) == 1


def test_a_batch_without_a_swap_request_keeps_the_serving_model():
    det = Detector(scorer("v1"))
    before = det.scorer
    assert det.score([]) == []
    assert det.scorer is before


def test_runs_logging_shows_model_swaps_at_info(caplog):
    import logging

    from stream.service_cli import show_info_logs

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
