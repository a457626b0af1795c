"""Reliability: artifacts mean what they say, a crash loses nothing, wrong inputs fail loudly.

Every row of ``docs/failure_modes.md`` points at a test here or in another test file. Tests that
make a write fail check two things: the exception, and that the folder holds exactly what it held
before (no partial file, no temporary left behind).
"""

from __future__ import annotations

import ast
import errno
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from itertools import permutations
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from spin_interp import ablate
from spin_interp._io import FORMAT_VERSION, atomic_write, load_artifact, save_artifact
from spin_interp.attribution import WeightScores
from spin_interp.cli import main
from spin_interp.models import hf_parameters, model_fingerprint
from spin_interp.pipeline import ConfigError, DatasetSpec, SpinConfig, run_spin
from spin_interp.select import Selection
from spin_interp.testing import tiny_model

REPO = Path(__file__).resolve().parents[1]
NAME = "model.layers.0.mlp.up_proj.weight"


# --------------------------------------------------------------------------------------------------
# helpers


def _listing(folder: Path) -> list[str]:
    """Every file and folder under ``folder`` (hidden ones included), relative, sorted."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _raise_enospc(target: object = "") -> None:
    raise OSError(errno.ENOSPC, "No space left on device", str(target))


def _raw_artifact(path: Path, tensors: dict[str, torch.Tensor], doc: object | None) -> Path:
    """Write a safetensors file by hand (bypassing the library) with ``doc`` as its header."""
    header = (
        None if doc is None else {"spin_interp": doc if isinstance(doc, str) else json.dumps(doc)}
    )
    save_file(tensors or {"__empty__": torch.zeros(0)}, str(path), metadata=header)
    return path


def _doc(kind: str, /, **meta: object) -> dict:
    return {"artifact": kind, "format_version": FORMAT_VERSION, "library_version": "0", **meta}


def _dense_scores(top: list[int], fingerprint: str = "m0") -> WeightScores:
    v = torch.zeros(16)
    for rank, i in enumerate(top):
        v[i] = 100.0 - rank
    return WeightScores(
        {NAME: (4, 4)}, {NAME: v.reshape(4, 4)}, None, {"model_fingerprint": fingerprint}
    )


def _snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in hf_parameters(model).items()}


def _equal_bits(model, snap) -> bool:
    return all(
        torch.equal(snap[k].view(torch.uint8), v.detach().view(torch.uint8))
        for k, v in hf_parameters(model).items()
    )


@pytest.fixture(scope="module")
def score_files(tmp_path_factory):
    """Three small valid score files (same model fingerprint) for select / CLI tests."""
    folder = tmp_path_factory.mktemp("scores")
    paths = {}
    for key, top in (("a", [3, 5, 9, 12]), ("b", [5, 6, 9, 14]), ("g", [0, 1, 2, 3])):
        paths[key] = _dense_scores(top).save(folder / f"{key}.safetensors")
    paths["other"] = _dense_scores([3, 5, 9, 12], "m1").save(folder / "other.safetensors")
    return paths


def _cfg(tiny_folder, out, **kw) -> SpinConfig:
    spec = DatasetSpec(n=2)
    base = dict(fairness=spec, privacy=spec, general=spec, p=0.01, q=0.05, keep_fraction=0.1)
    base.update(eval_sentences=3, max_len=96)
    return SpinConfig(model=str(tiny_folder), out_dir=str(out), **(base | kw))


# --------------------------------------------------------------------------------------------------
# model specs, tokenizers, datasets, targets


def test_bad_model_spec_and_tokenizer(tok):
    from transformers import AutoTokenizer

    from spin_interp.models import encode_example, from_hf, load_model
    from spin_interp.testing import tiny_hf_model, tiny_tokenizer_dir

    for empty in ("", "   "):
        with pytest.raises(ValueError, match="empty model spec"):
            load_model(empty)
    with pytest.raises(ValueError, match="real tokenizer"):
        from_hf(tiny_hf_model("llama"), None)
    no_template = AutoTokenizer.from_pretrained(tiny_tokenizer_dir())
    no_template.chat_template = None
    with pytest.raises(ValueError, match="no chat template"):
        encode_example(no_template, "Where is Paris?", "In France.", "chat")
    with pytest.raises(ValueError, match="unknown format"):
        encode_example(tok, "a", "b", "markdown")


def test_bad_dataset_arguments_fail_before_loading():
    from spin_interp import data

    with pytest.raises(ValueError, match="unknown behaviour 'fairnes'"):
        data.load_behaviour("fairnes")
    with pytest.raises(ValueError, match="unknown split"):
        data.load_behaviour("privacy", split="train")
    with pytest.raises(TypeError, match="safe must be a bool"):
        data.load_behaviour("privacy", safe="yes")  # type: ignore[arg-type]


def test_bad_targets_write_nothing(llama, tmp_path):
    from spin_interp.attribution import score_weights
    from spin_interp.testing import tiny_examples

    out = tmp_path / "s.safetensors"
    with pytest.raises(ValueError, match="unknown targets 'mpl'"):
        score_weights(llama, tiny_examples(1), targets="mpl", save_to=out, progress=False)
    with pytest.raises(ValueError, match="not weights of the model"):
        score_weights(llama, tiny_examples(1), targets=["lm_head"], save_to=out, progress=False)
    assert _listing(tmp_path) == []


# --------------------------------------------------------------------------------------------------
# tampered and damaged artifacts


def _valid_selection(path: Path) -> Path:
    sel = Selection({NAME: (4, 4)}, {NAME: torch.tensor([1, 5])}, {"model_fingerprint": "m0"})
    return sel.save(path)


SELECTION_TAMPERS = {
    "wrong kind": (lambda p: save_artifact(p, "weight_edit", {}, {}), "'weight_edit' artifact"),
    "future format": (
        lambda p: _raw_artifact(p, {}, _doc("selection", shapes={}) | {"format_version": 99}),
        "format version 99",
    ),
    "no metadata": (lambda p: _raw_artifact(p, {"x": torch.zeros(1)}, None), "not a spin_interp"),
    "header not JSON": (lambda p: _raw_artifact(p, {}, "{oops"), "not valid JSON"),
    "header not an object": (lambda p: _raw_artifact(p, {}, "[1, 2]"), "not a JSON object"),
    "truncated": (
        lambda p: p.write_bytes(_valid_selection(p).read_bytes()[:-7]),
        "not a readable safetensors",
    ),
    "garbage": (lambda p: p.write_bytes(os.urandom(64)), "not a readable safetensors"),
    "empty file": (lambda p: p.write_bytes(b""), "not a readable safetensors"),
    "no shapes": (
        lambda p: _raw_artifact(p, {NAME: torch.tensor([1])}, _doc("selection")),
        "no 'shapes'",
    ),
    "bad shape": (
        lambda p: _raw_artifact(p, {}, _doc("selection", shapes={NAME: "4x4"})),
        "not a list of non-negative ints",
    ),
    "index out of shape": (
        lambda p: _raw_artifact(
            p, {NAME: torch.tensor([3, 16])}, _doc("selection", shapes={NAME: [4, 4]})
        ),
        "reach 16, outside its 16 entries",
    ),
    "negative index": (
        lambda p: _raw_artifact(
            p, {NAME: torch.tensor([-1, 2])}, _doc("selection", shapes={NAME: [4, 4]})
        ),
        "negative value",
    ),
    "float indices": (
        lambda p: _raw_artifact(
            p, {NAME: torch.tensor([1.5])}, _doc("selection", shapes={NAME: [4, 4]})
        ),
        "expected an integer dtype",
    ),
    "tensor without shape": (
        lambda p: _raw_artifact(
            p, {"other.weight": torch.tensor([1])}, _doc("selection", shapes={NAME: [4, 4]})
        ),
        "tensors without a shape",
    ),
}


@pytest.mark.parametrize("case", list(SELECTION_TAMPERS))
def test_tampered_selection_is_refused(case, tmp_path):
    make, message = SELECTION_TAMPERS[case]
    path = tmp_path / "sel.safetensors"
    make(path)
    with pytest.raises(ValueError, match=re.escape(message)) as err:
        Selection.load(path)
    assert str(path) in str(err.value)  # the message names the file


def _sparse_doc(**kw):
    return _doc("weight_scores", shapes={NAME: [4, 4]}, dense=False, **kw)


SCORE_TAMPERS = {
    "selection loaded as scores": (
        lambda p: _valid_selection(p),
        "holds a 'selection' artifact, expected 'weight_scores'",
    ),
    "index out of shape": (
        lambda p: _raw_artifact(
            p,
            {f"values/{NAME}": torch.tensor([2.0, 1.0]), f"indices/{NAME}": torch.tensor([0, 99])},
            _sparse_doc(),
        ),
        "reach 99, outside its 16 entries",
    ),
    "values and indices differ in length": (
        lambda p: _raw_artifact(
            p,
            {f"values/{NAME}": torch.tensor([2.0]), f"indices/{NAME}": torch.tensor([0, 1])},
            _sparse_doc(),
        ),
        "1 scores but 2 indices",
    ),
    "missing indices": (
        lambda p: _raw_artifact(p, {f"values/{NAME}": torch.tensor([2.0])}, _sparse_doc()),
        "tensors missing",
    ),
    "dense shape differs": (
        lambda p: _raw_artifact(
            p,
            {f"values/{NAME}": torch.zeros(4, 5)},
            _doc("weight_scores", shapes={NAME: [4, 4]}, dense=True),
        ),
        "shape (4, 5), metadata says (4, 4)",
    ),
    "no dense flag": (
        lambda p: _raw_artifact(
            p, {f"values/{NAME}": torch.zeros(4, 4)}, _doc("weight_scores", shapes={NAME: [4, 4]})
        ),
        "'dense' flag",
    ),
    "integer scores": (
        lambda p: _raw_artifact(
            p,
            {f"values/{NAME}": torch.zeros(4, 4, dtype=torch.long)},
            _doc("weight_scores", shapes={NAME: [4, 4]}, dense=True),
        ),
        "expected a float dtype",
    ),
}


@pytest.mark.parametrize("case", list(SCORE_TAMPERS))
def test_tampered_scores_are_refused(case, tmp_path):
    make, message = SCORE_TAMPERS[case]
    path = tmp_path / "scores.safetensors"
    make(path)
    with pytest.raises(ValueError, match=re.escape(message)):
        WeightScores.load(path)


def test_tampered_edit_is_refused(llama, tmp_path):
    name = "model.layers.0.mlp.up_proj.weight"
    sel = Selection({name: (64, 32)}, {name: torch.arange(10)})
    edit = ablate.zero_weights(llama, sel)
    good = edit.save(tmp_path / "edit.safetensors")
    assert ablate.WeightEdit.load(good, llama).n_entries() == 10
    _, meta = load_artifact(good, "weight_edit")
    doc = _doc("weight_edit", **meta)
    idx, vals = torch.arange(3), torch.zeros(3)
    cases = {
        "unpaired": ({f"indices/{name}": idx}, doc, "do not pair up"),
        "odd tensor name": ({"weights": vals}, doc, "unexpected tensor 'weights'"),
        "no architecture": (
            {f"indices/{name}": idx, f"values/{name}": vals},
            {k: v for k, v in doc.items() if k != "architecture"},
            "no 'architecture'",
        ),
        "beyond the matrix": (
            {f"indices/{name}": torch.tensor([64 * 32]), f"values/{name}": torch.zeros(1)},
            doc,
            "does not fit this model",
        ),
        "unknown weight": (
            {
                "indices/model.layers.7.mlp.up_proj.weight": idx,
                "values/model.layers.7.mlp.up_proj.weight": vals,
            },
            doc,
            "does not fit this model",
        ),
        "made for other weights": (
            {f"indices/{name}": idx, f"values/{name}": vals},
            doc | {"model_fingerprint": "0123456789abcdef"},
            "was made for model 0123456789abcdef",
        ),
        "wrong format version": ({}, doc | {"format_version": 0}, "format version 0"),
    }
    snap = _snapshot(llama)
    for case, (tensors, d, message) in cases.items():
        path = _raw_artifact(tmp_path / f"{case}.safetensors", tensors, d)
        with pytest.raises(ValueError, match=re.escape(message)):
            ablate.WeightEdit.load(path, llama)
    assert _equal_bits(llama, snap)  # nothing was applied on the way


def test_tampered_fingerprint_in_selection_is_refused(llama, tmp_path):
    name = "model.layers.1.mlp.down_proj.weight"
    sel = Selection({name: (32, 64)}, {name: torch.tensor([0, 1])}, {"model_fingerprint": "ab"})
    back = Selection.load(sel.save(tmp_path / "sel.safetensors"))
    with pytest.raises(ValueError, match="computed on model ab, but this model is"):
        ablate.zero_weights(llama, back)
    with pytest.raises(TypeError, match="must be integers"):
        Selection({name: (32, 64)}, {name: torch.tensor([0.0, 1.0])})


def test_damaged_graph_and_mi_artifacts(tmp_path):
    import networkx as nx

    from spin_interp.graph import GRAPH_FORMAT, load_graph, save_graph
    from spin_interp.mi import BootstrapResult

    G = nx.Graph(format=GRAPH_FORMAT, format_version=1)
    G.add_edge("L0.mlp.1", "L1.mlp.2", weight=0.5)
    for suffix in (".graphml", ".json"):
        path = save_graph(G, tmp_path / f"g{suffix}")
        assert set(load_graph(path).nodes) == set(G.nodes)
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
        with pytest.raises(ValueError, match=re.escape(str(path))):
            load_graph(path)
    G.graph["format_version"] = 7
    with pytest.raises(ValueError, match="graph format version 7"):
        load_graph(save_graph(G, tmp_path / "v7.graphml"))
    bad = save_artifact(
        tmp_path / "boot.safetensors", "mi_bootstrap", {"samples": torch.zeros(3)}, {"alpha": 0.05}
    )
    with pytest.raises(ValueError, match="missing"):
        BootstrapResult.load(bad)


# --------------------------------------------------------------------------------------------------
# atomic writes: full disk, read-only folder, interruption


def _partial_then(exc_factory):
    """A safetensors writer that leaves half a file, then fails (as a full disk would)."""

    def writer(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\x00" * 37)
        raise exc_factory(filename)

    return writer


@pytest.mark.parametrize("what", ["scores", "selection", "edit"])
def test_full_disk_leaves_no_partial_artifact(what, llama, tmp_path, monkeypatch):
    import safetensors.torch

    name = "model.layers.0.mlp.up_proj.weight"
    sel = Selection({name: (64, 32)}, {name: torch.arange(4)}, {"model_fingerprint": None})
    obj = {
        "scores": _dense_scores([1, 2]),
        "selection": sel,
        "edit": ablate.zero_weights(llama, sel),
    }[what]
    path = tmp_path / "artifact.safetensors"
    monkeypatch.setattr(safetensors.torch, "save_file", _partial_then(_raise_enospc))
    with pytest.raises(OSError) as err:
        obj.save(path)
    assert err.value.errno == errno.ENOSPC
    assert _listing(tmp_path) == []
    # an existing artifact is not damaged by a failed overwrite
    monkeypatch.undo()
    obj.save(path)
    before = path.read_bytes()
    monkeypatch.setattr(safetensors.torch, "save_file", _partial_then(_raise_enospc))
    with pytest.raises(OSError):
        obj.save(path)
    assert path.read_bytes() == before and _listing(tmp_path) == ["artifact.safetensors"]


def test_interrupted_write_leaves_nothing(tmp_path):
    def writer(tmp: Path) -> None:
        tmp.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "x.json", writer)
    assert _listing(tmp_path) == []
    with pytest.raises(IsADirectoryError, match="it is a folder"):
        atomic_write(tmp_path, lambda tmp: tmp.write_text("x"))


def test_full_disk_graph_and_summary(tiny_folder, tmp_path, monkeypatch):
    import networkx as nx

    from spin_interp.graph import save_graph

    G = nx.Graph()
    G.add_edge("a", "b")

    def graphml_fails(graph, path, *a, **k):
        Path(path).write_text("<graphml")
        _raise_enospc(path)

    with monkeypatch.context() as mp:
        mp.setattr(nx, "write_graphml", graphml_fails)
        with pytest.raises(OSError, match="No space left"):
            save_graph(G, tmp_path / "g" / "graph.graphml")
    assert _listing(tmp_path) == ["g"]

    # the pipeline's summary.json fails to write: every earlier artifact is whole and loadable
    real_write_text = Path.write_text

    def write_text(self, data, *a, **k):
        if self.name.startswith(".summary.json."):
            real_write_text(self, data[: len(data) // 2], *a, **k)
            _raise_enospc(self)
        return real_write_text(self, data, *a, **k)

    monkeypatch.setattr(Path, "write_text", write_text)
    out = tmp_path / "run"
    with pytest.raises(OSError, match="No space left"):
        run_spin(_cfg(tiny_folder, out, export=False), progress=False)
    files = _listing(out)
    assert not any(f.startswith(".") or "summary" in f for f in files), files
    from spin_interp.models import load_model

    sel = Selection.load(out / "selection.safetensors")
    edit = ablate.WeightEdit.load(out / "edit.safetensors", load_model(tiny_folder))
    assert edit.n_entries() == sel.count() > 0


def test_interrupted_pipeline_keeps_finished_artifacts(tiny_folder, tmp_path, monkeypatch):
    """Ctrl-C while the model is being exported: scores, selection and edit are complete and
    loadable; no export folder, no summary, no temporary file is left."""
    from transformers import PreTrainedModel

    def interrupted(self, save_directory, *a, **k):
        Path(save_directory, "model.safetensors").write_bytes(b"\x00" * 100)
        raise KeyboardInterrupt

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", interrupted)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run_spin(_cfg(tiny_folder, out), progress=False)
    assert _listing(out) == [
        "edit.safetensors",
        "scores_fairness.safetensors",
        "scores_general.safetensors",
        "scores_privacy.safetensors",
        "selection.safetensors",
    ]
    scores = [WeightScores.load(out / f"scores_{b}.safetensors") for b in ("fairness", "general")]
    assert scores[0].fingerprint == scores[1].fingerprint
    assert Selection.load(out / "selection.safetensors").fingerprint == scores[0].fingerprint


def _read_only(folder: Path, monkeypatch) -> str:
    """Make ``folder`` read-only. As root the permission bits are not enforced (root bypasses
    them), so then the refusal the kernel would give is simulated: creating a temporary file or
    folder inside ``folder`` raises PermissionError(EACCES). Returns how it was done."""
    folder.chmod(0o555)
    probe = folder / ".probe"
    try:
        probe.write_text("x")
    except PermissionError:
        return "chmod"
    probe.unlink()
    real_mkstemp, real_mkdtemp = tempfile.mkstemp, tempfile.mkdtemp

    def refuse_inside(real):
        def wrapper(*a, dir=None, **k):  # noqa: A002 - tempfile's own keyword
            if dir is not None and Path(dir).resolve().is_relative_to(folder.resolve()):
                raise PermissionError(errno.EACCES, "Permission denied", str(dir))
            return real(*a, dir=dir, **k)

        return wrapper

    monkeypatch.setattr(tempfile, "mkstemp", refuse_inside(real_mkstemp))
    monkeypatch.setattr(tempfile, "mkdtemp", refuse_inside(real_mkdtemp))
    return "simulated"


def test_read_only_output_folder(llama, tmp_path, monkeypatch):
    from spin_interp.export import export_hf

    ro = tmp_path / "ro"
    ro.mkdir()
    how = _read_only(ro, monkeypatch)
    try:
        with pytest.raises(PermissionError):
            _dense_scores([1]).save(ro / "s.safetensors")
        with pytest.raises(PermissionError):
            export_hf(llama, ro / "model")
        assert _listing(ro) == [], how
    finally:
        ro.chmod(0o755)


# --------------------------------------------------------------------------------------------------
# export gate


def test_export_writer_fails_mid_write(llama, tmp_path, monkeypatch):
    """save_pretrained dies half way (full disk): nothing appears; a previous export survives."""
    from transformers import PreTrainedModel

    from spin_interp.export import export_hf

    def dies(self, save_directory, *a, **k):
        Path(save_directory, "model.safetensors").write_bytes(b"\x00" * 100)
        _raise_enospc(save_directory)

    with monkeypatch.context() as mp:
        mp.setattr(PreTrainedModel, "save_pretrained", dies)
        with pytest.raises(OSError, match="No space left"):
            export_hf(llama, tmp_path / "out")
    assert _listing(tmp_path) == []
    out = export_hf(llama, tmp_path / "out")
    before = {p: (out / p).read_bytes() for p in _listing(out)}
    monkeypatch.setattr(PreTrainedModel, "save_pretrained", dies)
    with pytest.raises(OSError, match="No space left"):
        export_hf(llama, out, overwrite=True)
    assert _listing(tmp_path) == ["out"] + [f"out/{p}" for p in sorted(before)]
    assert all((out / p).read_bytes() == b for p, b in before.items())
    with pytest.raises(FileExistsError, match="not empty"):
        export_hf(llama, tmp_path / "out")
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError):
        export_hf(llama, tmp_path / "file")


def test_export_swap_failure_restores_previous(llama, tmp_path, monkeypatch):
    import spin_interp.export as ex

    out = ex.export_hf(llama, tmp_path / "out")
    before = {p: (out / p).read_bytes() for p in _listing(out)}
    real_replace = os.replace

    def replace(src, dst):
        if Path(dst) == out and ".old." not in Path(src).name:
            _raise_enospc(dst)
        return real_replace(src, dst)

    monkeypatch.setattr(ex.os, "replace", replace)
    with pytest.raises(OSError, match="No space left"):
        ex.export_hf(llama, out, overwrite=True)
    assert _listing(tmp_path) == ["out"] + [f"out/{p}" for p in sorted(before)]
    assert all((out / p).read_bytes() == b for p, b in before.items())


# --------------------------------------------------------------------------------------------------
# edits


def _edits(model):
    """One edit of each kind, overlapping on layer 0's MLP down projection."""
    down = "model.layers.0.mlp.down_proj.weight"
    weights = ablate.zero_weights(
        model, Selection({down: (32, 64)}, {down: torch.arange(0, 2048, 7)})
    )
    neurons = ablate.zero_neurons(
        model,
        Selection({"model.layers.0.mlp": (64,)}, {"model.layers.0.mlp": torch.tensor([1, 3])}),
    )
    torch.manual_seed(0)
    project = ablate.project_out(model, torch.randn(2, 32), layer=0)
    return {"zero_weights": weights, "zero_neurons": neurons, "project_out": project}


