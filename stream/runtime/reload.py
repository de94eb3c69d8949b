"""Hot reload: watch the registry's ``current`` pointer and hand a new model to the detector.

Threads: the watcher runs on its own daemon thread (``seqsentry-reload``). It only loads
and checks a model; the swap itself happens in :meth:`Detector.request_swap`, atomically
under the detector's swap lock, and the serving version is recorded there too (through
``on_swapped``), so no reader ever sees a version that is not the model being served.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from stream import registry
from stream.artifact import ArtifactError
from stream.detector import Detector
from stream.metrics import Metrics
from stream.model import Scorer
from stream.runtime.config import ServiceConfig

log = logging.getLogger(__name__)


Fingerprint = tuple[tuple[str, int, int], ...]  # (relative path, size, mtime ns) of every file of a version


def fingerprint(version_dir: Path) -> Fingerprint:
    """What a version's files look like now; empty while the version does not exist.

    A refusal is remembered against this, not the bare version name: a version refused
    because it was missing or half-copied is tried again once its files change.
    """
    if not version_dir.is_dir():
        return ()
    out = []
    for f in sorted(version_dir.rglob("*")):
        try:
            st = f.stat()
        except OSError:  # removed while we looked: the next poll sees the settled state
            continue
        if f.is_file():
            out.append((str(f.relative_to(version_dir)), st.st_size, st.st_mtime_ns))
    return tuple(out)


class RegistryWatcher:
    """Polls the registry every ``reload_interval_s``; refuses bad versions until their files change."""

    def __init__(self, cfg: ServiceConfig, detector: Detector, metrics: Metrics, *,
                 serving_version: Callable[[], str | None], on_swapped: Callable[[str], None]) -> None:
        self.cfg = cfg
        self.detector = detector
        self.metrics = metrics
        self.serving_version = serving_version
        self.on_swapped = on_swapped
        self.bad_versions: dict[str, Fingerprint] = {}  # refused version -> its files when refused

    def start(self, stopping: threading.Event) -> threading.Thread:
        """Watch on a daemon thread until ``stopping`` is set."""
        t = threading.Thread(target=self.watch, args=(stopping,), name="seqsentry-reload", daemon=True)
        t.start()
        return t

    def watch(self, stopping: threading.Event) -> None:
        """The watcher thread's loop."""
        while not stopping.wait(self.cfg.reload_interval_s):
            self.check()

    def check(self) -> None:
        """Load the registry's current version if it is new, and swap it in if it is compatible."""
        reg = self.cfg.registry
        version = registry.current_version(reg) if reg else None
        if not version or version == self.serving_version():
            return
        files = fingerprint(Path(reg) / "versions" / version)
        if self.bad_versions.get(version) == files:
            return
        try:
            scorer = Scorer.load(registry.current(reg), self.cfg.device, self.cfg.runtime)
            if scorer.artifact.window_config != self.detector.window_config:
                raise ArtifactError(f"window config {scorer.artifact.window_config} differs from the serving "
                                    f"model's {self.detector.window_config}; restart to change windows")
        except Exception as exc:
            self.bad_versions[version] = files
            self.metrics.model_loads.labels("error").inc()
            log.error("refusing model %s, still serving %s: %s", version, self.serving_version(), exc)
            return
        self.metrics.model_loads.labels("ok").inc()
        self.detector.request_swap(scorer, on_swapped=lambda _scorer: self.on_swapped(version))
        if self.bad_versions.pop(version, None) is not None:
            log.info("hot reload: model %s, refused before, loads now that its files changed; serving from the "
                     "next batch", version)
        else:
            log.info("hot reload: model %s serving from the next batch", version)
