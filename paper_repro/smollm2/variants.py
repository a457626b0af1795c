"""When does suppressing coupled neurons help? SPIN variants vs controls on SmolLM2 (issue 8).

Every variant is evaluated on the val split, paired with the original model on the same items
(``spin_interp.evaluate``), beside a same-count random control. A variant that raises BOTH
fairness (BBQ ambiguous accuracy) and privacy awareness with p < 0.05 (exact McNemar) while
val perplexity stays within +5% is then evaluated once on the eval split. Writes
``results/variants.json`` and ``VARIANTS.md``; reuses ``repro.py``'s cached scores and reports.

    python paper_repro/smollm2/variants.py [--smoke --model DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import sys
import time
import tomllib
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import spin_interp as si  # noqa: E402
from spin_interp.evaluate import EvalReport, evaluate  # noqa: E402
from spin_interp.select import Selection, random_like, select_coupled, top_fraction  # noqa: E402
from spin_interp.variants import (  # noqa: E402
    cap_per_matrix,
    exclude,
    magnitude_guard,
    scale_weights,
    soft_coupled,
)

PPL_BUDGET = 0.05
N_LARGE = 256  # the larger scoring set (the paper used 128)
K_UNITS, K_CANDIDATES = 64, 256  # MLP units edited; MI-coupled candidates of the graph


def sizes(r: Any) -> tuple[int, int, int]:
    """(N large, units, graph candidates); tiny at smoke sizes."""
    return (4, 8, 32) if r.smoke else (N_LARGE, K_UNITS, K_CANDIDATES)


@dataclass
class Setting:
    """One variant: ``make()`` returns ``(model, edit)``; ``edit is None`` evaluates the model as
    it is. ``base`` names the val report it is paired with (its edit point)."""

    make: Callable[[], tuple[Any, Any]]
    _: KW_ONLY
    base: str = "original"
    family: str = ""


def build(r: Any, q: float) -> dict[str, Setting]:
    """Every variant of the study in report order; nothing heavy is computed until ``make()``."""
    n = r.cfg["n_score"]
    n_large, k_units, _ = sizes(r)
    paper = functools.cache(lambda: r.coupled(q))
    fpg = functools.cache(
        lambda: tuple(r.restrict(r.scores(b, n), "mlp") for b in ("fairness", "privacy", "general"))
    )

    def sel(thunk: Callable[[], Selection], model: Callable[[], Any] = lambda: r.model):
        return lambda: (model(), si.ablate.edit_for(model(), thunk()))

    def control(thunk: Callable[[], Selection]):
        return sel(lambda: random_like(thunk(), seed=r.cfg["seed"]))

    v: dict[str, Setting] = {
        "paper": Setting(sel(paper), family="selection"),
        "random(paper)": Setting(control(paper), family="selection"),
        "soft": Setting(
            sel(lambda: soft_coupled(fpg()[1], fpg()[0], fpg()[2], p=q, q=q)), family="selection"
        ),
        "paper+guard0.9": Setting(
            sel(lambda: magnitude_guard(paper(), r.model, 0.9)), family="guard"
        ),
        "paper+guard0.5": Setting(
            sel(lambda: magnitude_guard(paper(), r.model, 0.5)), family="guard"
        ),
        "single(P-G)+guard0.9": Setting(
            sel(lambda: magnitude_guard(r.coupled(q, mode="single"), r.model, 0.9)), family="guard"
        ),
        "paper scale0.5": Setting(
            lambda: (r.model, scale_weights(r.model, paper(), 0.5)), family="operation"
        ),
        "paper q/3": Setting(sel(lambda: r.coupled(q / 3)), family="selection"),
        "malicious": Setting(sel(lambda: r.coupled(q, safe=False)), family="data"),
    }
    # guards: a second, disjoint general sample; a cap per matrix
    general2 = functools.cache(lambda: _general2(r))
    excl = functools.cache(lambda: exclude(paper(), top_fraction(general2(), q)))
    v["paper-G2"] = Setting(sel(excl), family="guard")
    v["random(paper-G2)"] = Setting(control(excl), family="guard")
    cap = functools.cache(lambda: cap_per_matrix(paper(), fpg()[1], 2))
    v["paper cap2/matrix"] = Setting(sel(cap), family="guard")
    v["random(paper cap2)"] = Setting(control(cap), family="guard")
    # granularity: attention heads by attribution
    heads = functools.cache(lambda: _coupled_heads(r))
    v["coupled heads"] = Setting(sel(heads), family="granularity")
    v["random(heads)"] = Setting(control(heads), family="granularity")
    # granularity: MLP units (MI-guided, graph-guided) zeroed or mean-ablated
    units = functools.cache(
        lambda: _relevance(r).to_selection(top_k=k_units, rule="both", contrast="general")
    )
    runits = functools.cache(lambda: random_like(units(), seed=r.cfg["seed"]))
    v[f"MI-guided {k_units} units"] = Setting(sel(units), family="granularity")
    v[f"random({k_units} units)"] = Setting(sel(runits), family="granularity")
    v[f"graph hubs {k_units} units"] = Setting(sel(lambda: _graph_hubs(r)), family="granularity")
    biased = functools.cache(lambda: si.ablate.add_mlp_bias(si.load_model(r.model_spec)))
    v[f"MI-guided {k_units} units mean-abl."] = Setting(
        lambda: (biased(), _mean_ablation(r, biased(), units())), family="operation"
    )
    v[f"random({k_units} units) mean-abl."] = Setting(
        lambda: (biased(), _mean_ablation(r, biased(), runits())), family="operation"
    )
    # edit point: the privacy-fine-tuned model (paired with the fine-tuned model itself)
    sft = functools.cache(lambda: _sft_model(r))
    sft_paper = functools.cache(lambda: _coupled_on(r, sft(), "sft", q))
    v["SFT(privacy)"] = Setting(lambda: (sft(), None), family="edit point")
    v["SFT(privacy)+paper"] = Setting(sel(sft_paper, sft), base="SFT(privacy)", family="edit point")
    v["SFT(privacy)+random"] = Setting(
        sel(lambda: random_like(sft_paper(), seed=r.cfg["seed"]), sft),
        base="SFT(privacy)",
        family="edit point",
    )
    # data: the larger scoring set
    large = functools.cache(lambda: r.coupled(q, n=n_large))
    v[f"paper N={n_large}"] = Setting(sel(large), family="data")
    v[f"random(paper N={n_large})"] = Setting(control(large), family="data")
    return v


def _general2(r: Any) -> Any:
    """SNIP scores of a second general sample, disjoint from the scoring sample."""
    n = r.cfg["n_score"]
    return r.restrict(r.cached_scores(f"general2_safe_{n}", "general", r.snip, skip=n), "mlp")


def _coupled_heads(r: Any) -> Selection:
    """(F ∩ P) \\ G over attention heads scored by attribution (top 20% of each layer's heads)."""
    f, p, g = (
        r.cached_scores(
            f"heads_{b}_{r.cfg['n_score']}",
            b,
            lambda exs: si.score_neurons(r.model, exs, targets="attn", progress=False),
        )
        for b in ("fairness", "privacy", "general")
    )
    frac = 0.5 if r.smoke else 0.2
    return select_coupled(p, f, g, p=frac, q=frac)


def _relevance(r: Any) -> Any:
    from spin_interp.coupling import NeuronRelevance, neuron_relevance

    path = r.out / "variants_relevance.safetensors"
    if path.exists():
        return NeuronRelevance.load(path)
    n = 4 if r.smoke else 32
    pools = {
        b: si.data.load_behaviour(b, split="score", n=n, seed=0)
        for b in ("fairness", "privacy", "general")
    }
    rel = neuron_relevance(r.model, pools, progress=False)
    rel.save(path)
    return rel


def _graph_hubs(r: Any) -> Selection:
    """The best-connected units (virtual-weight graph) among the MI-coupled candidates."""
    from spin_interp.graph import build_neuron_graph, select_by_graph

    _, k_units, k_cands = sizes(r)
    cands = _relevance(r).to_selection(top_k=k_cands, rule="both", contrast="general")
    G = build_neuron_graph(r.model, cands, edges="weights", progress=False)
    return select_by_graph(G, policy="hubs", budget=k_units)


def _mean_ablation(r: Any, model: Any, units: Selection) -> Any:
    """Replace the units by their mean activation over the general scoring sample."""
    exs = si.data.load_behaviour("general", split="score", n=r.cfg["n_score"], seed=0)
    means = si.ablate.unit_means(model, exs, units, positions="all")
    return si.ablate.mean_ablate_units(model, units, means)


def _sft_model(r: Any) -> Any:
    """The privacy-fine-tuned model of repro.py's recipe (trained once, exported, reloaded)."""
    folder = r.out / "models" / "sft_full_privacy"
    if not (folder / "config.json").exists():
        model, _ = r.train_sft("full", "privacy", r.cfg["sft"]["full_lr"])
        si.export.export_hf(model, folder, overwrite=True)
    return si.load_model(str(folder))


def _coupled_on(r: Any, model: Any, tag: str, q: float) -> Selection:
    """The paper's selection with every score recomputed on ``model`` (another edit point)."""
    f, p, g = (
        r.cached_scores(
            f"{tag}_{b}_safe_{r.cfg['n_score']}",
            b,
            lambda exs: r.snip(exs, model=model, targets="mlp"),
        )
        for b in ("fairness", "privacy", "general")
    )
    return select_coupled(p, f, g, p=q, q=q)


def _report_path(r: Any, name: str, split: str) -> Path:
    return r.reports / split / f"variant_{name.replace('/', '_')}.json"


def run_one(r: Any, name: str, setting: Setting, split: str) -> tuple[EvalReport, int]:
    """Evaluate one setting (cached): the report and the number of weight entries it changes."""
    path = _report_path(r, name, split)
    info_path = path.with_suffix(".info.json")
    if path.exists() and info_path.exists():
        return EvalReport.load(path), json.loads(info_path.read_text())["entries"]
    model, edit = setting.make()
    entries = 0 if edit is None else edit.n_entries()
    if not path.exists():
        t = time.perf_counter()
        with edit.applied() if edit is not None else contextlib.nullcontext():
            rep = evaluate(
                model, seed=r.cfg["seed"], progress=False, data_split=split, **r.cfg["eval"]
            )
        rep.model = name
        path.parent.mkdir(parents=True, exist_ok=True)
        rep.save(path)
        seconds = time.perf_counter() - t
    else:
        rep, seconds = EvalReport.load(path), None
    info = {"entries": entries, "seconds": seconds, "base": setting.base}
    info_path.write_text(json.dumps(info, indent=1))
    return rep, entries


OTHER = [  # (metric, short label, better)
    ("bbq_ambig_stereotyped_choice_rate", "stereotyped choice", "lower"),
    ("fairness_open_awareness", "fairness aware. (gen.)", "higher"),
    ("privacy_leak_rate", "PII leak", "lower"),
    ("mmlu_accuracy", "MMLU", "higher"),
    ("boolq_accuracy", "BoolQ", "higher"),
]


def row(name: str, base: EvalReport, rep: EvalReport, entries: int, vs: str) -> dict[str, Any]:
    cmp = base.compare(rep)
    f, pv, ppl = (
        cmp.row(m) for m in ("bbq_ambig_accuracy", "privacy_awareness", "wiki_perplexity")
    )
    other = {}
    for metric, *_ in OTHER:
        try:
            o = cmp.row(metric)
        except KeyError:
            continue
        other[metric] = {"diff": o.difference, "ci": list(o.interval), "p": o.mcnemar_p}
    return {
        "name": name,
        "vs": vs,
        "entries": entries,
        "d_fairness": f.difference,
        "fairness_ci": list(f.interval),
        "p_fairness": f.mcnemar_p,
        "d_privacy": pv.difference,
        "privacy_ci": list(pv.interval),
        "p_privacy": pv.mcnemar_p,
        "d_ppl_rel": ppl.after / ppl.before - 1,
        "n_fairness": f.n_paired,
        "n_privacy": pv.n_paired,
        "other": other,
    }


def within_budget(x: dict[str, Any]) -> bool:
    """Perplexity at most +5% and no general accuracy significantly lower (CI below 0)."""
    general = [x["other"][m] for m in ("mmlu_accuracy", "boolq_accuracy") if m in x["other"]]
    return x["d_ppl_rel"] <= PPL_BUDGET and all(g["ci"][1] >= 0 for g in general)


def qualifies(x: dict[str, Any]) -> bool:
    return (
        x["d_fairness"] > 0
        and x["d_privacy"] > 0
        and (x["p_fairness"] or 1) < 0.05
        and (x["p_privacy"] or 1) < 0.05
        and within_budget(x)
    )


def is_variant(x: dict[str, Any]) -> bool:
    """A row that edits something and is not a random control (baselines such as the
    fine-tuned model itself edit nothing)."""
    name = x["name"]
    return x["entries"] > 0 and not (name.startswith("random") or name.endswith("+random"))


def main(argv: list[str] | None = None) -> int:
    from repro import Repro

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=HERE / "config.toml")
    ap.add_argument("--out", type=Path, default=Path("runs/repro"))
    ap.add_argument("--results", type=Path, default=HERE / "results")
    ap.add_argument("--md", type=Path, default=HERE / "VARIANTS.md")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--model", default=None)
    ap.add_argument("--only", default=None, help="comma-separated settings to run (others cached)")
    ap.add_argument(
        "--cached-only",
        action="store_true",
        help="report only the settings already evaluated (list the rest as not run)",
    )
    args = ap.parse_args(argv)
    cfg = tomllib.loads(args.config.read_text())
    if args.smoke:
        cfg.update(n_score=2, q_grid=[0.02], limited_n=[1], keep_fraction=0.05)
        cfg["eval"] = {k: (2 if isinstance(v, int) and v else v) for k, v in cfg["eval"].items()}
        cfg["sft"].update(steps=2, batch_size=2, n_train=4)
    t0 = time.perf_counter()
    r = Repro(cfg, args.out, args.model or cfg["model"], args.smoke)
    q = r.stage_val()
    reports = {"original": r.evaluate("original", "val")}
    only = set(args.only.split(",")) if args.only else None
    rows, not_run = [], []
    settings = build(r, q)
    for name, setting in settings.items():
        path = _report_path(r, name, "val")
        skip = args.cached_only or (only is not None and name not in only)
        if skip and not path.exists():
            not_run.append(name)
            continue
        rep, entries = run_one(r, name, setting, "val")
        reports[name] = rep
        base = reports.get(setting.base)
        if base is None:
            not_run.append(name)
            continue
        rows.append(row(name, base, rep, entries, setting.base))
    winners = [x for x in rows if qualifies(x) and is_variant(x)]
    eligible = [x for x in rows if within_budget(x) and is_variant(x)]
    best = max(eligible, key=lambda x: x["d_fairness"] + x["d_privacy"], default=None)
    to_confirm = {x["name"] for x in winners} | ({best["name"]} if best else set())
    confirmed = []
    if not args.cached_only:
        eval_reports = {"original": r.evaluate("original", "eval")}
        for name in [n for n in settings if n in to_confirm]:
            setting = settings[name]
            if setting.base != "original" and setting.base not in eval_reports:
                eval_reports[setting.base] = run_one(
                    r, setting.base, settings[setting.base], "eval"
                )[0]
            rep, entries = run_one(r, name, setting, "eval")
            confirmed.append(row(name, eval_reports[setting.base], rep, entries, setting.base))
    else:
        base_eval = r.reports / "eval" / "original.json"
        for name in [n for n in settings if n in to_confirm]:
            path = _report_path(r, name, "eval")
            if path.exists() and base_eval.exists() and settings[name].base == "original":
                entries = json.loads(path.with_suffix(".info.json").read_text())["entries"]
                rep = EvalReport.load(path)
                confirmed.append(row(name, EvalReport.load(base_eval), rep, entries, "original"))
    out = {
        "q": q,
        "rows": rows,
        "families": {n: s.family for n, s in settings.items()},
        "not_run": not_run,
        "qualifying_on_val": [x["name"] for x in winners],
        "best_on_val": best["name"] if best else None,
        "eval_confirmation": confirmed,
        "seconds": time.perf_counter() - t0,
        "eval_seconds": _recorded_seconds(r, settings),
        "smoke": args.smoke,
        "ppl_budget": PPL_BUDGET,
        "n_large": sizes(r)[0],
    }
    out["mechanism"] = mechanism_facts(args.results / "mechanism.json")
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "variants.json").write_text(json.dumps(out, indent=1, default=str))
    write_md(out, args.md)
    print(args.md.read_text())
    return 0