def test_every_edit_kind_reverts_bit_exact(llama):
    snap, fp = _snapshot(llama), model_fingerprint(llama)
    for kind, edit in _edits(llama).items():
        assert edit.meta["kind"] == kind
        with edit.applied():
            assert not _equal_bits(llama, snap), kind
        assert _equal_bits(llama, snap), kind
        assert model_fingerprint(llama) == fp


def test_overlapping_edits_of_all_kinds_revert_in_any_order(llama):
    """Apply three overlapping edits, revert them in each of the 6 orders: after every revert the
    weights equal the remaining edits applied (in their original order) to a fresh copy, and at
    the end the original model, bit for bit."""
    snap = _snapshot(llama)
    edits = _edits(llama)
    order0 = list(edits)
    for order in permutations(order0):
        for k in order0:
            edits[k].apply()
        left = list(order0)
        for k in order:
            edits[k].revert()
            left.remove(k)
            fresh = tiny_model("llama")
            for j in left:
                ablate.WeightEdit(fresh, edits[j].changes, edits[j].meta).apply()
            assert _equal_bits(llama, _snapshot(fresh)), (order, k)
        assert _equal_bits(llama, snap), order


def test_edit_refuses_another_model(llama):
    edit = _edits(llama)["zero_weights"]
    other_weights = tiny_model("llama", seed=5)
    with pytest.raises(ValueError, match="made for model"):
        ablate.WeightEdit(other_weights, edit.changes, edit.meta).apply()
    other_arch = tiny_model("qwen2")
    with pytest.raises(ValueError, match="another architecture"):
        ablate.WeightEdit(other_arch, edit.changes, edit.meta).apply()
    # weights changed behind the edit system's back: the edit no longer fits
    with torch.no_grad():
        hf_parameters(llama)["model.layers.1.mlp.up_proj.weight"][0, 0] += 1.0
    with pytest.raises(ValueError, match="rebuild the edit"):
        edit.apply()
    other = _edits(other_weights)["zero_weights"]
    with pytest.raises(ValueError, match="different model"):
        edit + ablate.WeightEdit(llama, other.changes, other.meta)


