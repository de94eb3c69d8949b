"""Model registry: a directory of artifact versions and an atomically switched ``current``.

    registry/
      versions/<version>/   one artifact each (see stream.model)
      current -> versions/<version>

``current`` is a symlink replaced with rename(2), so a reader (the detector's hot
reload) sees either the old or the new version, never a half-written one.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from stream.errors import SeqsentryError

CURRENT = "current"


class RegistryError(SeqsentryError, ValueError):
    """The registry has no usable model; the message says how to get one."""


def versions(registry: Path | str) -> list[str]:
    """Versions held, oldest first (by directory mtime)."""
    root = Path(registry) / "versions"
    if not root.is_dir():
        return []
    return [p.name for p in sorted(root.iterdir(), key=lambda p: p.stat().st_mtime) if p.is_dir()]


def publish(registry: Path | str, artifact: Path | str, version: str, make_current: bool = True) -> Path:
    """Copy an artifact into the registry as ``version`` (and point ``current`` at it)."""
    registry = Path(registry)
    dest = registry / "versions" / version
    if dest.exists():
        raise RegistryError(f"version {version} already exists in {registry}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{version}.tmp")
    shutil.copytree(artifact, tmp)
    os.replace(tmp, dest)
    if make_current:
        set_current(registry, version)
    return dest


def set_current(registry: Path | str, version: str) -> None:
    """Atomically point ``current`` at ``version``."""
    registry = Path(registry)
    if not (registry / "versions" / version).is_dir():
        raise RegistryError(f"no version {version} in {registry}")
    tmp = registry / f".{CURRENT}.{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(Path("versions") / version, tmp)
    os.replace(tmp, registry / CURRENT)


def current(registry: Path | str) -> Path:
    """Path of the current artifact; a clear error when there is none."""
    link = Path(registry) / CURRENT
    if not link.exists():
        raise RegistryError(
            f"no model in registry {registry}: train one with `seqsentry train LOG --registry {registry}` "
            "(or run `seqsentry demo`, which trains one)"
        )
    target = link.resolve()
    versions_dir = (Path(registry) / "versions").resolve()
    if target.parent != versions_dir:  # a link planted to point elsewhere is not a published model
        raise RegistryError(f"{link} points outside {versions_dir} (to {target}); refusing to load it")
    return target


def current_version(registry: Path | str) -> str | None:
    """Name of the current version, or None."""
    link = Path(registry) / CURRENT
    return os.readlink(link).rsplit("/", 1)[-1] if link.is_symlink() else None