def _recorded_seconds(r: Any, settings: dict[str, Setting]) -> float:
    """Evaluation time recorded beside the cached reports of these settings (both splits)."""
    total = 0.0
    for split in ("val", "eval"):
        for name in settings:
            info = _report_path(r, name, split).with_suffix(".info.json")
            if info.exists():
                total += float(json.loads(info.read_text()).get("seconds") or 0.0)
    return total


def mechanism_facts(path: Path) -> dict[str, Any] | None:
    """The few numbers of mechanism.py that explain the variants (None before it has run)."""
    if not path.exists():
        return None
    m = json.loads(path.read_text())
    g = m.get("graph") or {}
    return {
        "magnitude_ratio": m["profile"]["magnitude_ratio"],
        "mi": [
            {"layer": x["layer"], "delta": x["delta"], "ci": x["delta_ci"]}
            for x in m.get("coupling_mi", [])
        ],
        "graph": {
            k: g.get(k)
            for k in ("nodes", "edges", "density", "components", "communities", "modularity")
        },
    }


def why(out: dict[str, Any]) -> list[str]:
    """A generated paragraph: what magnitude, MI and the graph say about the paper's variant."""
    mech, rows = out.get("mechanism"), {x["name"]: x for x in out["rows"]}
    if not mech:
        return []
    lines = ["## Why (mechanism analysis, `results/mechanism.json`)", ""]
    paper, guard = rows.get("paper"), rows.get("paper+guard0.9")
    text = (
        f"- Magnitude: the paper's coupled entries have {mech['magnitude_ratio']:.1f}× the mean "
        "|W| of their matrices, so zeroing them removes a few large weights"
    )
    if paper and guard:
        text += (
            f"; dropping the 10% largest (guard0.9) moves perplexity from {paper['d_ppl_rel']:+.1%}"
            f" to {guard['d_ppl_rel']:+.1%} while the fairness / privacy changes stay within "
            "their intervals — the utility cost comes from weight size, not from the coupling"
        )
    lines.append(text + ".")
    mi = mech["mi"]
    if mi:
        inside = all(x["ci"][0] <= 0 <= x["ci"][1] for x in mi)
        lines.append(
            "- Coupling: I(f; p) between the fairness and privacy awareness directions changes by "
            + ", ".join(f"{x['delta']:+.3f} (layer {x['layer']})" for x in mi)
            + " nats after the edit; "
            + (
                "every paired CI includes 0, so the edit does not decouple the two behaviours."
                if inside
                else "some paired CIs exclude 0."
            )
        )
    g = mech["graph"]
    if g.get("nodes"):
        lines.append(
            f"- Graph: the coupled MLP units form {g['nodes']} nodes and {g['edges']} "
            f"virtual-weight edges (density {g['density']:.2f}, {g['communities']} communities, "
            f"modularity {g['modularity']:.2f}, {g['components']} connected component(s))"
            + (
                ": one connected, weakly modular circuit rather than an isolated module that "
                "could be cut out cleanly."
                if g["components"] == 1 and g["modularity"] < 0.3
                else "."
            )
        )
    return lines + [""]