# --------------------------------------------------------------------------------------------------
# determinism across processes

_DETERMINISM_SCRIPT = """
import sys
import torch
torch.set_num_threads(1)
from spin_interp.pipeline import DatasetSpec, SpinConfig, run_spin
spec = DatasetSpec(n=2, seed=3)
cfg = SpinConfig(model=sys.argv[1], fairness=spec, privacy=spec, general=spec, p=0.01, q=0.05,
                 keep_fraction=0.1, out_dir=sys.argv[2], eval_sentences=3, max_len=96)
run_spin(cfg, progress=False)
"""


def _digest(folder: Path) -> dict[str, str]:
    from safetensors import safe_open

    out = {}
    for f in (
        "scores_fairness.safetensors",
        "scores_privacy.safetensors",
        "scores_general.safetensors",
        "selection.safetensors",
        "edit.safetensors",
        "model/model.safetensors",
    ):
        out[f] = hashlib.sha256((folder / f).read_bytes()).hexdigest()
        with safe_open(str(folder / f), framework="pt") as fh:
            for k in sorted(fh.keys()):
                t = fh.get_tensor(k).contiguous()
                out[f"{f}:{k}"] = hashlib.sha256(t.view(torch.uint8).numpy().tobytes()).hexdigest()
    summary = json.loads((folder / "summary.json").read_text())
    for key in ("perplexity_before", "perplexity_after", "selection_count", "model_fingerprint"):
        out[key] = repr(summary[key])
    info = json.loads((folder / "model" / "spin_interp.json").read_text())
    out["max_abs_logit_diff"] = repr(info["max_abs_logit_diff"])
    return out


