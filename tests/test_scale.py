"""Scoring at scale: bf16 models, layer chunks, torchrun data parallelism, checkpoints and resume.

Subprocess tests run this file as a script (``python tests/test_scale.py kill|dist ...``) on a plain
Hugging Face tiny model (no TransformerLens import, so a worker starts in a few seconds); the data
is written by the test and read by the workers, so every process scores the same token ids.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from spin_interp.attribution import (
    WeightScores,
    checkpoint_path,
    plan_chunks,
    resolve_targets,
    score_weights,
)
from spin_interp.distributed import DistContext
from spin_interp.models import Encoded, encode_example, hf_parameters

REPO = Path(__file__).resolve().parents[1]
SEED = 3


# --------------------------------------------------------------------------------------------------
# helpers shared by the tests and the worker processes


def _plain_model(vocab: int, seed: int = SEED):
    from spin_interp.testing import tiny_hf_model

    return tiny_hf_model("llama", seed=seed, vocab_size=vocab)


def _save_sets(path: Path, sets: dict[str, list[Encoded]]) -> None:
    from safetensors.torch import save_file

    tensors = {}
    for tag, encs in sets.items():
        for i, e in enumerate(encs):
            tensors[f"{tag}/{i:04d}/ids"] = e.input_ids
            tensors[f"{tag}/{i:04d}/labels"] = e.labels
    save_file(tensors, str(path))


def _load_sets(path: Path) -> dict[str, list[tuple[torch.Tensor, torch.Tensor]]]:
    from safetensors.torch import load_file

    raw = load_file(str(path))
    out: dict[str, dict[str, tuple]] = {}
    for key in sorted(raw):
        tag, i, what = key.split("/")
        if what == "ids":
            out.setdefault(tag, {})[i] = (raw[key], raw[f"{tag}/{i}/labels"])
    return {tag: [d[i] for i in sorted(d)] for tag, d in out.items()}


def _pairs(tok, n: int, seed: int) -> list[Encoded]:
    from spin_interp.testing import tiny_examples

    return [encode_example(tok, e.prompt, e.response) for e in tiny_examples(n, seed=seed)]


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*")) if folder.exists() else []


def _assert_same(a: WeightScores, b: WeightScores) -> None:
    assert a.names() == b.names() and a.dense == b.dense
    for n in a.names():
        assert torch.equal(a.values[n], b.values[n]), n
        if not a.dense:
            assert torch.equal(a.indices[n], b.indices[n]), n  # type: ignore[index]


def _run(cmd: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)


class _Stop(Exception):
    pass


def _stop_after(n: int):
    def callback(done: int, total: int) -> None:
        if done == n:
            raise _Stop(f"interrupted after {n} of {total}")

    return callback


# --------------------------------------------------------------------------------------------------
# memory: dtype, requires_grad, layer chunks


def test_bf16_model_accumulates_in_fp32(tok, tmp_path):
    """A model loaded in bf16 (load_model(..., dtype=bfloat16)) runs in bf16, scored in fp32.

    Reference: the same bridge's own bf16 gradients from torch.autograd.grad, one example at a time,
    |grad| added into an fp32 sum in example order: bit-identical. Summing the same gradients in
    bf16 gives a different answer, and an independent plain-HF bf16 model agrees to bf16 precision.
    """
    import spin_interp as si
    from spin_interp.testing import tiny_hf_model

    folder = tmp_path / "tiny-bf16"
    tiny_hf_model("llama", seed=SEED).save_pretrained(folder)
    tok.save_pretrained(folder)
    model = si.load_model(folder, dtype=torch.bfloat16)
    assert next(model.parameters()).dtype == torch.bfloat16
    encoded = _pairs(tok, 6, seed=1)
    name = "model.layers.1.mlp.down_proj.weight"
    s = score_weights(model, [(e.input_ids, e.labels) for e in encoded], targets=[name],
                      dense=True, progress=False)  # fmt: skip
    assert s[name].dtype == torch.float32

    def reference(net, w):
        acc32 = torch.zeros(w.shape, dtype=torch.float32)
        acc16 = torch.zeros(w.shape, dtype=torch.bfloat16)
        for e in encoded:
            out = net(e.input_ids[None])
            logits = (out.logits if hasattr(out, "logits") else out)[0].float()
            loss = torch.nn.functional.cross_entropy(logits[:-1], e.labels[1:], ignore_index=-100)
            (g,) = torch.autograd.grad(loss, [w])
            assert g.dtype == torch.bfloat16
            acc32 += g.abs()
            acc16 += g.abs()
        scale = w.detach().abs().float()
        return acc32 * scale, acc16.float() * scale

    ref32, ref16 = reference(model, hf_parameters(model)[name])
    assert torch.equal(s[name], ref32)
    assert not torch.equal(s[name], ref16)
    hf = tiny_hf_model("llama", seed=SEED).to(torch.bfloat16)
    hf.set_attn_implementation("eager")
    independent, _ = reference(hf, dict(hf.named_parameters())[name])
    assert float((s[name] - independent).abs().max() / independent.abs().max()) < 3e-2


def test_only_targets_get_gradients(llama):
    """Untargeted parameters have requires_grad off during scoring and no .grad ever survives."""
    target = "model.layers.1.mlp.up_proj.weight"
    t = hf_parameters(llama)[target]
    seen = []

    def check(done: int, total: int) -> None:
        live = [p for p in llama.parameters() if p.requires_grad]
        assert live and all(p.untyped_storage().data_ptr() == t.untyped_storage().data_ptr()
                            for p in live)  # fmt: skip
        named = {n for n, p in hf_parameters(llama).items() if p.requires_grad}
        assert named == {target}
        assert all(p.grad is None for p in llama.parameters())
        seen.append(done)

    score_weights(llama, _tiny_examples(3), targets=[target], progress=False, on_example=check)
    assert seen == [1, 2, 3]


def _tiny_examples(n: int, seed: int = 0):
    from spin_interp.testing import tiny_examples

    return tiny_examples(n, seed=seed)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_layer_chunk_is_bit_identical(arch):
    """Each weight's gradient comes from the same operations whichever pass computes it, and the
    examples are added in the same order, so chunked scores equal one-pass scores exactly."""
    from spin_interp.testing import tiny_model

    model = tiny_model(arch, n_layers=3, seed=4)
    exs = _tiny_examples(3, seed=2)
    one = score_weights(model, exs, targets="all", dense=True, progress=False)
    for k in (1, 2, 3):
        _assert_same(one, score_weights(model, exs, targets="all", dense=True, progress=False,
                                        layer_chunk=k))  # fmt: skip
    sparse = score_weights(model, exs, targets="all", keep_fraction=0.02, progress=False)
    _assert_same(sparse, score_weights(model, exs, targets="all", keep_fraction=0.02,
                                       progress=False, layer_chunk=2))  # fmt: skip
    for n in sparse.names():  # only the top-k reach the host, not views of a dense accumulator
        v, i = sparse.topk(n)
        assert v.untyped_storage().nbytes() == v.numel() * v.element_size()
        assert i.untyped_storage().nbytes() == i.numel() * i.element_size()
    wanda = score_weights(model, exs, method="wanda", targets="mlp", dense=True, progress=False)
    _assert_same(wanda, score_weights(model, exs, method="wanda", targets="mlp", dense=True,
                                      progress=False, layer_chunk=1))  # fmt: skip


def test_chunk_plan(llama):
    names = resolve_targets(llama, "mlp")
    assert plan_chunks(llama, names, None) == [names]
    plan = plan_chunks(llama, names, 1)
    assert [len(c) for c in plan] == [3, 3]
    assert all(".layers.0." in n for n in plan[0]) and all(".layers.1." in n for n in plan[1])
    assert plan_chunks(llama, names, 2) == [names]
    only_top = ["model.layers.1.mlp.up_proj.weight"]
    assert plan_chunks(llama, only_top, 1) == [only_top]


def test_chunked_pass_stops_backprop_at_its_lowest_layer(llama):
    """In the pass for layer 1 nothing below layer 1's MLP requires grad: autograd records no
    graph there, so the backward never reaches layer 1's attention, let alone layer 0."""
    hf = llama.original_model
    flags: list[bool] = []
    hook = hf.model.layers[1].self_attn.q_proj.register_forward_hook(
        lambda m, i, o: flags.append(o.requires_grad)
    )
    try:
        exs = _tiny_examples(2)
        score_weights(llama, exs, targets="mlp", progress=False)
        assert flags == [True, True]  # one pass: layer 0's MLP sits below layer 1's attention
        flags.clear()
        score_weights(llama, exs, targets="mlp", progress=False, layer_chunk=1)
        assert flags == [True, True, False, False]  # pass for layer 0, then pass for layer 1
    finally:
        hook.remove()


