"""Peak memory of SNIP scoring: one pass vs ``layer_chunk`` vs dense (and a bf16 model).

Each mode runs in its own child process on the same model and the same examples. The child
records its resident set size (RSS) after the imports, after loading the model and encoding the
data (every weight read once, so that lazily mmapped weights are resident), and at its peak WHILE
SCORING: the kernel's peak-RSS counter (VmHWM) is reset just before
``score_weights`` by writing ``5`` to ``/proc/self/clear_refs``, so the loading peak does not count
(when that is not allowed, RSS is sampled every 2 ms instead). The headline ratio is

    (peak RSS while scoring - RSS after the imports) / fp32 bytes of the model's parameters

i.e. the model's weights + accumulators + gradients + activations + allocator slack, against the
targets one pass <= 3.2x and chunked <= 1.5x (plus activations, which are not subtracted here).
The parent also reads ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` (the largest child so far, loading
included) as a cross-check.

Allocator: glibc keeps freed medium-sized blocks in its arenas, so the peak RSS of a process that
allocates and frees autograd buffers example after example sits above its live memory.
``--allocators default,fixed-mmap`` also runs every mode with ``MALLOC_MMAP_THRESHOLD_=131072``
(blocks above 128 KiB always mmapped, returned to the OS when freed) to show how much of the peak
is allocator slack rather than live tensors.

Run: ``python benchmarks/bench_memory.py [--quick] [--threads 1] [--n 4] [--chunk 3]``. Default
model: SmolLM2-135M-Instruct (``spin_interp.load_model("smollm2-135m-instruct")``, dequantised
Q4_1 weights); ``--quick`` uses a tiny random Llama (its numbers are dominated by the interpreter).
Writes ``benchmarks/results/bench_memory.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "bench_memory.json"

from _examples import EXAMPLES  # noqa: E402  (benchmarks/ is on sys.path when run)

MODES = {
    "one-pass": dict(dense=False, layer_chunk=None, dtype="float32"),
    "chunked": dict(dense=False, layer_chunk="K", dtype="float32"),
    "dense": dict(dense=True, layer_chunk=None, dtype="float32"),
    "one-pass bf16": dict(dense=False, layer_chunk=None, dtype="bfloat16"),
}

MiB = 1024 * 1024


# --------------------------------------------------------------------------------------------------
# child


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _rss_bytes() -> int:
    kib = _status_kib("VmRSS")
    if kib is not None:
        return kib * 1024
    import psutil

    return psutil.Process().memory_info().rss


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _status_kib("VmHWM") is not None


class _Sampler:
    """Fallback peak tracker: samples RSS every 2 ms in a thread."""

    def __init__(self) -> None:
        self.peak = _rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, _rss_bytes())

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return max(self.peak, _rss_bytes())


def child(args: argparse.Namespace) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    import transformer_lens.model_bridge  # noqa: F401  (libraries count in the baseline)
    import transformers  # noqa: F401

    from spin_interp.attribution import resolve_targets, score_weights
    from spin_interp.models import encode_example, get_tokenizer, hf_parameters, model_fingerprint

    gc.collect()
    rss_imports = _rss_bytes()
    mode = MODES[args.mode]
    dtype = getattr(torch, mode["dtype"])
    if args.quick:
        from spin_interp.models import from_hf
        from spin_interp.testing import tiny_hf_model, tiny_tokenizer

        hf = tiny_hf_model("llama", n_layers=4, d_model=64, d_mlp=256).to(dtype)
        model = from_hf(hf, tiny_tokenizer(), name="tiny-llama")
    else:
        import spin_interp as si

        model = si.load_model(args.model, dtype=dtype)
    tok = get_tokenizer(model)
    pairs = []
    for prompt, response in (EXAMPLES * 4)[: args.n]:
        enc = encode_example(tok, prompt, response)
        pairs.append((enc.input_ids, enc.labels))
    params = hf_parameters(model)
    names = resolve_targets(model, args.targets)
    numel = sum(t.numel() for t in {t.data_ptr(): t for t in params.values()}.values())
    target_numel = sum(params[n].numel() for n in names)
    n_layers = model.original_model.config.num_hidden_layers
    chunk = None if mode["layer_chunk"] is None else min(args.chunk, n_layers)
    model_fingerprint(model)  # reads every weight: mmapped weights become resident, as in scoring
    gc.collect()
    rss_loaded = _rss_bytes()
    exact = _reset_peak()
    sampler = None if exact else _Sampler()
    t0 = time.perf_counter()
    scores = score_weights(
        model,
        pairs,
        targets=args.targets,
        keep_fraction=1e-3,
        dense=mode["dense"],
        layer_chunk=chunk,
        progress=False,
    )
    seconds = time.perf_counter() - t0
    peak = _status_kib("VmHWM") * 1024 if exact else sampler.stop()  # type: ignore[union-attr]
    lifetime = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    fp32_bytes = numel * 4
    return {
        "mode": args.mode,
        "dtype": mode["dtype"],
        "dense": mode["dense"],
        "layer_chunk": chunk,
        "n_passes": 1 if chunk is None else -(-n_layers // chunk),
        "n_layers": n_layers,
        "n_examples": len(pairs),
        "n_tokens": int(sum(len(p[0]) for p in pairs)),
        "targets": args.targets,
        "n_params": numel,
        "fp32_param_bytes": fp32_bytes,
        "target_fp32_bytes": target_numel * 4,
        "result_bytes": scores.nbytes(),
        "rss_imports": rss_imports,
        "rss_loaded": rss_loaded,
        "peak_scoring": peak,
        "peak_lifetime": lifetime,
        "peak_exact": exact,
        "ratio_vs_fp32_params": (peak - rss_imports) / fp32_bytes,
        "overhead_vs_fp32_params": (peak - rss_loaded) / fp32_bytes,
        "seconds": seconds,
    }


# --------------------------------------------------------------------------------------------------
# parent

ALLOCATORS = {"default": {}, "fixed-mmap": {"MALLOC_MMAP_THRESHOLD_": "131072"}}
TARGETS = {"one-pass": 3.2, "chunked": 1.5, "dense": 3.2, "one-pass bf16": 3.2}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny random model instead of SmolLM2")
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n", type=int, default=4, help="examples")
    ap.add_argument("--chunk", type=int, default=3, help="layers per pass in chunked mode")
    ap.add_argument("--targets", default="mlp")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--allocators", default="default", help="default and/or fixed-mmap")
    ap.add_argument("--child", dest="mode", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    if args.mode is not None:
        print("RESULT " + json.dumps(child(args)), flush=True)
        return

    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), TOKENIZERS_PARALLELISM="false")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_VERBOSITY", "error")
    rows = []
    combos = [(a, m) for a in args.allocators.split(",") for m in args.modes.split(",")]
    for allocator, mode in combos:
        if allocator not in ALLOCATORS:
            sys.exit(f"unknown allocator setting {allocator!r}; choose from {list(ALLOCATORS)}")
        cmd = [sys.executable, __file__, "--child", mode, "--model", args.model, "--threads",
               str(args.threads), "--n", str(args.n), "--chunk", str(args.chunk), "--targets",
               args.targets] + (["--quick"] if args.quick else [])  # fmt: skip
        t0 = time.perf_counter()
        r = subprocess.run(
            cmd, capture_output=True, text=True, env={**env, **ALLOCATORS[allocator]}
        )
        if r.returncode != 0:
            sys.exit(f"{mode} failed:\n{r.stderr[-4000:]}")
        line = next(x for x in r.stdout.splitlines() if x.startswith("RESULT "))
        row = json.loads(line[len("RESULT ") :])
        row["wall_s"] = time.perf_counter() - t0
        row["allocator"] = allocator
        row["rusage_children_maxrss"] = (
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        )
        row["target_ratio"] = None if args.quick else TARGETS.get(mode)
        rows.append(row)
        print(f"# {allocator} {mode}: done in {row['wall_s']:.0f} s", file=sys.stderr, flush=True)
    doc = {
        "benchmark": "bench_memory",
        "model": "tiny-llama (random)" if args.quick else args.model,
        "note": "SmolLM2 weights are dequantised Q4_1, not bit-identical to the upstream release"
        if not args.quick
        else "tiny random model: numbers dominated by the interpreter and libraries",
        "threads": args.threads,
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },  # fmt: skip
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(_table(doc))
    print(f"\nwritten {args.out}")


def _table(doc: dict) -> str:
    r0 = doc["rows"][0]
    lines = [
        f"model {doc['model']}, {r0['n_params'] / 1e6:.1f} M parameters = "
        f"{r0['fp32_param_bytes'] / MiB:.0f} MiB in fp32; targets {r0['targets']} = "
        f"{r0['target_fp32_bytes'] / MiB:.0f} MiB of fp32 accumulators; {r0['n_examples']} "
        f"examples ({r0['n_tokens']} tokens); torch threads {doc['threads']}",
        "",
        "| mode | allocator | passes | RSS imports MiB | peak scoring MiB | "
        "(peak - imports) / fp32 params | target | scoring s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["rows"]:
        ok = "" if r["target_ratio"] is None else (
            f"<= {r['target_ratio']} " + ("ok" if r["ratio_vs_fp32_params"] <= r["target_ratio"]
                                           else "MISSED"))  # fmt: skip
        lines.append(
            f"| {r['mode']} | {r['allocator']} | {r['n_passes']} | {r['rss_imports'] / MiB:.0f} | "
            f"{r['peak_scoring'] / MiB:.0f} | "
            f"{r['ratio_vs_fp32_params']:.2f} | {ok} | {r['seconds']:.1f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