def test_same_config_same_bits_in_two_processes(tiny_folder, tmp_path):
    """One run in a fresh Python process (its own hash seed), one in this process, at the same
    time: scores, selection, edit, exported weights and perplexities agree bit for bit."""
    script = tmp_path / "run.py"
    script.write_text(_DETERMINISM_SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONHASHSEED="12345", HF_HUB_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    cmd = [sys.executable, str(script), str(tiny_folder), str(tmp_path / "out0")]
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    try:
        spec = DatasetSpec(n=2, seed=3)
        cfg = _cfg(tiny_folder, tmp_path / "out1", fairness=spec, privacy=spec, general=spec)
        run_spin(cfg, progress=False)
    finally:
        _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    a, b = _digest(tmp_path / "out0"), _digest(tmp_path / "out1")
    assert len(a) > 12 and a == b
    assert json.loads(a["selection_count"]) > 0


# --------------------------------------------------------------------------------------------------
# safe loading


_FORBIDDEN_MODULES = {"pickle", "cPickle", "dill", "cloudpickle", "joblib", "marshal", "shelve"}
_FORBIDDEN_TEXT = ("torch.load(", "trust_remote_code=True", "weights_only=False", "read_pickle")


def test_package_never_unpickles_or_runs_code():
    offences = []
    for path in sorted((REPO / "spin_interp").rglob("*.py")):
        src = path.read_text()
        where = path.relative_to(REPO)
        offences += [f"{where}: {t}" for t in _FORBIDDEN_TEXT if t in src]
        if re.search(r"(?<![\w.])(eval|exec)\(", src):
            offences.append(f"{where}: eval(/exec(")
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, ast.Import):
                mods = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                mods = {(node.module or "").split(".")[0]}
            else:
                mods = set()
            offences += [f"{where}: import {m}" for m in mods & _FORBIDDEN_MODULES]
            if isinstance(node, ast.Call):
                func = node.func
                if isinstance(func, ast.Name) and func.id in ("eval", "exec", "__import__"):
                    offences.append(f"{where}:{node.lineno}: {func.id}()")
                if isinstance(func, ast.Attribute) and func.attr == "load":
                    base = func.value
                    if isinstance(base, ast.Name) and base.id in ("torch", "pickle", "np"):
                        offences.append(f"{where}:{node.lineno}: {base.id}.load()")
                for kw in node.keywords:
                    if kw.arg in ("trust_remote_code", "allow_pickle") and (
                        isinstance(kw.value, ast.Constant) and kw.value.value is True
                    ):
                        offences.append(f"{where}:{node.lineno}: {kw.arg}=True")
    assert offences == []


