"""Kubernetes in the tests: the manifests of deploy/kubernetes rendered as kustomize renders
them, a Secret volume laid out as the kubelet lays it out, and podman to play them."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
KUBERNETES = ROOT / "deploy" / "kubernetes"
_VERSIONS = itertools.count()


def kubelet_write(volume: Path, files: dict[str, bytes], mode: int = 0o400) -> None:
    """Publish `files` as the Secret's new version, in the kubelet's order."""
    version = volume / f"..2026_12_04_18_00_{next(_VERSIONS):02d}.{os.getpid()}"
    version.mkdir(parents=True)
    for name, content in files.items():
        (version / name).write_bytes(content)
        (version / name).chmod(mode)
    old = os.readlink(volume / "..data") if (volume / "..data").is_symlink() else None
    (volume / "..data_tmp").symlink_to(version.name)
    os.rename(volume / "..data_tmp", volume / "..data")  # the one atomic switch
    for name in files:
        if not (volume / name).is_symlink():
            (volume / name).symlink_to(f"..data/{name}")
    for entry in volume.iterdir():
        if entry.is_symlink() and not entry.name.startswith("..") and entry.name not in files:
            entry.unlink()
    if old is not None:
        shutil.rmtree(volume / old)


def render(directory: Path) -> list[dict[str, Any]]:
    """The resources of a kustomization: `kubectl kustomize` where kubectl is installed;
    otherwise its resource files as they are (enough for schema checks, not for labels)."""
    kubectl = shutil.which("kubectl")
    if kubectl is not None:
        out = subprocess.run(
            [kubectl, "kustomize", str(directory)], capture_output=True, text=True, check=True
        ).stdout
        return [d for d in yaml.safe_load_all(out) if d]
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    found: list[dict[str, Any]] = []
    for entry in [*kustomization.get("resources", []), *kustomization.get("components", [])]:
        path = directory / entry
        if path.is_dir():
            found += render(path)
        else:
            found += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return found


def podman(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
