"""The paper's own setting (7B chat models, BeaverTails / Alpaca / SALAD-Bench / MD-Judge).

Needs a model hub and a GPU. For each config: score fairness, privacy and general data (N = 128,
SNIP on MLP weights), select the coupled set in ``paper`` mode and in ``reference`` mode (the
released code's positional AND), zero it, export the paper-mode model (verified), and measure
fairness / privacy awareness on SALAD-Bench questions (greedy, 64 new tokens, no chat template,
judged by MD-Judge-v0.1). Prints a table in the layout of the paper's Table 1 with the paper's
published numbers beside ours.

    python paper_repro/paper7b/run.py paper_repro/paper7b/configs/*.toml --out runs/paper7b
    python paper_repro/paper7b/run.py paper_repro/paper7b/configs/*.toml --dry-run

``--dry-run`` needs neither hub nor GPU: it validates every config and checks the data schemas
and the judge's output parsing on the small fixture files in ``fixtures/`` (rows written for
this repository, in the hub datasets' schemas).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
FIXTURES = {
    "beavertails": HERE / "fixtures" / "beavertails.jsonl",
    "alpaca": HERE / "fixtures" / "alpaca.jsonl",
    "salad": HERE / "fixtures" / "salad.jsonl",
}
CANNED_JUDGE = (
    "[RESULT]: safe",
    "[RESULT]: unsafe\n[CATEGORY]: O2: Unfair Representation",
    "no verdict",
)
EVAL_KEYS = {"salad_source", "judge", "max_new_tokens", "chat_template", "n_fairness", "n_privacy"}

#: Table 1 of the paper (fairness / privacy awareness), for side-by-side reporting.
PAPER_TABLE1 = {
    "qwen2-7b-instruct": {"original": (0.6684, 0.7412), "SPIN": (0.7497, 0.8447)},
    "mistral-7b-instruct-v0.2": {"original": (0.6231, 0.6636), "SPIN": (0.6342, 0.7154)},
    "vicuna-7b-v1.5": {"original": (0.5501, 0.3760), "SPIN": (0.5778, 0.4414)},
    "llama-2-7b-chat": {"original": (0.7386, 0.7504), "SPIN": (0.7746, 0.8432)},
}


def load_config(path: Path) -> tuple[str, Any, dict[str, Any]]:
    """(label, SpinConfig, eval table) of one TOML file; raises ConfigError on any problem."""
    from spin_interp.pipeline import ConfigError, SpinConfig

    raw = tomllib.loads(path.read_text())
    unknown = set(raw) - {"label", "spin", "eval"}
    if unknown or "spin" not in raw or "eval" not in raw:
        raise ConfigError(f"{path}: needs tables [spin] and [eval] and a label; got {sorted(raw)}")
    spin = SpinConfig.from_dict(raw["spin"])
    ev = raw["eval"]
    if set(ev) != EVAL_KEYS:
        raise ConfigError(f"{path}: [eval] keys must be {sorted(EVAL_KEYS)}, got {sorted(ev)}")
    return str(raw["label"]), spin, ev


def dry_run(paths: list[Path]) -> list[dict[str, Any]]:
    """Validate configs, data schemas (fixtures) and MD-Judge parsing, offline."""
    from spin_interp import data
    from spin_interp.evaluate import MDJudge, awareness

    checks = []
    for path in paths:
        label, spin, ev = load_config(path)
        if label not in PAPER_TABLE1:
            raise ValueError(f"{path}: label {label!r} has no published numbers to compare with")
        n = {}
        for b in ("fairness", "privacy", "general"):
            spec = getattr(spin, b)
            src = FIXTURES["alpaca" if b == "general" else "beavertails"]
            n[b] = len(
                data.load_behaviour(b, source=src, split=spec.split, seed=spec.seed, safe=spec.safe)
            )
            if n[b] == 0:
                raise ValueError(f"fixture check: no {b} rows in the {spec.split} split of {src}")
        q = {
            b: len(data.load_salad_questions(b, source=FIXTURES["salad"]))
            for b in ("fairness", "privacy")
        }
        judge = MDJudge(generate_fn=lambda prompts: list(CANNED_JUDGE[: len(prompts)]))
        rate, safe, unsafe, unparsable = awareness(judge.judge(["q"] * 3, ["a"] * 3, "fairness"))
        if (safe, unsafe, unparsable) != (1, 1, 1):
            raise AssertionError("MD-Judge parsing of canned outputs changed")
        checks.append(
            {
                "config": path.name,
                "model": spin.model,
                "p": spin.p,
                "q": spin.q,
                "fixture_rows": n,
                "salad_fixture_questions": q,
                "judge_parse": "ok",
            }
        )
    return checks


def awareness_on_salad(model: Any, ev: dict[str, Any], judge: Any) -> dict[str, Any]:
    from spin_interp import data
    from spin_interp.evaluate import awareness, generate

    out = {}
    for b in ("fairness", "privacy"):
        n = ev[f"n_{b}"] or None
        questions = data.load_salad_questions(b, source=ev["salad_source"], n=n)
        answers = generate(
            model, questions, max_new_tokens=ev["max_new_tokens"], chat=ev["chat_template"]
        )
        rate, safe, unsafe, unparsable = awareness(judge.judge(questions, answers, b))
        out[b] = {
            "awareness": rate,
            "safe": safe,
            "unsafe": unsafe,
            "unparsable": unparsable,
            "n": len(questions),
        }
    return out


def full_run(paths: list[Path], out_dir: Path, device: str) -> list[dict[str, Any]]:
    import torch

    import spin_interp as si
    from spin_interp.evaluate import MDJudge

    rows = []
    for path in paths:
        label, spin, ev = load_config(path)
        t0 = time.time()
        model = si.load_model(spin.model, device=device, dtype=getattr(torch, spin.dtype))
        scores = {}
        for b in ("fairness", "privacy", "general"):
            spec = getattr(spin, b)
            exs = si.data.load_behaviour(
                b, source=spec.source, split=spec.split, n=spec.n, seed=spec.seed, safe=spec.safe
            )
            scores[b] = si.score_weights(
                model,
                exs,
                method=spin.method,
                targets=spin.targets,
                keep_fraction=spin.keep_fraction,
                format=spin.format,
                max_len=spin.max_len,
            )
            scores[b].save(out_dir / label / f"scores_{b}.safetensors")
        judge = MDJudge(ev["judge"])
        result = {"config": label, "original": awareness_on_salad(model, ev, judge)}
        for mode in ("paper", "reference"):
            sel = si.select_coupled(
                scores["privacy"],
                scores["fairness"],
                scores["general"],
                p=spin.p,
                q=spin.q,
                mode=mode,
            )
            sel.save(out_dir / label / f"selection_{mode}.safetensors")
            edit = si.ablate.zero_weights(model, sel)
            with edit.applied():
                result[f"SPIN ({mode})"] = awareness_on_salad(model, ev, judge)
                result[f"SPIN ({mode})"]["entries"] = sel.count()
                if mode == "paper":
                    si.export_hf(model, out_dir / label / "spin-model", overwrite=True)
        result["seconds"] = time.time() - t0
        (out_dir / label).mkdir(parents=True, exist_ok=True)
        (out_dir / label / "result.json").write_text(json.dumps(result, indent=2))
        rows.append(result)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | method | F (ours) | P (ours) | F (paper) | P (paper) | zeroed |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        paper = PAPER_TABLE1[r["config"]]
        for method in ("original", "SPIN (paper)", "SPIN (reference)"):
            m = r[method]
            pf, pp = paper["original" if method == "original" else "SPIN"]
            lines.append(
                f"| {r['config']} | {method} | {m['fairness']['awareness']:.4f} | "
                f"{m['privacy']['awareness']:.4f} | {pf:.4f} | {pp:.4f} | "
                f"{m.get('entries', 0)} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("configs", nargs="+", type=Path)
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("runs/paper7b"))
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args(argv)
    if args.dry_run:
        for c in dry_run(args.configs):
            print(json.dumps(c))
        print(f"dry run ok: {len(args.configs)} configs")
        return 0
    rows = full_run(args.configs, args.out, args.device)
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
