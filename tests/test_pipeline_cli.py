"""The end-to-end run from a config, config validation, and the CLI's exit codes."""

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spin_interp.cli import main
from spin_interp.pipeline import ConfigError, DatasetSpec, SpinConfig, run_spin


def _cfg(tiny_folder, out, **kw):
    spec = DatasetSpec(n=2)
    return SpinConfig(
        model=str(tiny_folder),
        fairness=spec,
        privacy=spec,
        general=spec,
        p=0.01,
        q=0.05,
        keep_fraction=0.1,
        out_dir=str(out),
        eval_sentences=3,
        max_len=96,
        **kw,
    )


def test_run_spin_writes_everything(tiny_folder, tmp_path):
    res = run_spin(_cfg(tiny_folder, tmp_path / "run"), progress=False)
    out = tmp_path / "run"
    for f in (
        "scores_fairness.safetensors",
        "scores_privacy.safetensors",
        "scores_general.safetensors",
        "selection.safetensors",
        "edit.safetensors",
        "summary.json",
        "summary.md",
        "model/model.safetensors",
    ):
        assert (out / f).exists(), f
    summary = json.loads((out / "summary.json").read_text())
    assert summary["selection_count"] == res.selection_count > 0
    assert summary["perplexity_before"]["texts"] == 3
    info = json.loads((out / "model" / "spin_interp.json").read_text())
    assert info["edits"][0]["entries"] == res.selection_count
    with pytest.raises(FileExistsError):
        run_spin(_cfg(tiny_folder, tmp_path / "run"), progress=False)


def test_config_from_toml(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(
        'model = "smollm2-135m-instruct"\nq = 0.001\np = 0.0005\nmode = "reference"\n'
        "[fairness]\nn = 16\n[privacy]\nn = 8\nsafe = false\n"
    )
    cfg = SpinConfig.from_toml(path)
    assert cfg.fairness.n == 16 and cfg.privacy.safe is False and cfg.general.n == 32
    assert cfg.mode == "reference"


@pytest.mark.parametrize(
    "raw, msg",
    [
        ({"qq": 1}, "unknown config keys"),
        ({"q": 0}, "q must be"),
        ({"p": "a lot"}, "p must be"),
        ({"mode": "soft"}, "mode must be"),
        ({"fairness": 3}, "must be a table"),
        ({"fairness": {"nn": 3}}, "unknown keys"),
        ({"privacy": {"n": -1}}, "privacy.n"),
        ({"q": 0.5, "keep_fraction": 0.01}, "keep_fraction"),
    ],
)
def test_config_errors(raw, msg):
    with pytest.raises(ConfigError, match=msg):
        SpinConfig.from_dict(raw)


_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.floats(allow_nan=True),
    st.text(max_size=5),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
_keys = st.sampled_from(
    [
        "model",
        "p",
        "q",
        "mode",
        "method",
        "targets",
        "format",
        "max_len",
        "keep_fraction",
        "fairness",
        "privacy",
        "general",
        "bogus",
        "dtype",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_keys, _values, max_size=5))
def test_config_fuzz_gives_clean_errors(raw):
    """Random missing/extra/mistyped keys: a valid config or a ConfigError, nothing else."""
    try:
        SpinConfig.from_dict(raw)
    except ConfigError:
        pass


def test_cli_exit_codes(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["models"])
    assert e.value.code == 0 and "smollm2-135m-instruct" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["select", str(tmp_path / "a"), "b", "c", "-o", str(tmp_path / "s")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: FileNotFoundError") and "Traceback" not in err
    with pytest.raises(SystemExit) as e:
        main(["no-such-command"])
    assert e.value.code == 2
    bad = tmp_path / "bad.toml"
    bad.write_text("q = [")
    with pytest.raises(SystemExit) as e:
        main(["run", str(bad)])
    assert e.value.code == 2 and "not valid TOML" in capsys.readouterr().err


def test_cli_select_roundtrip(tiny_folder, tmp_path, capsys):
    run_spin(_cfg(tiny_folder, tmp_path / "r", export=False), progress=False)
    r = tmp_path / "r"
    with pytest.raises(SystemExit) as e:
        main(
            [
                "--quiet",
                "select",
                str(r / "scores_privacy.safetensors"),
                str(r / "scores_fairness.safetensors"),
                str(r / "scores_general.safetensors"),
                "--p",
                "0.01",
                "--q",
                "0.05",
                "-o",
                str(tmp_path / "sel.safetensors"),
            ]
        )
    assert e.value.code == 0
    from spin_interp.select import Selection

    assert Selection.load(tmp_path / "sel.safetensors") == Selection.load(
        r / "selection.safetensors"
    )
    with pytest.raises(SystemExit) as e:
        main(
            [
                "--quiet",
                "ablate",
                str(tmp_path / "sel.safetensors"),
                "--model",
                str(tiny_folder),
                "-o",
                str(tmp_path / "edited"),
            ]
        )
    assert e.value.code == 0 and (tmp_path / "edited" / "model.safetensors").exists()


def test_run_spin_with_paired_evaluation(tiny_folder, tmp_path, monkeypatch):
    """evaluate='quick' writes before/after reports and a paired comparison (tiny sizes)."""
    import spin_interp.evaluate.suite as suite

    small = {k: (2 if isinstance(v, int) and v else v) for k, v in suite.SUITES["quick"].items()}
    monkeypatch.setitem(suite.SUITES, "quick", small)
    res = run_spin(
        _cfg(tiny_folder, tmp_path / "ev", evaluate="quick", export=False), progress=False
    )
    for f in ("eval_before.json", "eval_after.json", "eval_comparison.json"):
        assert (tmp_path / "ev" / f).exists()
    assert res.comparison_markdown and "paired" in (tmp_path / "ev" / "summary.md").read_text()


def test_cli_score_chunked_equals_one_pass(tiny_folder, tmp_path):
    from spin_interp.attribution import WeightScores

    base = [
        "--quiet",
        "score",
        "privacy",
        "--model",
        str(tiny_folder),
        "--n",
        "2",
        "--max-len",
        "96",
        "--keep-fraction",
        "0.05",
    ]
    for name, extra in (("one", []), ("chunk", ["--layer-chunk", "1"])):
        with pytest.raises(SystemExit) as e:
            main(base + ["-o", str(tmp_path / f"{name}.safetensors")] + extra)
        assert e.value.code == 0
    a = WeightScores.load(tmp_path / "one.safetensors")
    b = WeightScores.load(tmp_path / "chunk.safetensors")
    for n in a.names():
        assert torch.equal(a.topk(n)[1], b.topk(n)[1]) and torch.equal(a.topk(n)[0], b.topk(n)[0])
    with pytest.raises(SystemExit) as e:
        main(base + ["-o", str(tmp_path / "x.safetensors"), "--layer-chunk", "0"])
    assert e.value.code == 2
