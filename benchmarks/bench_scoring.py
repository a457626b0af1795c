"""Scoring cost: one-pass SNIP vs a bare HF loop vs a per-layer baseline; sparse vs dense size.

(a) bare: a plain Hugging Face model, one forward+backward per example, gradients only for the
    targeted matrices (the floor any exact per-example scorer pays);
(b) spin_interp.score_weights(method="snip") through the TransformerBridge;
(c) per-layer: the released code's cost structure, a full pass over the examples for each layer,
    each pass back-propagating only down to the layer it scores (the fair version of it).

Run: ``python benchmarks/bench_scoring.py [--quick] [--threads 1]``. Writes
``benchmarks/results/bench_scoring.json`` and prints a markdown table. Times are wall-clock on this
machine with the stated thread count; the ratios are measured side by side in one run.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import re
import time
from pathlib import Path

import torch
from _examples import EXAMPLES as PROMPTS  # noqa: E402  (benchmarks/ is on sys.path)

from spin_interp.attribution import resolve_targets, score_weights
from spin_interp.models import encode_example, get_tokenizer


def _loss(hf, ids, labels):
    out = hf(ids[None])
    logits = out.logits if hasattr(out, "logits") else out
    return torch.nn.functional.cross_entropy(logits[0, :-1].float(), labels[1:], ignore_index=-100)


def bare_loop(hf, encoded, names):
    params = dict(hf.named_parameters())
    for p in hf.parameters():
        p.requires_grad_(False)
    for n in names:
        params[n].requires_grad_(True)
    acc = {n: torch.zeros_like(params[n]) for n in names}
    t = time.perf_counter()
    for e in encoded:
        _loss(hf, e.input_ids, e.labels).backward()
        for n in names:
            acc[n] += params[n].grad.abs()
            params[n].grad = None
    return time.perf_counter() - t


def per_layer(hf, encoded, names):
    params = dict(hf.named_parameters())
    layers = sorted({int(re.search(r"layers\.(\d+)\.", n).group(1)) for n in names})
    acc = {n: torch.zeros_like(params[n]) for n in names}
    t = time.perf_counter()
    for layer in layers:
        mine = [n for n in names if f"layers.{layer}." in n]
        for p in hf.parameters():
            p.requires_grad_(False)
        for n in mine:
            params[n].requires_grad_(True)
        for e in encoded:
            _loss(hf, e.input_ids, e.labels).backward()
            for n in mine:
                acc[n] += params[n].grad.abs()
                params[n].grad = None
    elapsed = time.perf_counter() - t
    return elapsed, {n: acc[n] * params[n].detach().abs() for n in names}, len(layers)


def bench(label, bridge, plain_hf, n_examples, keep_fraction=1e-3, repeats=3):
    tok = get_tokenizer(bridge)
    encoded = [encode_example(tok, p, r, "chat") for p, r in (PROMPTS * 10)[:n_examples]]
    pairs = [(e.input_ids, e.labels) for e in encoded]
    names = resolve_targets(bridge, "mlp")
    plain_hf.set_attn_implementation("eager")
    plain_hf.eval()
    score_weights(bridge, pairs[:1], targets="mlp", progress=False)  # warm-up
    # (a) and (b) alternate `repeats` times; the minimum of each is reported (shared cores)
    t_a, t_b = float("inf"), float("inf")
    for _ in range(repeats):
        t_a = min(t_a, bare_loop(plain_hf, encoded, names))
        t = time.perf_counter()
        sparse = score_weights(
            bridge, pairs, targets="mlp", keep_fraction=keep_fraction, progress=False
        )
        t_b = min(t_b, time.perf_counter() - t)
    t = time.perf_counter()
    dense = score_weights(bridge, pairs, targets="mlp", dense=True, progress=False)
    t_b_dense = time.perf_counter() - t
    t_c, ref, n_layers = per_layer(plain_hf, encoded, names)
    max_rel = max(float((dense[n] - ref[n]).abs().max() / ref[n].abs().max()) for n in names)
    dense_bytes = sum(math.prod(s) * 4 for s in dense.shapes.values())
    return {
        "model": label,
        "examples": n_examples,
        "layers": n_layers,
        "matrices": len(names),
        "tokens": sparse.meta["n_tokens"],
        "t_bare_s": t_a,
        "t_snip_s": t_b,
        "t_snip_dense_s": t_b_dense,
        "t_per_layer_s": t_c,
        "ratio_snip_over_bare": t_b / t_a,
        "ratio_per_layer_over_snip": t_c / t_b,
        "per_layer_target": 0.5 * n_layers,
        "max_rel_diff_vs_per_layer": max_rel,
        "sparse_bytes": sparse.nbytes(),
        "dense_fp32_bytes": dense_bytes,
        "size_ratio": sparse.nbytes() / dense_bytes,
        "keep_fraction": keep_fraction,
        "repeats": repeats,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny model only")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--examples", type=int, default=6)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_scoring.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from spin_interp.models import from_hf
    from spin_interp.testing import tiny_hf_model, tiny_tokenizer

    kw = dict(n_layers=8, d_model=128, d_mlp=512, seed=0)
    rows = [
        bench(
            "tiny-llama-8L",
            from_hf(tiny_hf_model("llama", **kw), tiny_tokenizer()),
            tiny_hf_model("llama", **kw),
            n_examples=max(args.examples, 12),
        )
    ]
    if not args.quick:
        from transformers import AutoModelForCausalLM

        import spin_interp as si
        from spin_interp.models import _convert_alias

        folder = _convert_alias("smollm2-135m-instruct")
        rows.append(
            bench(
                "SmolLM2-135M (30L)",
                si.load_model("smollm2-135m-instruct"),
                AutoModelForCausalLM.from_pretrained(folder),
                n_examples=args.examples,
            )
        )
    result = {
        "threads": args.threads,
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"threads={args.threads}  (seconds; (a), (b): min of 3 alternating runs)\n")
    print(
        "| model | ex | layers | bare (a) | snip (b) | per-layer (c) | b/a | c/b (target) |"
        " max rel diff b vs c | sparse / dense size |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['examples']} | {r['layers']} | {r['t_bare_s']:.2f} | "
            f"{r['t_snip_s']:.2f} | {r['t_per_layer_s']:.2f} | {r['ratio_snip_over_bare']:.2f} |"
            f" {r['ratio_per_layer_over_snip']:.1f} (>= {r['per_layer_target']:.1f}) | "
            f"{r['max_rel_diff_vs_per_layer']:.1e} | {100 * r['size_ratio']:.2f}% |"
        )


if __name__ == "__main__":
    main()
