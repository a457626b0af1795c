"""Artifact I/O: tensors in safetensors, metadata as JSON in the safetensors header, atomic writes.

Every artifact of the library (scores, selections, edits) is one ``.safetensors`` file whose header
carries a JSON document under the key ``"spin_interp"``. Writes go to a temporary file in the same
folder and are renamed into place, so a crash never leaves a half-written artifact behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

FORMAT_VERSION = 1
_META_KEY = "spin_interp"


def library_version() -> str:
    from spin_interp import __version__

    return __version__


def atomic_write(path: str | os.PathLike, writer: Callable[[Path], None]) -> Path:
    """Call ``writer(tmp_path)``, then rename it to ``path``; remove the temporary on error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        writer(tmp_path)
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600 files; use normal permissions
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_artifact(
    path: str | os.PathLike, kind: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> Path:
    """Save ``tensors`` and JSON ``meta`` as one safetensors file (atomic)."""
    from safetensors.torch import save_file

    doc = dict(meta)
    doc.update(artifact=kind, format_version=FORMAT_VERSION, library_version=library_version())
    header = {_META_KEY: json.dumps(doc, sort_keys=True)}
    # safetensors refuses an empty file and non-contiguous tensors
    payload = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    if not payload:
        payload = {"__empty__": torch.zeros(0)}
    return atomic_write(path, lambda tmp: save_file(payload, str(tmp), metadata=header))


def load_artifact(path: str | os.PathLike, kind: str) -> tuple[dict[str, torch.Tensor], dict]:
    """Load an artifact written by :func:`save_artifact`, checking its kind and format version."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no {kind} artifact at {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys() if k != "__empty__"}
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise ValueError(f"{path} is not a readable safetensors artifact: {exc}") from exc
    if _META_KEY not in header:
        raise ValueError(f"{path} is a safetensors file but not a spin_interp artifact")
    meta = json.loads(header[_META_KEY])
    if meta.get("artifact") != kind:
        raise ValueError(f"{path} holds a {meta.get('artifact')!r} artifact, expected {kind!r}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path} has format version {meta.get('format_version')}, this library reads "
            f"{FORMAT_VERSION}: re-create it with spin_interp {library_version()}"
        )
    for key in ("artifact", "format_version"):
        meta.pop(key, None)
    return tensors, meta
