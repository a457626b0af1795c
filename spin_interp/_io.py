"""Artifact I/O: tensors in safetensors, metadata as JSON in the safetensors header, atomic writes.

Every artifact of the library (scores, selections, edits) is one ``.safetensors`` file whose header
carries a JSON document under the key ``"spin_interp"``. Writes go to a temporary file in the same
folder and are renamed into place, so a crash never leaves a half-written artifact behind.
"""

from __future__ import annotations

import json
import math
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
    """Call ``writer(tmp_path)``, then rename it to ``path``; remove the temporary on error.

    The temporary lives in the target's folder (so the rename is atomic on one file system) and is
    flushed to disk before the rename, so ``path`` either keeps its old content or holds the
    complete new file, whatever happens (an exception in ``writer``, a full disk, Ctrl-C).
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"cannot write a file at {path}: it is a folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        writer(tmp_path)
        if not tmp_path.is_file():
            raise OSError(f"the writer for {path} left no file behind")
        _fsync(tmp_path)
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600 files; use normal permissions
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


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
    """Load an artifact written by :func:`save_artifact`, checking its kind, format version and
    (for the library's own kinds) its structure: required metadata, tensor names, index dtypes
    and ranges. Every refusal is a ``ValueError`` that names the file and what differs."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no {kind} artifact at {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys() if k != "__empty__"}
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise ValueError(
            f"{path} is not a readable safetensors artifact (truncated or corrupt?): {exc}"
        ) from exc
    if _META_KEY not in header:
        raise ValueError(f"{path} is a safetensors file but not a spin_interp artifact")
    try:
        meta = json.loads(header[_META_KEY])
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: its spin_interp metadata is not valid JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: its spin_interp metadata is not a JSON object")
    if meta.get("artifact") != kind:
        raise ValueError(f"{path} holds a {meta.get('artifact')!r} artifact, expected {kind!r}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path} has format version {meta.get('format_version')}, this library reads "
            f"{FORMAT_VERSION}: re-create it with spin_interp {library_version()}"
        )
    for key in ("artifact", "format_version"):
        meta.pop(key, None)
    check = _STRUCTURE.get(kind)
    if check is not None:
        problem = check(tensors, meta)
        if problem:
            raise ValueError(f"{path} is a damaged {kind} artifact: {problem}")
    return tensors, meta


# --------------------------------------------------------------------------------------------------
# structure of the library's own artifact kinds (checked on load; the classes check the rest)


def _shape_table(meta: dict) -> tuple[dict[str, tuple[int, ...]] | None, str | None]:
    shapes = meta.get("shapes")
    if not isinstance(shapes, dict):
        return None, "its metadata has no 'shapes' table"
    out = {}
    for name, shape in shapes.items():
        if not (
            isinstance(shape, list)
            and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
        ):
            return None, f"the shape of {name} is {shape!r}, not a list of non-negative ints"
        out[name] = tuple(shape)
    return out, None


def _index_problem(name: str, idx: torch.Tensor, numel: int | None) -> str | None:
    if idx.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        return f"indices of {name} have dtype {idx.dtype}, expected an integer dtype"
    if idx.ndim != 1:
        return f"indices of {name} have shape {tuple(idx.shape)}, expected 1-D"
    if idx.numel() and int(idx.min()) < 0:
        return f"indices of {name} include a negative value ({int(idx.min())})"
    if numel is not None and idx.numel() and int(idx.max()) >= numel:
        return f"indices of {name} reach {int(idx.max())}, outside its {numel} entries"
    return None


def _check_scores(tensors: dict[str, torch.Tensor], meta: dict) -> str | None:
    shapes, problem = _shape_table(meta)
    if problem:
        return problem
    dense = meta.get("dense")
    if not isinstance(dense, bool):
        return "its metadata has no boolean 'dense' flag"
    expected = {f"values/{n}" for n in shapes} | (
        set() if dense else {f"indices/{n}" for n in shapes}
    )
    missing = sorted(expected - set(tensors))
    if missing:
        return f"tensors missing: {missing[:3]}"
    ours = (k for k in tensors if k.startswith(("values/", "indices/")))
    extra = sorted(k for k in ours if k not in expected)
    if extra:
        return f"tensors of matrices that have no shape: {extra[:3]}"
    for n, shape in shapes.items():
        values = tensors[f"values/{n}"]
        if not values.is_floating_point():
            return f"scores of {n} have dtype {values.dtype}, expected a float dtype"
        if dense:
            if tuple(values.shape) != shape:
                return f"scores of {n} have shape {tuple(values.shape)}, metadata says {shape}"
            continue
        idx = tensors[f"indices/{n}"]
        problem = _index_problem(n, idx, math.prod(shape))
        if problem:
            return problem
        if values.shape != idx.shape:
            return f"{n} has {values.numel()} scores but {idx.numel()} indices"
    return None


def _check_selection(tensors: dict[str, torch.Tensor], meta: dict) -> str | None:
    shapes, problem = _shape_table(meta)
    if problem:
        return problem
    extra = sorted(set(tensors) - set(shapes))
    if extra:
        return f"tensors without a shape: {extra[:3]}"
    for n, idx in tensors.items():
        problem = _index_problem(n, idx, math.prod(shapes[n]))
        if problem:
            return problem
    return None


def _check_edit(tensors: dict[str, torch.Tensor], meta: dict) -> str | None:
    if not isinstance(meta.get("architecture"), str):
        return "its metadata has no 'architecture' fingerprint"
    names: dict[str, set[str]] = {"indices": set(), "values": set()}
    for key in tensors:
        part, _, name = key.partition("/")
        if part not in names or not name:
            return f"unexpected tensor {key!r} (expected indices/<name> and values/<name>)"
        names[part].add(name)
    if names["indices"] != names["values"]:
        odd = sorted(names["indices"] ^ names["values"])
        return f"indices and values do not pair up for {odd[:3]}"
    for n in names["indices"]:
        idx, vals = tensors[f"indices/{n}"], tensors[f"values/{n}"]
        problem = _index_problem(n, idx, None)
        if problem:
            return problem
        if vals.ndim != 1 or vals.numel() != idx.numel():
            return f"{n} has {idx.numel()} indices but values of shape {tuple(vals.shape)}"
    return None


def _needs(tensor_names: tuple[str, ...], meta_keys: tuple[str, ...]):
    def check(tensors: dict[str, torch.Tensor], meta: dict) -> str | None:
        missing = [k for k in meta_keys if k not in meta] + [
            t for t in tensor_names if t not in tensors
        ]
        return f"missing {missing}" if missing else None

    return check


_STRUCTURE: dict[str, Callable[[dict[str, torch.Tensor], dict], str | None]] = {
    "weight_scores": _check_scores,
    "selection": _check_selection,
    "weight_edit": _check_edit,
    "mi_shuffle_test": _needs(("null",), ("statistic", "pvalue", "estimator")),
    "mi_bootstrap": _needs(("samples",), ("estimate", "ci", "alpha", "scheme", "estimator")),
}
