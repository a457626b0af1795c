"""Neuron-graph cost: build a graph of 10,000 candidate MLP units and analyse it.

The model is a random-weight Llama built in-process (7 layers, d_model 576 and d_mlp 1536 as in
SmolLM2-135M, so 10,752 MLP units; 10,000 of them drawn at random are the candidates). Rows:

- ``build weights`` at several thresholds: virtual-weight edges between every earlier/later pair
  (about 43 million pairs, each scored against both gate and up rows), node scores attached;
- ``build coactivation``: Pearson correlation of synthetic activations ``[prompts, 10,000]`` with a
  planted low-rank structure;
- ``collect activations``: real forward passes of the bench model through the bridge, all 10,000
  candidates read from ``blocks.L.mlp.hook_post``;
- analysis on the sparsest weights graph: components, Louvain, degree and sampled betweenness,
  ``graph_summary``, the three selection policies, the weight-entry form, GraphML/JSON save/load.

Run: ``python benchmarks/bench_graph.py [--quick] [--threads 1]``. Writes
``benchmarks/results/bench_graph.json`` (``bench_graph_quick.json`` with ``--quick``) and prints a
markdown table. Times are wall-clock seconds
on this machine with the stated torch thread count. Random weights have no structure: the edge
counts show how the threshold sizes a graph, not what a trained model looks like.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def _timed(fn, *args, **kw) -> tuple[Any, float]:
    t = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t


def _scores(model, fingerprint: str, seed: int) -> dict[str, Any]:
    """Random dense neuron scores (fairness, privacy, general) carrying the model's fingerprint."""
    import torch

    from spin_interp.attribution import WeightScores, neuron_modules

    modules = neuron_modules(model, "mlp")
    gen = torch.Generator().manual_seed(seed)
    width = model.original_model.config.intermediate_size
    out = {}
    for key in ("fairness", "privacy", "general"):
        values = {m: torch.rand(width, generator=gen) for m in modules}
        meta = {"model_fingerprint": fingerprint, "method": "synthetic"}
        out[key] = WeightScores({m: (width,) for m in modules}, values, None, meta)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small model and graph (seconds)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--candidates", type=int, default=None, help="number of candidate units")
    ap.add_argument(
        "--thresholds", type=float, nargs="+", default=None, help="|cos| thresholds to build at"
    )
    ap.add_argument("--prompts", type=int, default=256, help="rows of synthetic activations")
    ap.add_argument("--forward-prompts", type=int, default=None, help="prompts actually run")
    ap.add_argument("--budget", type=int, default=64, help="units per graph-guided selection")
    ap.add_argument("--betweenness-k", type=int, default=64, help="sampled betweenness sources")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--out",
        default=None,
        help="result file (default results/bench_graph.json, or bench_graph_quick.json)",
    )
    args = ap.parse_args()

    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import networkx as nx
    import torch

    torch.set_num_threads(args.threads)
    from spin_interp import graph as sg
    from spin_interp.models import model_fingerprint
    from spin_interp.testing import tiny_examples, tiny_model

    if args.quick:
        dims = dict(n_layers=3, d_model=128, d_mlp=512)
        n_cand = args.candidates or 1200
        thresholds = args.thresholds or [0.3, 0.25]
        fwd = args.forward_prompts or 4
    else:
        dims = dict(n_layers=7, d_model=576, d_mlp=1536)
        n_cand = args.candidates or 10_000
        thresholds = args.thresholds or [0.15, 0.125, 0.11, 0.1]
        fwd = args.forward_prompts or 16
    model, t_model = _timed(tiny_model, "llama", seed=args.seed, **dims)
    total_units = dims["n_layers"] * dims["d_mlp"]
    if n_cand > total_units:
        raise SystemExit(f"--candidates {n_cand} > {total_units} units in the bench model")
    rng = np.random.default_rng(args.seed)
    flat = np.sort(rng.choice(total_units, n_cand, replace=False))
    cands = [(int(i) // dims["d_mlp"], int(i) % dims["d_mlp"]) for i in flat]
    scores = _scores(model, model_fingerprint(model), args.seed)

    rows: list[dict[str, Any]] = []

    def row(stage: str, seconds: float, G: nx.Graph | None = None, **extra: Any) -> None:
        r = {"stage": stage, "seconds": round(seconds, 3)}
        if G is not None:
            r.update(nodes=G.number_of_nodes(), edges=G.number_of_edges())
        r.update(extra)
        rows.append(r)
        print(f"  {stage:<34s} {seconds:8.2f} s  {json.dumps(extra)}", file=sys.stderr)

    G = None
    for thr in thresholds:
        H, t = _timed(sg.build_neuron_graph, model, cands, scores=scores, threshold=thr)
        row(f"build weights (threshold {thr})", t, H, threshold=thr)
        if thr == max(thresholds):
            G = H  # the sparsest graph is analysed below
        del H
    assert G is not None

    # coactivation: synthetic activations with 8 planted factors
    factors = rng.normal(size=(args.prompts, 8))
    loadings = rng.normal(size=(8, n_cand)) * (rng.random(n_cand) < 0.3)
    acts = torch.from_numpy(factors @ loadings + rng.normal(size=(args.prompts, n_cand))).float()
    Gc, t = _timed(
        sg.build_neuron_graph, model, cands, edges="coactivation", activations=acts, threshold=0.5
    )
    row("build coactivation (threshold 0.5)", t, Gc, prompts=args.prompts, threshold=0.5)
    del Gc

    examples = tiny_examples(fwd, seed=args.seed)
    a, t = _timed(sg.collect_unit_activations, model, examples, cands, progress=False)
    row("collect activations (forward)", t, None, prompts=fwd, shape=list(a.shape))

    comps, t = _timed(sg.components, G)
    row("components (weak)", t, G, components=len(comps), largest=len(comps[0]))
    comms, t = _timed(sg.communities, G, seed=args.seed)
    row("communities (Louvain)", t, G, communities=len(comms), largest=len(comms[0]))
    _, t = _timed(sg.centrality, G, "degree")
    row("degree centrality", t, G)
    _, t = _timed(sg.centrality, G, "betweenness", k=args.betweenness_k, seed=args.seed)
    row(f"betweenness (k={args.betweenness_k})", t, G)
    _, t = _timed(sg.graph_summary, G, seed=args.seed)
    row("graph_summary", t, G)
    for policy in sg.POLICIES:
        sel, t = _timed(
            sg.select_by_graph, G, policy, budget=args.budget, seed=args.seed, high=0.5, low=0.5
        )
        row(f"select_by_graph {policy}", t, G, budget=args.budget, chosen=sel.count())
    wsel, t = _timed(sg.to_weight_selection, model, sel)
    row("to_weight_selection", t, None, entries=wsel.count())
    with tempfile.TemporaryDirectory() as tmp:
        for suffix in (".graphml", ".json"):
            path, t = _timed(sg.save_graph, G, Path(tmp) / f"g{suffix}")
            size = path.stat().st_size
            row(f"save {suffix[1:]}", t, G, megabytes=round(size / 2**20, 2))
            H, t = _timed(sg.load_graph, path)
            assert H.number_of_edges() == G.number_of_edges()
            row(f"load {suffix[1:]}", t, H)

    builds = [r for r in rows if r["stage"].startswith("build weights")]
    target = {
        "nodes": n_cand,
        "limit_s": 30.0,
        "worst_build_s": max(r["seconds"] for r in builds),
        "met": all(r["seconds"] <= 30.0 for r in builds),
    }
    result = {
        "benchmark": "bench_graph",
        "quick": args.quick,
        "threads": args.threads,
        "model": {**dims, "arch": "llama (random weights)", "units": total_units},
        "candidates": n_cand,
        "model_build_s": round(t_model, 2),
        "env": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "networkx": nx.__version__,
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "load_avg_1m": os.getloadavg()[0],
        },
        "target": target,
        "rows": rows,
    }
    name = "bench_graph_quick.json" if args.quick else "bench_graph.json"
    out = Path(args.out) if args.out else Path(__file__).parent / "results" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")

    print(
        f"threads={args.threads}; {n_cand} candidate units of a random Llama "
        f"({dims['n_layers']} layers x {dims['d_mlp']} units, d_model {dims['d_model']}); "
        f"load average {result['env']['load_avg_1m']:.1f} on {os.cpu_count()} CPUs\n"
    )
    print("| stage | seconds | nodes | edges | notes |")
    print("|---|---:|---:|---:|---|")
    for r in rows:
        notes = {k: v for k, v in r.items() if k not in ("stage", "seconds", "nodes", "edges")}
        note = ", ".join(f"{k}={v}" for k, v in notes.items())
        print(
            f"| {r['stage']} | {r['seconds']:.2f} | {r.get('nodes', '')} | {r.get('edges', '')} "
            f"| {note} |"
        )
    verdict = "met" if target["met"] else "NOT met"
    print(
        f"\ntarget: every {n_cand}-node weights build <= 30 s: {verdict} "
        f"(worst {target['worst_build_s']:.2f} s); wrote {out}"
    )


if __name__ == "__main__":
    main()
