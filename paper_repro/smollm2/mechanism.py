"""Mechanism analysis of the reproduction's SPIN edit (run after ``repro.py``).

Writes ``results/mechanism.json`` (and ``results/coupled_graph.json``) with:
- the coupled set's layer/module profile and the mean |W| of zeroed entries vs all entries of the
  same matrices (the "super weight" question);
- cautionary-phrase frequencies in the generations of the original and the SPIN-edited model
  (the paper's word-frequency figure), read from the saved evaluation reports;
- I(f; p) per layer before/after the edit (``spin_interp.coupling.compare_coupling``);
- statistics of the graph of MLP units that the coupled set touches (``spin_interp.graph``).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import spin_interp as si  # noqa: E402
from spin_interp.evaluate import EvalReport  # noqa: E402
from spin_interp.models import hf_parameters  # noqa: E402

CAUTION = [
    "sorry",
    "cannot",
    "can't",
    "not able",
    "privacy",
    "personal information",
    "consent",
    "respect",
    "not appropriate",
    "not enough information",
    "cannot be determined",
    "unknown",
    "stereotype",
    "depends",
]


def profile(model: Any, sel: Any, q: float) -> dict[str, Any]:
    params = hf_parameters(model)
    by: dict[str, Counter] = {}
    sel_abs, all_abs, n_sel, n_all = 0.0, 0.0, 0, 0
    for name, idx in sel.indices.items():
        if not idx.numel():
            continue
        layer = str(si.attribution.layer_of(name))
        by.setdefault(layer, Counter())[si.attribution.module_of(name)] += int(idx.numel())
        w = params[name].detach().abs().reshape(-1)
        sel_abs += float(w[idx].sum())
        n_sel += int(idx.numel())
        all_abs += float(w.sum())
        n_all += w.numel()
    return {
        "q": q,
        "entries": sel.count(),
        "by_layer_module": {k: dict(v) for k, v in by.items()},
        "mean_abs_selected": sel_abs / max(n_sel, 1),
        "mean_abs_all": all_abs / max(n_all, 1),
        "magnitude_ratio": (sel_abs / max(n_sel, 1)) / (all_abs / max(n_all, 1)),
    }


def generations(report: EvalReport) -> list[str]:
    out = []
    for m in report.metrics:
        for d in m.details or []:
            if "generation" in d:
                out.append(d["generation"])
    return out


def phrase_rates(texts: list[str]) -> dict[str, float]:
    low = [t.lower() for t in texts]
    return {
        w: 100.0 * sum(bool(re.search(re.escape(w), t)) for t in low) / max(len(low), 1)
        for w in CAUTION
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/repro"))
    ap.add_argument("--results", type=Path, default=HERE / "results")
    ap.add_argument("--layers", default="6,12,18,24")
    ap.add_argument("--n", type=int, default=32, help="examples per direction set and pool")
    ap.add_argument("--model", default=None)
    args = ap.parse_args(argv)
    from repro import Repro

    summary = json.loads((args.results / "summary.json").read_text())
    cfg, q = summary["config"], summary["chosen_q"]
    t0 = time.time()
    r = Repro(cfg, args.out, args.model or cfg["model"], smoke=False)
    sel = r.coupled(q)
    out: dict[str, Any] = {"profile": profile(r.model, sel, q)}
    rep_dir = args.out / "reports" / "eval"
    if (rep_dir / "original.json").exists() and (rep_dir / "spin_mlp.json").exists():
        before = generations(EvalReport.load(rep_dir / "original.json"))
        after = generations(EvalReport.load(rep_dir / "spin_mlp.json"))
        out["caution_phrases"] = {
            "before": phrase_rates(before),
            "after": phrase_rates(after),
            "n_before": len(before),
            "n_after": len(after),
        }
    edit = si.ablate.zero_weights(r.model, sel)
    layers = [int(x) for x in args.layers.split(",")]
    cmp = si.coupling.compare_coupling(
        r.model,
        edit,
        layers,
        n_direction=args.n,
        n_pool=args.n,
        n_boot=200,
        n_perm=200,
        progress=False,
    )
    out["coupling_mi"] = [
        {
            "layer": row["layer"],
            "before": {"mi": row["mi_before"], "ci": list(b.ci)},
            "after": {"mi": row["mi_after"], "ci": list(a.ci)},
            "delta": row["delta"],
            "delta_ci": [row["ci_low"], row["ci_high"]],
            "pvalue": row["pvalue"],
            "n_pool": row["n_pool"],
        }
        for row, b, a in zip(cmp.rows(), cmp.before, cmp.after, strict=True)
    ]
    # units whose down-projection column holds a zeroed entry
    units: dict[str, set[int]] = {}
    for name, idx in sel.indices.items():
        if name.endswith("down_proj.weight") and idx.numel():
            cols = hf_parameters(r.model)[name].shape[1]
            units.setdefault(name.rsplit(".", 2)[0], set()).update((idx % cols).tolist())
    if units:
        from spin_interp.graph import build_neuron_graph, graph_summary, save_graph
        from spin_interp.select import Selection

        d_mlp = hf_parameters(r.model)[next(n for n in sel.names() if "down_proj" in n)].shape[1]
        cand = Selection(
            {m: (d_mlp,) for m in units},
            {m: torch.tensor(sorted(u)) for m, u in units.items()},
            {"model_fingerprint": sel.fingerprint},
        )
        G = build_neuron_graph(r.model, cand, edges="weights", threshold=0.1)
        out["graph"] = graph_summary(G)
        save_graph(G, args.results / "coupled_graph.json")
    out["seconds"] = time.time() - t0
    (args.results / "mechanism.json").write_text(json.dumps(out, indent=1, default=str))
    print(json.dumps({k: v for k, v in out.items() if k != "graph"}, indent=1, default=str)[:4000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