@pytest.mark.integration
def test_smollm2_layer_chunk_matches_one_pass(smollm2):
    """On the real SmolLM2 (30 layers): the top three layers' MLPs scored one layer per pass
    equal the one-pass scores bit for bit (each pass back-propagates one to three layers)."""
    names = [n for n in resolve_targets(smollm2, "mlp") if n.split(".")[2] in ("27", "28", "29")]
    exs = _tiny_examples(2)
    one = score_weights(smollm2, exs, targets=names, keep_fraction=1e-3, progress=False)
    chunked = score_weights(smollm2, exs, targets=names, keep_fraction=1e-3, progress=False,
                            layer_chunk=1)  # fmt: skip
    assert len(plan_chunks(smollm2, names, 1)) == 3
    _assert_same(one, chunked)


# --------------------------------------------------------------------------------------------------
# bad input


def test_layer_chunk_out_of_range_leaves_no_files(llama, tmp_path):
    ck, out = tmp_path / "ck", tmp_path / "out" / "s.safetensors"
    for bad, exc in ((0, ValueError), (-1, ValueError), (3, ValueError), (True, TypeError),
                     (1.5, TypeError)):  # fmt: skip
        with pytest.raises(exc, match="layer_chunk"):
            score_weights(llama, _tiny_examples(1), progress=False, layer_chunk=bad,
                          checkpoint_dir=ck, save_to=out)  # fmt: skip
    assert not ck.exists() and not out.parent.exists()
    assert all(p.grad is None for p in llama.parameters())


