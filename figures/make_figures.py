"""Regenerate every figure from saved results (no model is loaded): ``make figures``.

Inputs (each figure is skipped, with a message, when its input is missing):
- ``paper_repro/smollm2/results/summary.json``: trade-off scatter, q sweep on the val split;
- ``paper_repro/smollm2/results/mechanism.json``: coupled-set layer/module profile, I(F;P) per
  layer before/after, cautionary-phrase frequencies, coupled-neuron graph drawing;
- ``paper_repro/smollm2/results/variants.json``: Pareto plot of SPIN variants;
- ``benchmarks/results/*.json``: benchmark bars.
Writes PNG and PDF files into ``figures/``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "figures"
RESULTS = ROOT / "paper_repro" / "smollm2" / "results"
plt.rcParams.update(
    {
        "font.size": 11,
        "axes.titlesize": 12,
        "axes.labelsize": 11,
        "legend.fontsize": 9,
        "figure.dpi": 110,
    }
)


def _load(path: Path) -> Any | None:
    if not path.exists():
        print(f"skip: {path} not found")
        return None
    return json.loads(path.read_text())


def _save(fig: Any, name: str) -> None:
    for ext in ("png", "pdf"):
        fig.savefig(OUT / f"{name}.{ext}", bbox_inches="tight")
    plt.close(fig)
    print(f"wrote {OUT / name}.png and .pdf")


def _label_points(ax: Any, points: list[tuple[float, float, str]]) -> None:
    """One label per location (settings on the same point share it); a label whose neighbour on
    the left sits at about the same height goes below its point instead of above."""
    groups: dict[tuple[float, float], list[str]] = {}
    for x, y, name in points:
        groups.setdefault((round(x, 4), round(y, 4)), []).append(name)
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    placed: list[tuple[float, float, bool]] = []
    for (x, y), names in sorted(groups.items()):
        crowded = any(
            abs(x - px) < 0.15 * (x1 - x0) and abs(y - py) < 0.04 * (y1 - y0) and up
            for px, py, up in placed
        )
        up = not crowded
        ax.annotate(
            "\n".join(names),
            (x, y),
            fontsize=7,
            xytext=(3, 3) if up else (3, -4),
            textcoords="offset points",
            va="bottom" if up else "top",
        )
        placed.append((x, y, up))


def _kind(name: str) -> tuple[str, str]:
    if name.startswith("random"):
        return "random control", "tab:grey"
    if name.startswith("sft"):
        return "fine-tuning", "tab:red"
    if name.startswith(("single", "reference")):
        return "selection control", "tab:orange"
    return "SPIN", "tab:blue"


def tradeoff(summary: dict[str, Any]) -> None:
    fx, py = "bbq_ambig_accuracy", "privacy_awareness"
    fig, ax = plt.subplots(figsize=(7.5, 6))
    seen = set()
    points: list[tuple[float, float, str]] = []
    for name, s in summary.get("settings", {}).items():
        m = s["metrics"]
        if fx not in m or py not in m:
            continue
        kind, color = _kind(name)
        x, y = m[fx], m[py]
        ax.errorbar(
            x["diff"],
            y["diff"],
            xerr=[[x["diff"] - x["ci"][0]], [x["ci"][1] - x["diff"]]],
            yerr=[[y["diff"] - y["ci"][0]], [y["ci"][1] - y["diff"]]],
            fmt="o",
            color=color,
            alpha=0.8,
            capsize=2,
            label=None if kind in seen else kind,
        )
        seen.add(kind)
        points.append((x["diff"], y["diff"], name))
    _label_points(ax, points)
    ax.axhline(0, color="k", lw=0.6)
    ax.axvline(0, color="k", lw=0.6)
    ax.annotate(
        "paper's claim:\nboth rise",
        xy=(0.9, 0.92),
        xycoords="axes fraction",
        ha="right",
        fontsize=9,
        color="tab:green",
    )
    ax.set_xlabel("Δ BBQ ambiguous accuracy (fairness), paired, 95% CI")
    ax.set_ylabel("Δ privacy awareness (refusal rate), paired, 95% CI")
    ax.set_title("Fairness vs privacy change per setting (SmolLM2-135M, eval split)")
    ax.legend(loc="lower left")
    _save(fig, "tradeoff")


def sweep(summary: dict[str, Any]) -> None:
    vs = summary.get("val_search")
    if not vs:
        print("skip: no val_search in summary.json")
        return
    rows = vs["rows"]
    fig, ax1 = plt.subplots(figsize=(6.5, 4))
    qs = [r["q"] for r in rows]
    ax1.plot(
        qs,
        [r["gain"] for r in rows],
        "o-",
        color="tab:blue",
        label="Δ BBQ acc + Δ privacy awareness",
    )
    ax1.set_xscale("log")
    ax1.set_xlabel("q = p (fraction per matrix)")
    ax1.set_ylabel("summed behaviour change (val)", color="tab:blue")
    ax2 = ax1.twinx()
    ax2.plot(qs, [100 * r["ppl_rel"] for r in rows], "s--", color="tab:red", label="Δ perplexity")
    ax2.set_ylabel("Δ wiki perplexity (%)", color="tab:red")
    ax1.axhline(0, color="k", lw=0.5)
    ax1.set_title(f"SPIN q sweep on the val split (chosen q = {vs['chosen_q']:g})")
    _save(fig, "q_sweep")


def mechanism_figures(mech: dict[str, Any]) -> None:
    prof = mech.get("profile")
    if prof:
        layers = sorted({int(k) for k in prof["by_layer_module"]})
        modules = sorted({m for v in prof["by_layer_module"].values() for m in v})
        fig, ax = plt.subplots(figsize=(9, 4))
        bottom = [0] * len(layers)
        for mod in modules:
            vals = [prof["by_layer_module"][str(layer)].get(mod, 0) for layer in layers]
            ax.bar(layers, vals, bottom=bottom, label=mod)
            bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
        ax.set_xlabel("layer")
        ax.set_ylabel("zeroed entries")
        ax.set_title(
            f"Coupled set (F ∩ P) \\ G by layer and module (q = {prof['q']:g}; "
            f"|W| ratio selected/all = {prof['magnitude_ratio']:.2f})"
        )
        ax.legend(ncol=3)
        _save(fig, "coupled_layers")
    mi = mech.get("coupling_mi")
    if mi:
        fig, ax = plt.subplots(figsize=(7, 4))
        layers = [r["layer"] for r in mi]
        for key, label, color in (
            ("before", "original", "tab:grey"),
            ("after", "SPIN-edited", "tab:blue"),
        ):
            vals = [r[key]["mi"] for r in mi]
            lo = [r[key]["mi"] - r[key]["ci"][0] for r in mi]
            hi = [r[key]["ci"][1] - r[key]["mi"] for r in mi]
            ax.errorbar(layers, vals, yerr=[lo, hi], fmt="o-", capsize=3, label=label, color=color)
        ax.set_xlabel("layer")
        ax.set_ylabel("I(f; p) (nats, KSG, 95% CI)")
        ax.set_title("Coupling of fairness and privacy directions, before/after SPIN")
        ax.legend()
        _save(fig, "coupling_mi")
    ph = mech.get("caution_phrases")
    if ph:
        words = list(ph["before"])
        fig, ax = plt.subplots(figsize=(9, 4))
        x = range(len(words))
        ax.bar(
            [i - 0.2 for i in x],
            [ph["before"][w] for w in words],
            width=0.4,
            label=f"original (n={ph['n_before']})",
            color="tab:grey",
        )
        ax.bar(
            [i + 0.2 for i in x],
            [ph["after"][w] for w in words],
            width=0.4,
            label=f"SPIN-edited (n={ph['n_after']})",
            color="tab:blue",
        )
        ax.set_xticks(list(x), words, rotation=40, ha="right")
        ax.set_ylabel("generations containing it (%)")
        ax.set_title("Cautionary phrases in generations (eval prompts)")
        ax.legend()
        _save(fig, "caution_phrases")
    gpath = RESULTS / "coupled_graph.json"
    if gpath.exists():
        from spin_interp.graph import draw_graph, load_graph

        G = load_graph(gpath)
        draw_graph(G, OUT / "coupled_graph.png")
        draw_graph(G, OUT / "coupled_graph.pdf")
        print(f"wrote {OUT / 'coupled_graph'}.png and .pdf")


def variants(data: dict[str, Any]) -> None:
    # baselines that edit nothing (the fine-tuned model itself) are in VARIANTS.md, not here
    rows = [r for r in data.get("rows", []) if r.get("entries", 1) > 0]
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(8, 6.5))
    groups = {  # marker by what a row is paired with; controls drawn hollow
        "o": [r for r in rows if r.get("vs", "original") == "original"],
        "^": [r for r in rows if r.get("vs", "original") != "original"],
    }
    norm = matplotlib.colors.TwoSlopeNorm(
        vcenter=0.0,
        vmin=min(-1.0, *(100 * r["d_ppl_rel"] for r in rows)),
        vmax=max(1.0, *(100 * r["d_ppl_rel"] for r in rows)),
    )
    for marker, group in groups.items():
        for hollow in (False, True):
            pts = [r for r in group if r["name"].startswith("random") == hollow]
            if not pts:
                continue
            colours = [100 * r["d_ppl_rel"] for r in pts]
            ax.scatter(
                [r["d_fairness"] for r in pts],
                [r["d_privacy"] for r in pts],
                c=colours,
                cmap="coolwarm",
                norm=norm,
                s=60,
                marker=marker,
                alpha=0.45 if hollow else 1.0,
                edgecolors="k",
                linewidths=0.5,
            )
    _label_points(
        ax,
        [
            (r["d_fairness"], r["d_privacy"], r["name"])
            for r in rows
            if not r["name"].startswith("random") and not r["name"].endswith("+random")
        ],
    )
    ax.axhline(0, color="k", lw=0.6)
    ax.axvline(0, color="k", lw=0.6)
    ax.annotate(
        "paper's claimed direction",
        xy=(0.95, 0.95),
        xycoords="axes fraction",
        ha="right",
        va="top",
        color="tab:green",
    )
    mappable = matplotlib.cm.ScalarMappable(norm=norm, cmap="coolwarm")
    fig.colorbar(mappable, ax=ax, label="Δ wiki perplexity (%)")
    ax.set_xlabel("Δ BBQ ambiguous accuracy")
    ax.set_ylabel("Δ privacy awareness")
    ax.set_title(
        "SPIN variants (val split, paired with their edit point)\n"
        "● vs original, ▲ vs privacy-fine-tuned model; faded = random controls",
        fontsize=10,
    )
    _save(fig, "variants_pareto")


def benchmarks() -> None:
    bench = ROOT / "benchmarks" / "results"
    s = _load(bench / "bench_scoring.json")
    m = _load(bench / "bench_memory.json")
    if not s and not m:
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    if s:
        rows = s["rows"]
        labels = [r["model"] for r in rows]
        x = range(len(rows))
        axes[0].bar(
            [i - 0.2 for i in x],
            [r["ratio_snip_over_bare"] for r in rows],
            width=0.4,
            label="one-pass SNIP / bare HF loop (target ≤ 1.25)",
        )
        axes[0].bar(
            [i + 0.2 for i in x],
            [r["ratio_per_layer_over_snip"] for r in rows],
            width=0.4,
            label="per-layer baseline / one-pass (higher is better)",
        )
        axes[0].set_xticks(list(x), labels)
        axes[0].set_ylabel("time ratio")
        axes[0].set_title(f"Scoring cost ({s['threads']} thread)")
        axes[0].legend(fontsize=8)
    if m:
        rows = m["rows"]
        axes[1].bar(
            [r["mode"] for r in rows], [r["ratio_vs_fp32_params"] for r in rows], color="tab:purple"
        )
        axes[1].set_ylabel("peak memory / fp32 parameter bytes")
        axes[1].set_title("Scoring memory (SmolLM2)")
        axes[1].tick_params(axis="x", rotation=20)
    _save(fig, "benchmarks")


def main(argv: list[str] | None = None) -> int:
    global OUT, RESULTS
    import argparse

    ap = argparse.ArgumentParser(description="Redraw every figure from saved results.")
    ap.add_argument("--results", type=Path, default=RESULTS, help="folder of the result JSONs")
    ap.add_argument("--out", type=Path, default=OUT, help="folder the figures are written to")
    args = ap.parse_args(argv)
    OUT, RESULTS = args.out, args.results
    OUT.mkdir(parents=True, exist_ok=True)
    summary = _load(RESULTS / "summary.json")
    if summary:
        tradeoff(summary)
        sweep(summary)
    mech = _load(RESULTS / "mechanism.json")
    if mech:
        mechanism_figures(mech)
    var = _load(RESULTS / "variants.json")
    if var:
        variants(var)
    benchmarks()
    return 0


if __name__ == "__main__":
    sys.exit(main())
