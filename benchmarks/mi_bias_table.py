"""Measured bias of the MI estimators on correlated Gaussians -> docs/mi_bias.md.

Data: d independent pairs (X_i, Y_i) of unit Gaussians with correlation rho, so that
I(X; Y) = -1/2 * d * log(1 - rho^2) exactly. Grid: d in {1, 2, 5, 10} x rho in {0.2, 0.5, 0.8}
x n in {500, 2000, 8000}. For every cell and replicate r a fresh dataset (seed from d, rho, n,
r) is drawn and each estimator is fitted with its defaults:

* KSGEstimator (k = 3)                   -- every cell, ``--reps`` datasets
* GaussianEstimator (no shrinkage)       -- every cell, ``--reps`` datasets
* BinnedEstimator (10 quantile bins, MM) -- d = 1 only (it refuses multivariate continuous data)
* InfoNCEEstimator (separable, batch 128) -- every cell, ``--nce-reps`` datasets (fewer: slower)

Reported per cell: mean of (estimate - truth) and its standard deviation across datasets, and the
mean fit time. One thread throughout. Writes ``docs/mi_bias.md`` (tables + usage guide) and the
raw numbers to ``benchmarks/results/mi_bias.json``.

    python benchmarks/mi_bias_table.py            # full grid, ~5-10 minutes on one thread
    python benchmarks/mi_bias_table.py --quick    # d in {1, 2}, n in {500, 2000}, 2 reps
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from spin_interp.mi import (  # noqa: E402
    BinnedEstimator,
    GaussianEstimator,
    InfoNCEEstimator,
    KSGEstimator,
    MIEstimator,
    gaussian_mi,
)

ROOT = Path(__file__).resolve().parent.parent
OUT_MD = ROOT / "docs" / "mi_bias.md"
OUT_JSON = ROOT / "benchmarks" / "results" / "mi_bias.json"
ESTIMATORS = ("KSG", "Gaussian", "Binned", "InfoNCE")


def make_estimator(name: str, seed: int) -> MIEstimator:
    if name == "KSG":
        return KSGEstimator(k=3, random_state=seed)
    if name == "Gaussian":
        return GaussianEstimator()
    if name == "Binned":
        return BinnedEstimator(bins=10, strategy="quantile", miller_madow=True)
    return InfoNCEEstimator(random_state=seed)


def data(n: int, d: int, rho: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    return x, rho * x + math.sqrt(1 - rho**2) * rng.standard_normal((n, d))


def run_grid(
    dims: list[int], rhos: list[float], ns: list[int], reps: int, nce_reps: int
) -> list[dict]:
    records = []
    for d in dims:
        for rho in rhos:
            truth = gaussian_mi([rho] * d)
            for n in ns:
                t_cell = time.perf_counter()
                for r in range(max(reps, nce_reps)):
                    seed = 1_000_000 * d + 10_000 * round(100 * rho) + 10 * n + r
                    x, y = data(n, d, rho, seed)
                    for name in ESTIMATORS:
                        if name == "Binned" and d != 1:
                            continue
                        if r >= (nce_reps if name == "InfoNCE" else reps):
                            continue
                        est = make_estimator(name, seed)
                        t0 = time.perf_counter()
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore")
                            est.fit(x, y)
                        rec = {
                            "estimator": name,
                            "d": d,
                            "rho": rho,
                            "n": n,
                            "rep": r,
                            "seed": seed,
                            "truth": truth,
                            "estimate": est.mi_,
                            "seconds": time.perf_counter() - t0,
                        }
                        if name == "InfoNCE":
                            rec["log_batch"] = est.log_batch_
                        records.append(rec)
                print(
                    f"d={d:>2} rho={rho} n={n:>5}: {time.perf_counter() - t_cell:6.1f}s",
                    flush=True,
                )
    return records


def summarise(records: list[dict]) -> dict[tuple, dict]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for rec in records:
        groups[(rec["estimator"], rec["d"], rec["rho"], rec["n"])].append(rec)
    out = {}
    for key, recs in groups.items():
        err = np.array([r["estimate"] - r["truth"] for r in recs])
        out[key] = {
            "truth": recs[0]["truth"],
            "bias": float(err.mean()),
            "sd": float(err.std(ddof=1)) if err.size > 1 else float("nan"),
            "reps": int(err.size),
            "seconds": float(np.mean([r["seconds"] for r in recs])),
            "log_batch": recs[0].get("log_batch"),
        }
    return out


def _cell(s: dict | None) -> str:
    if s is None:
        return "n/a"
    sd = "" if math.isnan(s["sd"]) else f" ({s['sd']:.3f})"
    return f"{s['bias']:+.3f}{sd}"


def table(summary: dict, name: str, dims: list[int], rhos: list[float], ns: list[int]) -> str:
    lines = [
        "| d | ρ | true I | " + " | ".join(f"n = {n:,}" for n in ns) + " | s / fit (largest n) |",
        "|---:|---:|---:|" + "---:|" * len(ns) + "---:|",
    ]
    for d in dims:
        if name == "Binned" and d != 1:
            continue
        for rho in rhos:
            cells = [summary.get((name, d, rho, n)) for n in ns]
            truth = gaussian_mi([rho] * d)
            last = cells[-1]
            secs = f"{last['seconds']:.3f}" if last else "n/a"
            lines.append(
                f"| {d} | {rho} | {truth:.3f} | "
                + " | ".join(_cell(c) for c in cells)
                + f" | {secs} |"
            )
    return "\n".join(lines)


def worst(summary: dict, name: str, pred) -> float:  # type: ignore[no-untyped-def]
    vals = [abs(v["bias"]) for k, v in summary.items() if k[0] == name and pred(k)]
    return max(vals) if vals else float("nan")


GUIDE = """
## Which estimator where