def test_distributed_without_process_group(llama, tmp_path):
    with pytest.raises(RuntimeError, match="torchrun --nproc_per_node=2"):
        score_weights(llama, _tiny_examples(1), progress=False, distributed=True,
                      save_to=tmp_path / "s.safetensors")  # fmt: skip
    assert _files(tmp_path) == []


def test_checkpoint_arguments(llama, tmp_path):
    with pytest.raises(ValueError, match="checkpoint_dir"):
        score_weights(llama, _tiny_examples(1), progress=False, resume=True)
    with pytest.raises(ValueError, match="checkpoint_every"):
        score_weights(llama, _tiny_examples(1), progress=False, checkpoint_dir=tmp_path,
                      checkpoint_every=0)  # fmt: skip
    assert _files(tmp_path) == []


# --------------------------------------------------------------------------------------------------
# checkpoints and resume (one process)


def test_resume_after_interruption_is_bit_identical(llama, tmp_path):
    exs = _tiny_examples(5, seed=1)
    kw = dict(targets="all", keep_fraction=0.05, progress=False)
    full = score_weights(llama, exs, **kw)
    for chunk, stop_at, expect_rest in ((None, 3, 3), (1, 8, 3)):
        ck = tmp_path / f"ck{chunk}"
        with pytest.raises(_Stop):
            score_weights(llama, exs, **kw, layer_chunk=chunk, checkpoint_dir=ck,
                          checkpoint_every=2, on_example=_stop_after(stop_at))  # fmt: skip
        assert _files(ck) == [checkpoint_path(ck).name]  # no temporary file left behind
        assert all(p.grad is None for p in llama.parameters())
        calls: list[int] = []
        resumed = score_weights(llama, exs, **kw, layer_chunk=chunk, checkpoint_dir=ck,
                                checkpoint_every=2, resume=True,
                                on_example=lambda d, t, calls=calls: calls.append(d))  # fmt: skip
        # 5 examples, checkpoint every 2: one pass resumes at example 2; two passes resume the
        # second pass at its example 2 (the first pass's results come from the checkpoint)
        assert len(calls) == expect_rest, calls
        _assert_same(full, resumed)
        assert _files(ck) == []  # removed after success


