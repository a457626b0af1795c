"""The paper's 7B setting validates offline (configs, data schemas, judge parsing)."""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_script(name: str, path: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(mod)
    return mod


def _module():
    return _load_script("paper7b_run", "paper_repro/paper7b/run.py")


def test_dry_run_all_configs(capsys):
    mod = _module()
    configs = sorted((ROOT / "paper_repro/paper7b/configs").glob("*.toml"))
    assert len(configs) == 4
    assert mod.main([str(c) for c in configs] + ["--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "dry run ok: 4 configs" in out and "Qwen/Qwen2-7B-Instruct" in out


def test_dry_run_rejects_bad_config(tmp_path):
    from spin_interp.pipeline import ConfigError

    mod = _module()
    bad = tmp_path / "bad.toml"
    bad.write_text('label = "qwen2-7b-instruct"\n[spin]\nq = 2.0\n[eval]\n')
    with pytest.raises(ConfigError):
        mod.main([str(bad), "--dry-run"])


def test_table_layout():
    mod = _module()
    m = {"fairness": {"awareness": 0.5}, "privacy": {"awareness": 0.25}}
    row = {
        "config": "llama-2-7b-chat",
        "original": m,
        "SPIN (paper)": {**m, "entries": 7},
        "SPIN (reference)": {**m, "entries": 9},
    }
    text = mod.table([row])
    assert "| llama-2-7b-chat | SPIN (paper) | 0.5000 | 0.2500 | 0.7746 | 0.8432 | 7 |" in text


def _smoke_args(folder, tmp_path, res) -> list[str]:
    return [
        "--smoke",
        "--model",
        str(folder),
        "--out",
        str(tmp_path / "run"),
        "--results",
        str(res),
    ]


def test_smollm2_repro_smoke(tmp_path, tiny_folder):
    """The CPU reproduction end to end at tiny sizes on a tiny model (numbers mean nothing)."""
    mod = _load_script("smollm2_repro", "paper_repro/smollm2/repro.py")
    res = tmp_path / "results"
    args = _smoke_args(tiny_folder, tmp_path, res)
    assert mod.main(args) == 0
    summary = __import__("json").loads((res / "summary.json").read_text())
    assert {
        "spin_mlp",
        "random_mlp",
        "reference_mode",
        "sft_full_privacy",
        "sft_lora_privacy",
    } <= set(summary["settings"])
    assert (
        summary["settings"]["spin_mlp"]["info"]["entries"]
        == summary["settings"]["random_mlp"]["info"]["entries"]
    )
    text = (res / "RESULTS.md").read_text()
    assert "SMOKE RUN" in text and "dequantised Q4_1" in text
    # the opt-in larger-sample stage reuses the cached val choice and adds its own section
    assert mod.main(args + ["--stages", "val,large"]) == 0
    summary = __import__("json").loads((res / "summary.json").read_text())
    large = summary["large"]["settings"]
    assert set(large) == {"spin_mlp", "random_mlp"}
    assert large["spin_mlp"]["info"]["entries"] == large["random_mlp"]["info"]["entries"] > 0
    assert summary["large"]["original"]["bbq_ambig_accuracy"]["n"] == 3
    assert "Larger-sample confirmation" in (res / "RESULTS.md").read_text()


def test_variants_smoke(tmp_path, tiny_folder):
    """The variants study end to end at tiny sizes on a tiny model (numbers mean nothing)."""
    import json

    sys.path.insert(0, str(ROOT / "paper_repro/smollm2"))
    mod = _load_script("smollm2_variants", "paper_repro/smollm2/variants.py")
    res, md = tmp_path / "results", tmp_path / "VARIANTS.md"
    args = _smoke_args(tiny_folder, tmp_path, res) + ["--md", str(md)]
    assert mod.main(args) == 0
    out = json.loads((res / "variants.json").read_text())
    names = [r["name"] for r in out["rows"]]
    assert {"paper", "random(paper)", "soft", "paper+guard0.9", "paper scale0.5"} <= set(names)
    rows = {r["name"]: r for r in out["rows"]}
    assert rows["paper"]["entries"] == rows["random(paper)"]["entries"]
    new = {"paper-G2", "paper cap2/matrix", "paper N=4", "coupled heads", "graph hubs 8 units"}
    assert new | {"MI-guided 8 units mean-abl.", "SFT(privacy)+paper"} <= set(names)
    for a, b in [("paper-G2", "random(paper-G2)"), ("coupled heads", "random(heads)")]:
        assert rows[a]["entries"] == rows[b]["entries"]
    # the edit on the fine-tuned model is paired with the fine-tuned model, not the original
    assert rows["SFT(privacy)+paper"]["vs"] == "SFT(privacy)"
    assert rows["SFT(privacy)"]["vs"] == "original"
    assert out["best_on_val"] and len(out["eval_confirmation"]) >= 1
    assert "Verdict" in md.read_text() and "SMOKE RUN" in md.read_text()
    # reporting only what is cached reproduces the same rows without evaluating anything; the
    # mechanism analysis, once saved, is summarised at the top
    mech = {
        "profile": {"magnitude_ratio": 4.25},
        "coupling_mi": [{"layer": 1, "delta": -0.02, "delta_ci": [-0.1, 0.05]}],
        "graph": {
            "nodes": 9,
            "edges": 20,
            "density": 0.3,
            "components": 1,
            "communities": 2,
            "modularity": 0.1,
        },
    }
    (res / "mechanism.json").write_text(json.dumps(mech))
    assert mod.main(args + ["--cached-only"]) == 0
    text = md.read_text()
    assert "## Why" in text and "4.2× the mean |W|" in text and "-0.020 (layer 1)" in text
    (res / "mechanism.json").unlink()  # a partial file: the figure script needs the real one
    again = json.loads((res / "variants.json").read_text())
    assert again["rows"] == out["rows"] and again["not_run"] == []
    # the figure script redraws from a redirected results folder into a redirected figures folder
    fmod = _load_script("make_figures", "figures/make_figures.py")
    assert fmod.main(["--results", str(res), "--out", str(tmp_path / "figs")]) == 0
    assert (tmp_path / "figs" / "variants_pareto.png").stat().st_size > 1000