def test_trust_remote_code_only_on_request(tiny_folder, monkeypatch):
    import transformers

    from spin_interp.models import load_model

    seen: list[tuple[str, object]] = []
    for cls in (transformers.AutoModelForCausalLM, transformers.AutoTokenizer):
        real = cls.from_pretrained.__func__

        def spy(c, *a, _real=real, _name=cls.__name__, **k):
            seen.append((_name, k.get("trust_remote_code", False)))
            return _real(c, *a, **k)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(spy))
    load_model(tiny_folder)
    assert seen and all(v is False for _, v in seen), seen
    seen.clear()
    load_model(tiny_folder, trust_remote_code=True)
    assert {n for n, v in seen if v is True} == {"AutoModelForCausalLM", "AutoTokenizer"}


# --------------------------------------------------------------------------------------------------
# configs


def test_config_type_errors_and_bad_files(tmp_path):
    for raw, msg in (
        ({"export": "no"}, "export must be true or false"),
        ({"overwrite": 1}, "overwrite must be true or false"),
        ({"eval_sentences": True}, "eval_sentences"),
        ({"evaluate": "everything"}, "evaluate must be one of"),
        ({"targets": []}, "targets must be a non-empty"),
        ({"fairness": {"seed": False}}, "fairness.seed"),
        ({"out_dir": ""}, "out_dir"),
    ):
        with pytest.raises(ConfigError, match=msg):
            SpinConfig.from_dict(raw)
    latin1 = tmp_path / "c.toml"
    latin1.write_bytes('model = "caf\xe9"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8"):
        SpinConfig.from_toml(latin1)
    with pytest.raises(ConfigError, match="no config file"):
        SpinConfig.from_toml(tmp_path)
    (tmp_path / "taken").write_text("x")
    with pytest.raises(FileExistsError, match="not a folder"):
        run_spin(SpinConfig(out_dir=str(tmp_path / "taken")), progress=False)


_TOML_PIECES = st.sampled_from(
    [
        "model",
        "p",
        "q",
        "mode",
        "targets",
        "max_len",
        "fairness",
        "n",
        "seed",
        "export",
        "evaluate",
        "[fairness]",
        "[privacy]",
        "[[general]]",
        "=",
        " ",
        "\n",
        '"',
        "'",
        "[",
        "]",
        "{",
        "}",
        ",",
        "0.001",
        "1e-4",
        "-1",
        "2",
        "true",
        "nan",
        "inf",
        "1979-05-27",
        '"paper"',
        '"mlp"',
        "#",
        ".",
    ]
)


def _toml_value():
    scalar = st.one_of(
        st.integers(-5, 600),
        st.floats(allow_nan=True, allow_infinity=True),
        st.booleans(),
        st.text(max_size=6),
        st.sampled_from(["paper", "mlp", "snip", "chat", "float32", "none", "score"]),
        st.dates(),
    )
    return st.one_of(scalar, st.lists(scalar, max_size=3))


def _render(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(repr(v), repr(v))
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_render(x) for x in v) + "]"
    return str(v)


_KEYS = [
    "model",
    "p",
    "q",
    "mode",
    "method",
    "targets",
    "format",
    "max_len",
    "keep_fraction",
    "export",
    "overwrite",
    "eval_sentences",
    "evaluate",
    "eval_seed",
    "dtype",
    "out_dir",
    "x",
]
_SPEC_KEYS = ["n", "seed", "safe", "split", "source", "y"]


@settings(max_examples=150, deadline=None)
@given(
    text=st.one_of(st.lists(_TOML_PIECES, max_size=25).map("".join), st.text(max_size=60)),
    top=st.dictionaries(st.sampled_from(_KEYS), _toml_value(), max_size=5),
    tables=st.dictionaries(
        st.sampled_from(["fairness", "privacy", "general"]),
        st.dictionaries(st.sampled_from(_SPEC_KEYS), _toml_value(), max_size=3),
        max_size=2,
    ),
    raw=st.binary(max_size=20),
)
def test_random_toml_gives_config_or_config_error(text, top, tables, raw):
    """Random TOML text, random well-formed TOML with random values, random bytes: each is a valid
    SpinConfig or a ConfigError, never another exception."""
    structured = "".join(f"{k} = {_render(v)}\n" for k, v in top.items()) + "".join(
        f"[{t}]\n" + "".join(f"{k} = {_render(v)}\n" for k, v in body.items())
        for t, body in tables.items()
    )
    with tempfile.TemporaryDirectory() as d:
        for i, content in enumerate((text.encode("utf-8"), structured.encode("utf-8"), raw)):
            path = Path(d) / f"c{i}.toml"
            path.write_bytes(content)
            try:
                cfg = SpinConfig.from_toml(path)
            except ConfigError:
                event(f"input {i}: ConfigError")
                continue
            event(f"input {i}: valid config")
            assert isinstance(cfg, SpinConfig) and cfg.validate() is cfg


# --------------------------------------------------------------------------------------------------
# CLI: exit codes, one-line errors, --debug, fuzzing


def _select_argv(score_files, out, files=("a", "b", "g"), p="0.25") -> list[str]:
    paths = [str(score_files[k]) for k in files]
    return ["select", *paths, "-o", str(out), "--p", p, "--q", "0.25"]


def _run_cli(argv, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main(argv)
    out, err = capsys.readouterr()
    return e.value.code, out, err


def test_cli_runtime_failure_exit_1_and_debug(score_files, tmp_path, monkeypatch, capsys):
    import spin_interp.select as select_mod

    def broken(*a, **k):
        raise RuntimeError("the set algebra broke\n(second line of detail)")

    monkeypatch.setattr(select_mod, "select_coupled", broken)
    out = tmp_path / "sel.safetensors"
    argv = _select_argv(score_files, out)
    code, _, err = _run_cli(argv, capsys)
    assert code == 1 and "Traceback" not in err
    assert err.strip().splitlines() == [
        "error: RuntimeError: the set algebra broke (second line of detail)"
    ]
    code, _, err = _run_cli(["--debug", *argv], capsys)
    assert code == 1 and "Traceback (most recent call last)" in err and "broken" in err
    assert err.strip().splitlines()[-1].startswith("error: RuntimeError")
    code, _, err = _run_cli(argv, capsys)  # --debug does not stick to the next call
    assert code == 1 and "Traceback" not in err

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(select_mod, "select_coupled", interrupted)
    code, _, err = _run_cli(argv, capsys)
    assert code == 1 and err.strip() == "error: interrupted"
    assert not out.exists()


def test_cli_validation_and_disk_errors(score_files, tmp_path, monkeypatch, capsys):
    import safetensors.torch

    import spin_interp.models

    def no_model(*a, **k):
        raise AssertionError("the model must not be loaded for a bad argument")

    monkeypatch.setattr(spin_interp.models, "load_model", no_model)
    monkeypatch.setattr("spin_interp.load_model", no_model)
    out = tmp_path / "o.safetensors"
    for argv, msg in (
        (["score", "fairnes", "-o", str(out)], "unknown behaviour 'fairnes'"),
        (["score", "privacy", "--method", "grad", "-o", str(out)], "unknown method"),
        (["score", "privacy", "--keep-fraction", "0", "-o", str(out)], "keep-fraction"),
        (["score", "privacy", "-o", str(tmp_path)], "is a folder"),
        (["ablate", str(score_files["a"]), "-o", str(tmp_path / "m")], "'weight_scores' artifact"),
        (["eval", "--suite", "huge"], "unknown suite"),
        (_select_argv(score_files, out, files=("a", "other", "g")), "different models"),
        (_select_argv(score_files, out, p="0"), "fraction in (0, 1]"),
    ):
        code, _, err = _run_cli(argv, capsys)
        assert code == 2, (argv, err)
        assert msg in err and len(err.strip().splitlines()) == 1, err
    assert _listing(tmp_path) == []
    monkeypatch.setattr(safetensors.torch, "save_file", _partial_then(_raise_enospc))
    argv = _select_argv(score_files, out)
    code, _, err = _run_cli(argv, capsys)
    assert code == 1 and err.startswith("error: OSError") and "No space left" in err
    assert _listing(tmp_path) == []


def _flat(item):
    return item if isinstance(item, list) else [item]


_FLAGS = [
    "--p",
    "--q",
    "--mode",
    "-o",
    "--out",
    "--bogus",
    "--quiet",
    "--debug",
    "-q",
    "--help",
    "--n",
    "--method",
    "--model",
    "--split",
]


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_cli_fuzz_exits_cleanly(data, score_files, tmp_path_factory, capsys):
    """Random argument lists: always SystemExit 0, 1 or 2, and no traceback without --debug.
    Model loading and the pipeline are stubbed (no model is ever loaded)."""
    import spin_interp.models
    import spin_interp.pipeline

    work = tmp_path_factory.mktemp("fuzz")
    toml = work / "c.toml"
    toml.write_text(data.draw(st.lists(_TOML_PIECES, max_size=12).map("".join), "toml"))
    corrupt = work / "bad.safetensors"
    corrupt.write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{....")
    paths = []
    for k in ("a", "b", "g", "other"):  # copies: "-o" may name any of them
        paths.append(str(work / f"{k}.safetensors"))
        Path(paths[-1]).write_bytes(Path(score_files[k]).read_bytes())
    paths += [str(toml), str(corrupt), str(work / "missing"), str(work), str(work / "o.st")]
    token = st.one_of(
        st.sampled_from(_FLAGS),
        st.sampled_from(paths),
        st.sampled_from(["0.25", "0", "-1", "nan", "1e-300", "2", "paper", "reference", "x"]),
        st.text(max_size=6),
    )
    number = st.one_of(
        st.sampled_from(["0.25", "0.5", "1", "0", "-1", "nan", "inf", "1e-300", "2", "x"]),
        st.floats(allow_nan=True).map(repr),
    )
    scores = st.sampled_from(paths[:6] + paths[-3:-1])
    shaped = st.one_of(  # well-formed commands with random values reach deeper than noise
        st.tuples(
            st.just(["select"]),
            st.lists(scores, min_size=3, max_size=3),
            st.sampled_from([["-o", paths[-1]], ["-o", str(work)], []]),
            st.lists(st.tuples(st.sampled_from(["--p", "--q"]), number).map(list), max_size=2),
            st.sampled_from([[], ["--mode", "reference"], ["--mode", "single"], ["--mode", "x"]]),
        ),
        st.tuples(
            st.just(["score"]),
            st.sampled_from([["privacy"], ["general"], ["fairness"], ["fair"], []]),
            st.sampled_from([["-o", paths[-1]], ["-o", str(work)], []]),
            st.lists(
                st.tuples(st.sampled_from(["--n", "--keep-fraction", "--split"]), number).map(list),
                max_size=2,
            ),
        ),
        st.tuples(st.just(["run"]), st.sampled_from([[str(toml)], [str(work)], [paths[0]]])),
    ).map(lambda parts: [x for part in parts for item in part for x in _flat(item)])
    noise = st.tuples(
        st.sampled_from(["select", "models", "run", "score", "sco", "", "--help"]),
        st.lists(token, max_size=8),
    ).map(lambda t: ([t[0]] if t[0] else []) + t[1])
    head = data.draw(st.lists(st.sampled_from(["--quiet", "--debug", "--bogus"]), max_size=2))
    argv = head + data.draw(st.one_of(shaped, noise))

    def stub(*a, **k):
        raise RuntimeError("stubbed out in the fuzz test")

    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        mp.setattr(spin_interp.models, "load_model", stub)
        mp.setattr("spin_interp.load_model", stub)
        mp.setattr(spin_interp.pipeline, "run_spin", stub)
        with pytest.raises(SystemExit) as e:
            main(argv)
    _, err = capsys.readouterr()
    assert e.value.code in (0, 1, 2), (argv, e.value.code)
    event(f"exit {e.value.code}")
    if "--debug" not in head:
        assert "Traceback" not in err, (argv, err)
    if e.value.code == 1:
        assert err.strip().splitlines()[-1].startswith("error:"), (argv, err)


@settings(max_examples=60, deadline=None)
@given(
    x=st.sets(st.integers(0, 35)),
    y=st.sets(st.integers(0, 35)),
    z=st.sets(st.integers(0, 35)),
)
def test_selection_algebra_laws_and_round_trip(x, y, z):
    """Extends tests/test_select.py: compound expressions agree with Python sets, and a save /
    load round trip keeps every set exactly."""

    def sel(s):
        return Selection({NAME: (6, 6)}, {NAME: torch.tensor(sorted(s), dtype=torch.long)})

    a, b, c = sel(x), sel(y), sel(z)
    cases = {
        "(a & b) - c": ((a & b) - c, (x & y) - z),
        "(a - c) & (b - c)": ((a - c) & (b - c), (x - z) & (y - z)),
        "(a | b) ^ c": ((a | b) ^ c, (x | y) ^ z),
        "a - (b | c)": (a - (b | c), x - (y | z)),
    }
    for label, (got, want) in cases.items():
        assert set(got[NAME].tolist()) == want, label
        assert got[NAME].tolist() == sorted(want), label  # sorted, unique
    with tempfile.TemporaryDirectory() as d:
        back = Selection.load(((a & b) - c).save(Path(d) / "s.safetensors"))
    assert back == (a & b) - c and back.count() == len((x & y) - z)