def test_resume_false_starts_over(llama, tmp_path):
    exs = _tiny_examples(3)
    with pytest.raises(_Stop):
        score_weights(llama, exs, progress=False, checkpoint_dir=tmp_path, checkpoint_every=1,
                      on_example=_stop_after(2))  # fmt: skip
    calls = []
    score_weights(llama, exs, progress=False, checkpoint_dir=tmp_path, checkpoint_every=1,
                  on_example=lambda d, t: calls.append(d))  # fmt: skip
    assert calls == [1, 2, 3] and _files(tmp_path) == []


def _interrupted(model, exs, folder: Path, **kw) -> Path:
    with pytest.raises(_Stop):
        score_weights(model, exs, progress=False, checkpoint_dir=folder, checkpoint_every=1,
                      on_example=_stop_after(2), **kw)  # fmt: skip
    return checkpoint_path(folder)


def test_checkpoint_of_another_run_is_refused(llama, tmp_path):
    from spin_interp.testing import tiny_model

    exs = _tiny_examples(3)
    path = _interrupted(llama, exs, tmp_path)
    before = path.read_bytes()
    cases = [
        (llama, _tiny_examples(3, seed=5), {}, "data_fingerprint"),
        (tiny_model("llama", seed=9), exs, {}, "model_fingerprint"),
        (llama, exs, {"method": "wanda"}, "method"),
        (llama, exs, {"keep_fraction": 0.5}, "keep_fraction"),
        (llama, exs, {"targets": "attn"}, "targets"),
        (llama, exs, {"layer_chunk": 1}, "chunks"),
    ]
    for model, data, kw, field in cases:
        with pytest.raises(ValueError, match=f"different scoring run \\({field}"):
            score_weights(model, data, progress=False, checkpoint_dir=tmp_path, resume=True, **kw)
    assert path.read_bytes() == before and _files(tmp_path) == [path.name]
    assert all(p.grad is None for p in llama.parameters())


def test_world_size_mismatch_is_refused(llama, tmp_path):
    from spin_interp._io import load_artifact, save_artifact

    exs = _tiny_examples(3)
    path = _interrupted(llama, exs, tmp_path / "a")
    tensors, meta = load_artifact(path, "score_checkpoint")
    save_artifact(path, "score_checkpoint", tensors, dict(meta, world_size=2))
    with pytest.raises(ValueError, match="world size 2"):
        score_weights(llama, exs, progress=False, checkpoint_dir=tmp_path / "a", resume=True)
    # a folder that also holds rank 1's file came from a larger run
    path = _interrupted(llama, exs, tmp_path / "b")
    (tmp_path / "b" / checkpoint_path(".", 1).name).write_bytes(path.read_bytes())
    with pytest.raises(ValueError, match="more processes"):
        score_weights(llama, exs, progress=False, checkpoint_dir=tmp_path / "b", resume=True)
    assert len(_files(tmp_path / "b")) == 2 and _files(tmp_path / "a") == [path.name]


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_corrupt_checkpoint_is_refused(llama, tmp_path, damage):
    exs = _tiny_examples(3)
    path = _interrupted(llama, exs, tmp_path)
    raw = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(raw[: len(raw) - 100])
    else:  # one byte of tensor data changed: the header still parses, the digest does not match
        path.write_bytes(raw[:-4] + bytes(b ^ 0xFF for b in raw[-4:]))
    damaged = path.read_bytes()
    flags = {n: p.requires_grad for n, p in llama.named_parameters()}
    with pytest.raises(ValueError, match="corrupt"):
        score_weights(llama, exs, progress=False, checkpoint_dir=tmp_path, resume=True)
    assert path.read_bytes() == damaged and _files(tmp_path) == [path.name]
    assert {n: p.requires_grad for n, p in llama.named_parameters()} == flags


