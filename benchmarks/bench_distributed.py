"""Data-parallel SNIP scoring: 1 vs 2 torchrun processes (gloo, CPU, one torch thread each).

Both runs score the same examples with ``score_weights(..., distributed=True)`` under
``python -m torch.distributed.run --standalone --nproc_per_node=N``. Each rank loads its own model,
the ranks meet at a barrier, and the scoring time is measured from that barrier to the end of
``score_weights`` (the all-reduce and top-k included; the slowest rank counts). The wall time of
the whole launch (process start, imports, model loading) is reported beside it. The two results are
compared: the all-reduce sums the ranks' partial sums, a different summation order than one
process, so values agree to rounding and the kept entries should be the same.

Run: ``python benchmarks/bench_distributed.py [--quick] [--n-examples 8] [--max-procs 2]``.
Default model: SmolLM2-135M-Instruct (dequantised Q4_1); ``--quick``: a tiny random Llama. Writes
``benchmarks/results/bench_distributed.json`` and prints a table. The speed-up is whatever this
machine gives: with 2 cores shared with other work, expect well under 2x.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "bench_distributed.json"

from _examples import EXAMPLES  # noqa: E402  (benchmarks/ is on sys.path when run)


def worker(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(1)
    from spin_interp import distributed as dist
    from spin_interp.attribution import score_weights
    from spin_interp.models import encode_example, get_tokenizer

    ctx = dist.init_process_group("gloo")
    if args.quick:
        from spin_interp.models import from_hf
        from spin_interp.testing import tiny_hf_model, tiny_tokenizer

        model = from_hf(tiny_hf_model("llama", n_layers=4, d_model=64, d_mlp=256), tiny_tokenizer())
    else:
        import spin_interp as si

        model = si.load_model(args.model)
    tok = get_tokenizer(model)
    pairs = []
    for prompt, response in (EXAMPLES * 8)[: args.n]:
        enc = encode_example(tok, prompt, response)
        pairs.append((enc.input_ids, enc.labels))
    ctx.barrier()
    t0 = time.perf_counter()
    score_weights(
        model,
        pairs,
        targets=args.targets,
        keep_fraction=1e-3,
        progress=False,
        distributed=True,
        save_to=Path(args.out) / "scores.safetensors",
    )
    mine = time.perf_counter() - t0
    times = ctx.all_gather_object(mine)
    if ctx.is_main:
        (Path(args.out) / "timing.json").write_text(
            json.dumps(
                {
                    "world_size": ctx.world_size,
                    "per_rank_s": times,
                    "n_tokens": int(sum(len(p[0]) for p in pairs)),
                }
            )  # fmt: skip
        )
    dist.destroy_process_group()


def _launch(nproc: int, args: argparse.Namespace, out: Path) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_VERBOSITY", "error")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", __file__, "--worker", "--out", str(out), "--n-examples",
           str(args.n), "--model", args.model, "--targets", args.targets]  # fmt: skip
    if args.quick:
        cmd.append("--quick")
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"{nproc} processes failed:\n{r.stderr[-4000:]}")
    timing = json.loads((out / "timing.json").read_text())
    timing["launch_wall_s"] = wall
    timing["scoring_s"] = max(timing["per_rank_s"])
    return timing


def _compare(a_path: Path, b_path: Path) -> dict:
    """How far two sparse score files agree: kept values, kept index sets, their order."""
    import torch

    from spin_interp.attribution import WeightScores

    a, b = WeightScores.load(a_path), WeightScores.load(b_path)
    differing_entries = 0
    differing_matrices = 0
    same_order = True
    rel = 0.0
    for n in a.names():
        ia, ib = a.indices[n], b.indices[n]  # type: ignore[index]
        sa, sb = set(ia.tolist()), set(ib.tolist())
        differing_entries += len(sa ^ sb) // 2
        differing_matrices += sa != sb
        same_order &= torch.equal(ia, ib)
        rel = max(rel, float((a.values[n] - b.values[n]).abs().max() / a.values[n].abs().max()))
    kept = sum(a.n_kept(n) for n in a.names())
    return {
        "kept_entries": kept,
        "entries_swapped_at_the_boundary": differing_entries,
        "matrices_with_a_different_kept_set": differing_matrices,
        "same_order": same_order,
        "max_rel_diff_of_sorted_values": rel,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--n-examples", dest="n", type=int, default=8)
    ap.add_argument("--targets", default="mlp")
    ap.add_argument("--max-procs", type=int, default=2)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench_distributed_") as tmp:
        for nproc in range(1, args.max_procs + 1):
            out = Path(tmp) / f"np{nproc}"
            out.mkdir()
            runs.append(_launch(nproc, args, out))
            print(f"# {nproc} process(es): {runs[-1]['scoring_s']:.1f} s", file=sys.stderr)
        agreement = _compare(Path(tmp) / "np1" / "scores.safetensors",
                             Path(tmp) / f"np{args.max_procs}" / "scores.safetensors")  # fmt: skip
    base = runs[0]["scoring_s"]
    for r in runs:
        r["speedup"] = base / r["scoring_s"]
        r["tokens_per_s"] = r["n_tokens"] / r["scoring_s"]
    doc = {
        "benchmark": "bench_distributed",
        "model": "tiny-llama (random)" if args.quick else args.model,
        "note": "gloo on CPU; one torch thread per process; the machine's cores are shared with "
        "other work, so the speed-up is a measurement of this machine, not of the method",
        "threads_per_process": 1,
        "n_examples": args.n,
        "targets": args.targets,
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_avg_at_end": os.getloadavg(),
        },  # fmt: skip
        "runs": runs,
        "agreement_1_vs_max": agreement,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"model {doc['model']}, {args.n} examples, targets {args.targets}, 1 thread per process")
    print("\n| processes | scoring s (slowest rank) | speed-up | tokens/s | launch wall s |")
    print("|---|---|---|---|---|")
    for r in runs:
        print(f"| {r['world_size']} | {r['scoring_s']:.2f} | {r['speedup']:.2f}x | "
              f"{r['tokens_per_s']:.1f} | {r['launch_wall_s']:.1f} |")  # fmt: skip
    a = agreement
    print(f"\n1 vs {args.max_procs} processes: {a['entries_swapped_at_the_boundary']} of "
          f"{a['kept_entries']} kept entries differ (in {a['matrices_with_a_different_kept_set']}"
          f" matrices), same order: {a['same_order']}, max relative difference of the sorted "
          f"kept values: {a['max_rel_diff_of_sorted_values']:.2e}")  # fmt: skip
    print(f"written {out}")


if __name__ == "__main__":
    main()