"Largest absolute mean error" below is taken over the cells with n ≥ 2,000 (at n = 500 single
estimates are noisy; see the standard deviations in the tables).

| situation | use | why (numbers above) |
|---|---|---|
| two 1-D continuous variables (a neuron's activation, a probe-direction score, a per-example \
loss) | `KSGEstimator` | nearly unbiased at d = 1 and 2: largest absolute mean error {ksg_low:.3f} \
nats; no distributional assumption |
| a few features each (dx + dy ≲ 4) | `KSGEstimator`, cross-checked with `GaussianEstimator` | \
KSG's downward bias grows with dimension and with I itself: largest absolute mean error \
{ksg_d5:.3f} nats at d = 5, {ksg_d10:.3f} nats at d = 10 |
| many features, roughly Gaussian or only linear coupling of interest | `GaussianEstimator` \
(`shrinkage="auto"` when n is not ≫ dx + dy) | unbiased up to ≈ dx·dy / (2n) for Gaussians at \
every d here (largest absolute mean error {gauss_all:.3f}); blind to non-linear dependence |
| discrete variables (labels, safe/unsafe, categories), or a discrete and a 1-D variable | \
`BinnedEstimator` | exact plug-in + Miller–Madow for discrete data; on *binned continuous* data \
it loses information (largest absolute mean error {binned_all:.3f} nats at d = 1, at ρ = 0.8) |
| high-dimensional representations (residual stream, SAE codes), as a lower bound or to rank \
conditions | `InfoNCEEstimator` | a lower bound that can never exceed log(batch) = \
{log_batch:.2f} nats; falls well below the truth at high d and high I (largest absolute mean \
error {nce_all:.3f}), but less than KSG from d = 5 up (d = 10, ρ = 0.5, n = 8,000: \
{nce_10:+.3f} vs KSG {ksg_10:+.3f}) |

Rules of thumb:

* **Always pair an estimate with `shuffle_test`.** Estimates of independent data are not exactly
  0 (one KSG estimate has a standard deviation of ≈ 0.017 nats at n = 2,000 under independence);
  the permutation p-value says whether a value stands out from that noise.
* **`bootstrap` intervals show sampling variability, not bias.** KSG and InfoNCE use
  half-sampling (duplicates from resampling with replacement would bias them); where the tables
  above show a bias larger than the interval width, the interval will miss the truth.
* **Compare like with like.** Biases depend on d, n and I; when comparing I(F; P) before and
  after an edit, keep the estimator, the projection and n fixed, and compare on the same
  examples (paired), not against an absolute scale.
* **The coupling measures use 1-D projections** (a neuron's activation, the score along a probe
  direction, a per-example loss) because KSG is accurate there (first row). For a whole
  representation, report the Gaussian estimate and the InfoNCE bound side by side and read them
  as a range, not as the MI.
"""


def write_markdown(
    path: Path,
    summary: dict,
    dims: list[int],
    rhos: list[float],
    ns: list[int],
    args: argparse.Namespace,
    total: float,
) -> None:
    parts = [
        "# Measured bias of the mutual-information estimators",
        "",
        "Generated by `benchmarks/mi_bias_table.py` "
        f"({dt.date.today().isoformat()}, one thread, torch {torch.__version__}, "
        f"numpy {np.__version__}; total {total / 60:.1f} min)"
        f"{' — QUICK RUN' if args.quick else ''}. Raw numbers: `benchmarks/results/mi_bias.json`.",
        "",
        "Data: d independent pairs (Xᵢ, Yᵢ) of unit Gaussians with correlation ρ, so X and Y are "
        "d-dimensional and I(X; Y) = −½·d·log(1 − ρ²) nats exactly. Each cell shows the **mean "
        "error (estimate − truth) in nats, with its standard deviation across datasets in "
        f"parentheses**: {args.reps} independent datasets per cell for KSG, Gaussian and Binned, "
        f"{args.nce_reps} for InfoNCE (it trains a network per fit). Estimators run with their "
        "defaults (KSG k = 3; Gaussian without shrinkage; Binned with 10 quantile bins and "
        "Miller–Madow; InfoNCE separable critic, batch 128, 25 % held out, early stopping). "
        "The last column is the mean fit time in seconds at the largest n.",
        "",
    ]
    for name, title, note in (
        ("KSG", "KSG (k = 3)", ""),
        ("Gaussian", "Gaussian (closed form)", ""),
        (
            "Binned",
            "Binned (10 quantile bins, Miller–Madow)",
            "Only d = 1: the estimator refuses multivariate continuous inputs.",
        ),
        (
            "InfoNCE",
            "InfoNCE (separable critic, batch 128)",
            "Ceiling: log(128) = 4.85 nats (log 125 = 4.83 at n = 500, where the held-out part "
            "has 125 rows); the d = 10, ρ = 0.8 truth (5.11) lies above it.",
        ),
    ):
        parts += [f"## {title}", ""]
        if note:
            parts += [note, ""]
        parts += [table(summary, name, dims, rhos, ns), ""]
    big = [n for n in ns if n >= 2000]
    fmt = {
        "ksg_low": worst(summary, "KSG", lambda k: k[1] <= 2 and k[3] in big),
        "ksg_d5": worst(summary, "KSG", lambda k: k[1] == 5 and k[3] in big),
        "ksg_d10": worst(summary, "KSG", lambda k: k[1] == 10 and k[3] in big),
        "gauss_all": worst(summary, "Gaussian", lambda k: k[3] in big),
        "binned_all": worst(summary, "Binned", lambda k: k[3] in big),
        "nce_all": worst(summary, "InfoNCE", lambda k: k[3] in big),
        "log_batch": math.log(128),
        "nce_10": summary.get(("InfoNCE", 10, 0.5, 8000), {}).get("bias", float("nan")),
        "ksg_10": summary.get(("KSG", 10, 0.5, 8000), {}).get("bias", float("nan")),
    }
    parts.append(GUIDE.format(**fmt).strip())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="d in {1, 2}, n in {500, 2000}, 2 reps")
    p.add_argument("--reps", type=int, default=5, help="datasets per cell (KSG/Gaussian/Binned)")
    p.add_argument("--nce-reps", type=int, default=2, help="datasets per cell for InfoNCE")
    p.add_argument("--out-md", type=Path, default=OUT_MD)
    p.add_argument("--out-json", type=Path, default=OUT_JSON)
    p.add_argument(
        "--from-json",
        type=Path,
        default=None,
        help="rewrite the markdown from a previous run's JSON without recomputing",
    )
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    dims, rhos, ns = [1, 2, 5, 10], [0.2, 0.5, 0.8], [500, 2000, 8000]
    if args.quick:
        dims, ns, args.reps, args.nce_reps = [1, 2], [500, 2000], 2, 1
    if args.from_json is not None:
        old = json.loads(args.from_json.read_text())
        args.quick, args.reps, args.nce_reps = old["quick"], old["reps"], old["nce_reps"]
        records = old["records"]
        dims = sorted({r["d"] for r in records})
        ns = sorted({r["n"] for r in records})
        write_markdown(args.out_md, summarise(records), dims, rhos, ns, args, old["total_s"])
        print(f"wrote {args.out_md} from {args.from_json}")
        return 0
    print(
        f"MI bias table: dims={dims} rhos={rhos} ns={ns} reps={args.reps} "
        f"nce_reps={args.nce_reps}; 1 thread (torch threads {torch.get_num_threads()}, "
        f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']})",
        flush=True,
    )
    t0 = time.perf_counter()
    records = run_grid(dims, rhos, ns, args.reps, args.nce_reps)
    total = time.perf_counter() - t0
    summary = summarise(records)
    write_markdown(args.out_md, summary, dims, rhos, ns, args, total)
    args.out_json.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "benchmark": "mi_bias_table",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "threads": 1,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "torch": torch.__version__,
        "quick": args.quick,
        "reps": args.reps,
        "nce_reps": args.nce_reps,
        "total_s": total,
        "summary": [
            {"estimator": k[0], "d": k[1], "rho": k[2], "n": k[3], **v}
            for k, v in sorted(summary.items())
        ],
        "records": records,
    }
    args.out_json.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"total {total:.1f}s; wrote {args.out_md} and {args.out_json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