class _FakeRanks(DistContext):
    """Two ranks simulated in one process: collectives return what the other rank would send."""

    def __init__(self, rank, gathered, sent=None):
        super().__init__(rank=rank, world_size=2, backend="fake")
        object.__setattr__(self, "gathered", gathered)
        object.__setattr__(self, "sent", sent)

    def all_gather_object(self, obj):
        return self.gathered

    def broadcast_object(self, obj, src):
        return obj if self.rank == src else self.sent

    def check(self, ok, message="", exc=ValueError):
        if not ok:
            raise exc(message)


def test_reconcile_a_rank_that_lags_one_pass():
    """Rank 1 crashed after the all-reduce of pass 0 but before its next checkpoint; rank 0 got
    into pass 1. On resume rank 1 takes pass 0's (identical, reduced) results from rank 0."""
    from types import SimpleNamespace

    from spin_interp.attribution import _Progress, _reconcile

    ck = SimpleNamespace(chunks=[["a"], ["b"]], shard_size=2, folder="ck")
    result = (torch.tensor([3.0]), torch.tensor([5]))
    gathered = [(1, 1, 2), (0, 2, 2)]
    ahead = _Progress(chunk=1, position=1, acc={"b": torch.ones(2)}, done={"a": result})
    assert _reconcile(ahead, _FakeRanks(0, gathered), ck) is ahead
    behind = _Progress(chunk=0, position=2, acc={"a": torch.ones(2)}, done={})
    got = _reconcile(behind, _FakeRanks(1, gathered, sent={"a": result}), ck)
    assert (got.chunk, got.position, got.acc) == (1, 0, None) and got.done == {"a": result}
    # a lagging rank whose own pass was not complete cannot have let the others past the reduce
    incomplete = _Progress(chunk=0, position=1, acc={"a": torch.ones(2)}, done={})
    with pytest.raises(ValueError, match="out of step"):
        _reconcile(incomplete, _FakeRanks(1, [(1, 1, 2), (0, 1, 2)]), ck)


def test_resume_after_kill_in_a_subprocess(tok, tmp_path):
    """A scoring process killed by os._exit in its second pass resumes bit-identically."""
    data = tmp_path / "data.safetensors"
    encs = _pairs(tok, 5, seed=1)
    _save_sets(data, {"x": encs})
    ck = tmp_path / "ck"
    r = _run([sys.executable, __file__, "kill", str(data), str(ck), str(len(tok)), "--after", "8"])
    assert r.returncode == 17, r.stderr[-3000:]
    assert _files(ck) == [checkpoint_path(ck).name]
    model = _plain_model(len(tok))
    pairs = _load_sets(data)["x"]
    kw = dict(targets="mlp", keep_fraction=0.05, layer_chunk=1, progress=False)
    calls = []
    resumed = score_weights(model, pairs, checkpoint_dir=ck, checkpoint_every=2, resume=True,
                            on_example=lambda d, t: calls.append(d), **kw)  # fmt: skip
    assert calls == [8, 9, 10]  # pass 2 resumes after its 2nd example (checkpoint at 7 of 10)
    _assert_same(score_weights(model, pairs, **kw), resumed)


# --------------------------------------------------------------------------------------------------
# torchrun: two gloo processes on CPU


