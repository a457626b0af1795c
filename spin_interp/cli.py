"""The ``spin-interp`` command line.

Exit codes: 0 success, 2 usage or validation error, 1 runtime failure. Errors print one line;
``--debug`` shows the traceback.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="SPIN: find and suppress neurons coupled to two behaviours.",
)
_STATE = {"debug": False, "quiet": False}

_USAGE_ERRORS = (
    ValueError,
    KeyError,
    TypeError,
    FileExistsError,
    FileNotFoundError,
    IsADirectoryError,
    NotADirectoryError,
)


@app.callback()
def _main(
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
) -> None:
    _STATE.update(quiet=quiet, debug=debug)
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )


def _progress() -> bool:
    return not _STATE["quiet"]


def _targets(value: str) -> str | list[str]:
    return value.split(",") if "," in value or value.endswith(".weight") else value


def _check_out_file(out: Path) -> None:
    if out.is_dir():
        raise IsADirectoryError(f"--out {out} is a folder; give a file path (.safetensors)")


def _check_score_args(
    behaviour: str, split: str, method: str, fmt: str, n: int, keep_fraction: float, out: Path
) -> None:
    """The cheap checks of ``score``, made before a model is loaded (which can take minutes)."""
    from spin_interp.attribution import METHODS
    from spin_interp.data.schema import BEHAVIOURS
    from spin_interp.data.splits import check_split
    from spin_interp.models import FORMATS

    if behaviour not in BEHAVIOURS:
        raise ValueError(f"unknown behaviour {behaviour!r}; choose one of {', '.join(BEHAVIOURS)}")
    check_split(split)
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {FORMATS}")
    if n < 1:
        raise ValueError(f"--n must be a positive integer, got {n}")
    if not 0 < keep_fraction <= 1:
        raise ValueError(f"--keep-fraction must be in (0, 1], got {keep_fraction}")
    _check_out_file(out)


def _check_out_folder(out: Path, overwrite: bool) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty; pass --overwrite to replace it")


@app.command()
def models() -> None:
    """List the model aliases that load with no model hub."""
    from spin_interp.models import cache_dir, list_aliases

    for name, desc in list_aliases().items():
        typer.echo(f"{name}\t{desc}")
    typer.echo(f"(converted models are cached in {cache_dir()})")


@app.command()
def score(
    behaviour: str = typer.Argument(..., help="fairness, privacy or general"),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the scores (.safetensors)"),
    model: str = typer.Option("smollm2-135m-instruct", help="Alias, hub id, folder or .gguf"),
    source: str = typer.Option("offline", help="offline, hub, or a local data file"),
    split: str = typer.Option("score"),
    n: int = typer.Option(32, help="Number of examples"),
    seed: int = typer.Option(0),
    unsafe: bool = typer.Option(False, help="Score on unsafe (malicious) responses"),
    method: str = typer.Option("snip", help="snip or wanda"),
    targets: str = typer.Option("mlp", help="mlp, attn, all, or comma-separated HF names"),
    keep_fraction: float = typer.Option(1e-3),
    fmt: str = typer.Option("chat", "--format", help="chat or plain"),
    max_len: int = typer.Option(512),
    dtype: str = typer.Option("float32", help="float32, bfloat16 or float16"),
    layer_chunk: Optional[int] = typer.Option(  # noqa: UP045
        None, help="Score k layers per pass over the data (less memory, k passes)"
    ),
    checkpoint_dir: Optional[Path] = typer.Option(None, help="Checkpoint folder"),  # noqa: UP045
    checkpoint_every: int = typer.Option(64, help="Checkpoint every M examples"),
    resume: bool = typer.Option(False, help="Continue from the checkpoint in --checkpoint-dir"),
    distributed: bool = typer.Option(
        False, help="Inside torchrun: shard examples over ranks, all-reduce, rank 0 writes"
    ),
) -> None:
    """Score every weight entry of the targeted matrices on one behaviour dataset."""
    import torch

    import spin_interp as si
    from spin_interp import distributed as dist

    if dtype not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"dtype must be float32, bfloat16 or float16, got {dtype!r}")
    _check_score_args(behaviour, split, method, fmt, n, keep_fraction, out)
    device = "cpu"
    ctx = dist.DistContext.local()
    if distributed:
        ctx = dist.init_process_group()
        device = dist.local_device()
    try:
        m = si.load_model(model, device=device, dtype=getattr(torch, dtype))
        examples = si.data.load_behaviour(
            behaviour, source=source, split=split, n=n, seed=seed, safe=not unsafe
        )
        s = si.score_weights(
            m,
            examples,
            method=method,
            targets=_targets(targets),
            keep_fraction=keep_fraction,
            format=fmt,
            max_len=max_len,
            progress=_progress(),
            layer_chunk=layer_chunk,
            checkpoint_dir=checkpoint_dir,
            checkpoint_every=checkpoint_every,
            resume=resume,
            distributed=distributed,
            save_to=out if distributed else None,
        )
        if not distributed:
            s.save(out)
        if ctx.is_main:
            typer.echo(f"{s!r} -> {out}")
    finally:
        if distributed:
            dist.destroy_process_group()


@app.command()
def select(
    a: Path = typer.Argument(..., help="Scores of behaviour a (privacy, for mode=reference)"),
    b: Path = typer.Argument(..., help="Scores of behaviour b (fairness)"),
    general: Path = typer.Argument(..., help="Scores on general data"),
    out: Path = typer.Option(..., "--out", "-o"),
    p: float = typer.Option(1e-4),
    q: float = typer.Option(1e-4),
    mode: str = typer.Option("paper", help="paper, reference or single"),
) -> None:
    """Form the coupled set (top_q(a) & top_q(b)) - top_p(general) and save it."""
    from spin_interp.attribution import WeightScores
    from spin_interp.select import select_coupled

    _check_out_file(out)
    sel = select_coupled(
        WeightScores.load(a), WeightScores.load(b), WeightScores.load(general), p=p, q=q, mode=mode
    )
    sel.save(out)
    typer.echo(f"{sel!r} -> {out}")
    typer.echo(json.dumps({str(k): v for k, v in sel.counts_by_layer().items()}))


@app.command()
def ablate(
    selection: Path = typer.Argument(..., help="A saved selection"),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the edited HF model"),
    model: str = typer.Option("smollm2-135m-instruct"),
    neurons: bool = typer.Option(False, help="The selection holds units, not weight entries"),
    overwrite: bool = typer.Option(False),
) -> None:
    """Zero a saved selection in the model and export the edited model (verified)."""
    import spin_interp as si
    from spin_interp.select import Selection

    sel = Selection.load(selection)  # a bad selection fails before the model is loaded
    _check_out_folder(out, overwrite)
    m = si.load_model(model)
    edit = si.ablate.zero_neurons(m, sel) if neurons else si.ablate.zero_weights(m, sel)
    edit.apply()
    path = si.export_hf(m, out, overwrite=overwrite)
    typer.echo(f"{edit!r} -> {path}")


@app.command()
def export(
    out: Path = typer.Option(..., "--out", "-o"),
    model: str = typer.Option("smollm2-135m-instruct"),
    overwrite: bool = typer.Option(False),
) -> None:
    """Export a model (e.g. an alias) as a verified Hugging Face folder."""
    import spin_interp as si

    _check_out_folder(out, overwrite)
    path = si.export_hf(si.load_model(model), out, overwrite=overwrite)
    typer.echo(f"exported -> {path}")


@app.command()
def run(config: Path = typer.Argument(..., help="A TOML run configuration")) -> None:
    """Run SPIN end to end from a TOML config (see README)."""
    from spin_interp.pipeline import SpinConfig, run_spin

    cfg = SpinConfig.from_toml(config)
    result = run_spin(cfg, progress=_progress())
    typer.echo(result.to_markdown())


@app.command("eval")
def eval_(
    model: str = typer.Option("smollm2-135m-instruct", help="Alias, hub id, folder or .gguf"),
    suite: str = typer.Option("quick", help="quick or full"),
    seed: int = typer.Option(0),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the report (JSON)"),  # noqa: UP045
    selection: Optional[Path] = typer.Option(  # noqa: UP045
        None, help="Evaluate with this saved selection zeroed"
    ),
) -> None:
    """Evaluate fairness, privacy and general capability (every rate with n and a 95% CI)."""
    import spin_interp as si
    from spin_interp.evaluate import SUITES, evaluate
    from spin_interp.select import Selection

    if suite not in SUITES:  # checked before the (slow) model load
        raise ValueError(f"unknown suite {suite!r}; choose one of {sorted(SUITES)}")
    if out is not None:
        _check_out_file(out)
    sel = Selection.load(selection) if selection is not None else None
    m = si.load_model(model)
    if sel is not None:
        si.ablate.edit_for(m, sel).apply()
    report = evaluate(m, suite=suite, seed=seed, progress=_progress())
    if out is not None:
        report.save(out)
    typer.echo(report.to_markdown())


@app.command()
def compare(
    before: Path = typer.Argument(..., help="EvalReport JSON of the original model"),
    after: Path = typer.Argument(..., help="EvalReport JSON of the edited model"),
) -> None:
    """Paired before/after table of two saved evaluation reports."""
    from spin_interp.evaluate import EvalReport

    typer.echo(EvalReport.load(before).compare(EvalReport.load(after)).to_markdown())


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o"),
    n: int = typer.Option(32, help="Scoring examples per behaviour"),
    q: float = typer.Option(1e-4, help="Top fraction per behaviour (p = q)"),
    suite: str = typer.Option("quick", help="Evaluation before/after: none, quick or full"),
) -> None:
    """The main job on the embedded default: real SmolLM2 and real offline benchmark data."""
    from spin_interp.pipeline import DatasetSpec, SpinConfig, run_spin

    cfg = SpinConfig(
        fairness=DatasetSpec(n=n),
        privacy=DatasetSpec(n=n),
        general=DatasetSpec(n=n),
        p=q,
        q=q,
        out_dir=str(out),
        overwrite=True,
        evaluate=suite,
    )
    typer.echo(
        f"SPIN demo on {cfg.model}: {n} scoring examples per behaviour, p = q = {q}, "
        f"mode={cfg.mode}, targets={cfg.targets}; writing {out}/"
    )
    result = run_spin(cfg, progress=_progress())
    typer.echo(result.to_markdown())
    typer.echo(f"\ntimings (s): {json.dumps({k: round(v, 1) for k, v in result.timings.items()})}")


def _one_line(exc: BaseException) -> str:
    """``Type: message`` on one line (KeyError's quotes dropped, newlines folded)."""
    msg = exc.args[0] if isinstance(exc, KeyError) and len(exc.args) == 1 else exc
    text = " ".join(str(msg).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def main(argv: Optional[list[str]] = None) -> None:  # noqa: UP045
    """Entry point: map exceptions to exit codes (2 usage/validation, 1 runtime).

    Errors print one line on stderr; with ``--debug`` the traceback is printed first (the exit
    code is the same).
    """
    _STATE.update(debug=False, quiet=False)  # main() may be called more than once per process
    try:
        rv = app(args=argv, standalone_mode=False)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        typer.echo("error: interrupted", err=True)
        sys.exit(1)
    except Exception as exc:  # noqa: BLE001 - the CLI boundary
        kinds = {c.__name__ for c in type(exc).__mro__}
        if "Abort" in kinds:  # click turns Ctrl-C / EOF into Abort
            typer.echo("error: interrupted", err=True)
            sys.exit(1)
        if "ClickException" in kinds:  # usage errors of typer's (vendored) click
            exc.show()  # type: ignore[attr-defined]
            sys.exit(2)
        code = 2 if isinstance(exc, _USAGE_ERRORS) else 1
        if _STATE["debug"]:
            traceback.print_exception(exc, file=sys.stderr)
        typer.echo(f"error: {_one_line(exc)}", err=True)
        sys.exit(code)
    # with standalone_mode=False an explicit exit (e.g. --help) comes back as its exit code
    if isinstance(rv, int) and not isinstance(rv, bool) and rv != 0:
        if rv == 130:  # typer turns Ctrl-C into Exit(130)
            typer.echo("error: interrupted", err=True)
        sys.exit(rv if rv in (1, 2) else 1)
    sys.exit(0)


if __name__ == "__main__":
    main()