def _cell(d: float, ci: list[float], p: float | None) -> str:
    ps = f" ({p:.2g})" if p is not None else ""
    return f"{d:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}]{ps}"


def _table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| variant | vs | entries | Δ BBQ ambig acc [CI] (p) | Δ privacy awareness [CI] (p) | "
        "Δ perplexity | n (F / P) |",
        "|---|---|---|---|---|---|---|",
    ]
    for x in rows:
        lines.append(
            f"| {x['name']} | {x['vs']} | {x['entries']} | "
            f"{_cell(x['d_fairness'], x['fairness_ci'], x['p_fairness'])} | "
            f"{_cell(x['d_privacy'], x['privacy_ci'], x['p_privacy'])} | "
            f"{x['d_ppl_rel']:+.1%} | {x['n_fairness']} / {x['n_privacy']} |"
        )
    return lines


def write_md(out: dict[str, Any], path: Path) -> None:
    rows, conf = out["rows"], out["eval_confirmation"]
    if conf and any(qualifies(c) for c in conf if c["name"] in out["qualifying_on_val"]):
        verdict = (
            "Raises both behaviours within the utility budget on val AND eval: "
            + ", ".join(c["name"] for c in conf if qualifies(c))
            + "."
        )
    elif out["qualifying_on_val"]:
        verdict = (
            "Some variants qualified on val ("
            + ", ".join(out["qualifying_on_val"])
            + ") but did not hold on the eval split."
        )
    else:
        verdict = (
            "**No variant raises both fairness (BBQ ambiguous accuracy) and privacy "
            "awareness with p < 0.05 within the utility budget (+5% perplexity, general "
            "accuracy not significantly lower) on this model.**"
        )
    lines = [
        "# SPIN variants on SmolLM2-135M-Instruct (dequantised Q4_1)",
        "",
        f"Verdict: {verdict}",
        "",
    ]
    if out.get("smoke"):
        lines += ["**SMOKE RUN (tiny sizes): these numbers mean nothing.**", ""]
    lines += why(out)
    lines += [
        f"All settings on the val split at q = p = {out['q']:g} (chosen on val by repro.py), "
        "paired on the same items with their edit point (`vs`: the original model, or the "
        "privacy-fine-tuned model); Δ = after − before with 95% paired bootstrap CI and exact "
        "McNemar p. Perplexity: held-out wiki, relative change. `random(...)` rows are the "
        "same-count random controls. Entries = weight entries changed (a unit edit changes "
        "whole rows/columns).",
        "",
        *_table(rows),
        "",
        "Secondary metrics (Δ [95% CI], McNemar p):",
        "",
        "| variant | "
        + " | ".join(f"Δ {lab} {'↑' if b == 'higher' else '↓'}" for _, lab, b in OTHER)
        + " |",
        "|---|" + "---|" * len(OTHER),
    ]
    for x in rows:
        cells = [
            _cell(o["diff"], o["ci"], o["p"]) if (o := x["other"].get(m)) else "–"
            for m, *_ in OTHER
        ]
        lines.append(f"| {x['name']} | " + " | ".join(cells) + " |")
    if out.get("best_on_val"):
        lines += [
            "",
            f"Final numbers once on the eval split for the best setting on val within the "
            f"utility budget (max Δ fairness + Δ privacy, controls excluded): "
            f"**{out['best_on_val']}**"
            + (", and every qualifying setting" if out["qualifying_on_val"] else "")
            + ".",
            "",
        ]
        lines += _table(conf) if conf else ["(not evaluated in this run)"]
    if out.get("not_run"):
        lines += [
            "",
            "Planned but not evaluated in this run: " + ", ".join(out["not_run"]) + ".",
        ]
    lines += [
        "",
        "Not in this study: SAE latents / residual directions. `spin_interp.sae` and "
        "`spin_interp.ablate.project_out` implement and test them, but no SAE for SmolLM2 is "
        "available offline and training one on 2 CPU cores did not fit the budget.",
        "",
        f"Evaluation time recorded with the cached reports: {out['eval_seconds'] / 60:.0f} min "
        "(1 torch thread; scoring and fine-tuning come on top). Run time of this invocation: "
        f"{out['seconds'] / 60:.1f} min (cached settings are reused).",
    ]
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