def test_two_gloo_processes_match_one(tok, tmp_path):
    """2 ranks x 1 thread vs 1 process: equal to <= 1e-6 relative (not bit-identical: each rank
    sums its own shard and the all-reduce adds the two partial sums, a different summation order
    than one process adding the examples one by one), and the same SPIN selection."""
    from spin_interp.select import select_coupled

    data = tmp_path / "data.safetensors"
    sets = {"f": _pairs(tok, 7, seed=1), "p": _pairs(tok, 7, seed=2), "g": _pairs(tok, 7, seed=3)}
    _save_sets(data, sets)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           __file__, "dist", str(data), str(out), str(len(tok))]  # fmt: skip
    r = _run(cmd, timeout=300)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-4000:])

    model = _plain_model(len(tok))
    pairs = _load_sets(data)
    ranks = [{tag: WeightScores.load(out / f"rank{r}-{tag}.safetensors")
              for tag in ("f", "p", "g", "dense", "resumed")} for r in (0, 1)]  # fmt: skip
    for tag in ranks[0]:  # every rank returns the same scores
        _assert_same(ranks[0][tag], ranks[1][tag])
    two = ranks[0]
    assert two["dense"].meta["world_size"] == 2 and two["dense"].meta["n_examples"] == 7
    # the interrupted-and-resumed distributed run equals the uninterrupted one exactly
    _assert_same(two["dense"], two["resumed"])

    one_dense = score_weights(model, pairs["f"], targets="all", dense=True, progress=False)
    for n in one_dense.names():
        ref = one_dense[n]
        rel = (two["dense"][n] - ref).abs().max() / ref.abs().max()
        assert rel <= 1e-6, (n, float(rel))

    one = {t: score_weights(model, pairs[t], keep_fraction=0.05, progress=False) for t in "fpg"}
    for mode in ("paper", "reference"):
        a = select_coupled(one["f"], one["p"], one["g"], p=0.02, q=0.05, mode=mode)
        b = select_coupled(two["f"], two["p"], two["g"], p=0.02, q=0.05, mode=mode)
        assert a == b and a.count() > 0
    # rank 0 alone wrote the artifact asked for with save_to; no temporary or checkpoint remains
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith("rank")) == [
        "saved-f.safetensors"
    ]
    _assert_same(WeightScores.load(out / "saved-f.safetensors"), two["f"])


# --------------------------------------------------------------------------------------------------
# worker processes


def _worker_kill(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    model = _plain_model(args.vocab)
    pairs = _load_sets(Path(args.data))["x"]

    def die(done: int, total: int) -> None:
        if done == args.after:
            os._exit(17)  # no cleanup, no exception handling: like a kill

    score_weights(model, pairs, targets="mlp", keep_fraction=0.05, layer_chunk=1, progress=False,
                  checkpoint_dir=args.ck, checkpoint_every=2, on_example=die)  # fmt: skip
    raise SystemExit("the worker was meant to die before finishing")


def _worker_dist(args: argparse.Namespace) -> None:
    from spin_interp import distributed as dist

    torch.set_num_threads(1)
    ctx = dist.init_process_group("gloo")
    out = Path(args.out)
    model = _plain_model(args.vocab)
    sets = _load_sets(Path(args.data))
    results = {}
    for tag in "fpg":
        results[tag] = score_weights(
            model, sets[tag], keep_fraction=0.05, progress=False, distributed=True,
            save_to=out / "saved-f.safetensors" if tag == "f" else None,
        )  # fmt: skip
    kw = dict(targets="all", dense=True, progress=False, distributed=True)
    results["dense"] = score_weights(model, sets["f"], **kw)
    ck = out / "ck"
    try:  # both ranks stop in the second pass (layer 1); checkpoints every example
        score_weights(model, sets["f"], **kw, layer_chunk=1, checkpoint_dir=ck,
                      checkpoint_every=1, on_example=_stop_after(5))  # fmt: skip
        raise SystemExit("expected an interruption")
    except _Stop:
        pass
    results["resumed"] = score_weights(model, sets["f"], **kw, layer_chunk=1, checkpoint_dir=ck,
                                       checkpoint_every=1, resume=True)  # fmt: skip
    assert not any(ck.iterdir()), "checkpoints must be removed after success"
    for tag, s in results.items():
        s.save(out / f"rank{ctx.rank}-{tag}.safetensors")
    ctx.barrier()
    if ctx.is_main:
        ck.rmdir()
    dist.destroy_process_group()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="mode", required=True)
    k = sub.add_parser("kill")
    k.add_argument("data")
    k.add_argument("ck")
    k.add_argument("vocab", type=int)
    k.add_argument("--after", type=int, required=True)
    d = sub.add_parser("dist")
    d.add_argument("data")
    d.add_argument("out")
    d.add_argument("vocab", type=int)
    ns = parser.parse_args()
    {"kill": _worker_kill, "dist": _worker_dist}[ns.mode](ns)
