"""The end-to-end SPIN run from a config: data -> model -> scores -> selection -> edit -> export.

Used by the CLI (``spin-interp run`` / ``spin-interp demo``), notebooks and ``paper_repro``. Every
intermediate result is written to ``out_dir``: the three score files, the selection, the edit, the
verified export and a ``summary.json``.
"""

from __future__ import annotations

import json
import logging
import time
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from spin_interp._io import atomic_write_text

log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A run configuration is invalid (missing, unknown or mistyped keys, bad values)."""


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass
class DatasetSpec:
    """Which behaviour data to score on."""

    source: str = "offline"
    n: int = 32
    split: str = "score"
    safe: bool = True
    seed: int = 0


@dataclass
class SpinConfig:
    """Everything a SPIN run needs. ``fairness`` is ``b`` and ``privacy`` is ``a`` in
    :func:`spin_interp.select.select_coupled` (so ``mode="reference"`` keeps privacy indices,
    as the released code does)."""

    model: str = "smollm2-135m-instruct"
    fairness: DatasetSpec = field(default_factory=DatasetSpec)
    privacy: DatasetSpec = field(default_factory=DatasetSpec)
    general: DatasetSpec = field(default_factory=DatasetSpec)
    method: str = "snip"
    targets: str | list[str] = "mlp"
    p: float = 1e-4
    q: float = 1e-4
    mode: str = "paper"
    format: str = "chat"
    max_len: int = 512
    keep_fraction: float = 1e-3
    out_dir: str = "runs/spin"
    overwrite: bool = False
    export: bool = True
    eval_sentences: int = 40
    evaluate: str = "none"
    eval_seed: int = 0
    dtype: str = "float32"

    def validate(self) -> SpinConfig:
        from spin_interp.attribution import METHODS
        from spin_interp.models import FORMATS
        from spin_interp.select import MODES

        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ConfigError(msg)

        need(isinstance(self.model, str) and bool(self.model), "model must be a non-empty string")
        need(self.method in METHODS, f"method must be one of {METHODS}, got {self.method!r}")
        need(self.mode in MODES, f"mode must be one of {MODES}, got {self.mode!r}")
        need(self.format in FORMATS, f"format must be one of {FORMATS}, got {self.format!r}")
        for name in ("p", "q", "keep_fraction"):
            v = getattr(self, name)
            need(
                isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 1,
                f"{name} must be a number in (0, 1], got {v!r}",
            )
        need(
            self.keep_fraction >= max(self.p, self.q),
            f"keep_fraction ({self.keep_fraction}) must be >= p and q so the sets can be formed",
        )
        need(_is_int(self.max_len) and self.max_len >= 2, "max_len must be an int >= 2")
        need(
            _is_int(self.eval_sentences) and self.eval_sentences >= 0,
            "eval_sentences must be an int >= 0",
        )
        need(
            isinstance(self.out_dir, str) and bool(self.out_dir),
            "out_dir must be a non-empty string",
        )
        for flag in ("overwrite", "export"):
            v = getattr(self, flag)
            need(isinstance(v, bool), f"{flag} must be true or false, got {v!r}")
        from spin_interp.evaluate import SUITES

        suites = ("none", *sorted(SUITES))
        need(
            isinstance(self.evaluate, str) and self.evaluate in suites,
            f"evaluate must be one of {suites}, got {self.evaluate!r}",
        )
        need(_is_int(self.eval_seed), "eval_seed must be an int")
        need(
            self.dtype in ("float32", "bfloat16", "float16"),
            "dtype must be float32/bfloat16/float16",
        )
        need(
            (isinstance(self.targets, str) and bool(self.targets))
            or (
                isinstance(self.targets, list)
                and bool(self.targets)
                and all(isinstance(t, str) for t in self.targets)
            ),
            "targets must be a non-empty string or list of names",
        )
        for b in ("fairness", "privacy", "general"):
            spec = getattr(self, b)
            need(
                isinstance(spec.n, int) and not isinstance(spec.n, bool) and spec.n > 0,
                f"{b}.n must be a positive int",
            )
            need(isinstance(spec.source, str), f"{b}.source must be a string")
            need(isinstance(spec.safe, bool), f"{b}.safe must be true or false")
            need(_is_int(spec.seed), f"{b}.seed must be an int")
            need(spec.split in ("score", "val", "eval"), f"{b}.split must be score, val or eval")
        return self

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> SpinConfig:
        if not isinstance(raw, dict):
            raise ConfigError("a config must be a table of keys")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"unknown config keys {unknown}; valid keys: {sorted(known)}")
        kw: dict[str, Any] = {}
        for k, v in raw.items():
            if k in ("fairness", "privacy", "general"):
                if not isinstance(v, dict):
                    raise ConfigError(f"{k} must be a table (e.g. [{k}] n = 32)")
                dk = {f.name for f in fields(DatasetSpec)}
                bad = sorted(set(v) - dk)
                if bad:
                    raise ConfigError(f"unknown keys {bad} in [{k}]; valid: {sorted(dk)}")
                kw[k] = DatasetSpec(**v)
            else:
                kw[k] = v
        return cls(**kw).validate()

    @classmethod
    def from_toml(cls, path: str | Path) -> SpinConfig:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"no config file at {path}")
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path} is not UTF-8 text, so not a TOML config: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
        return cls.from_dict(raw)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def wiki_perplexity(model: Any, n: int) -> dict[str, float]:
    """Token-weighted perplexity on ``n`` held-out (eval split) wiki sentences."""
    from spin_interp import data
    from spin_interp.evaluate import Runner, perplexity

    texts = data.load_wiki_sentences("eval", n=n)
    m = perplexity(Runner(model), texts)
    return {"perplexity": m.value, "tokens": int(sum(m.weights)), "texts": m.n}


@dataclass
class SpinResult:
    """What a run produced: paths, counts and the before/after numbers."""

    out_dir: str
    selection_count: int
    counts_by_layer: dict[str, int]
    counts_by_module: dict[str, int]
    perplexity_before: dict[str, float] | None
    perplexity_after: dict[str, float] | None
    export_dir: str | None
    timings: dict[str, float]
    config: dict[str, Any]
    model_fingerprint: str
    paths: dict[str, str]
    comparison_markdown: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    def to_markdown(self) -> str:
        lines = [
            f"# SPIN run ({self.config['model']}, mode={self.config['mode']}, "
            f"p={self.config['p']}, q={self.config['q']}, targets={self.config['targets']})",
            "",
            f"Coupled entries zeroed: **{self.selection_count}**",
            "",
            "| layer | entries |",
            "|---|---|",
        ]
        lines += [f"| {k} | {v} |" for k, v in self.counts_by_layer.items() if v]
        if self.perplexity_before and self.perplexity_after:
            b, a = self.perplexity_before, self.perplexity_after
            lines += [
                "",
                f"Held-out wiki perplexity ({b['texts']} sentences, {b['tokens']} tokens):"
                f" {b['perplexity']:.3f} -> {a['perplexity']:.3f} "
                f"({100 * (a['perplexity'] / b['perplexity'] - 1):+.2f}%)",
            ]
        if self.comparison_markdown:
            lines += [
                "",
                "## Evaluation: original vs SPIN-edited (paired, same items)",
                "",
                self.comparison_markdown,
            ]
        lines += ["", "Files:"] + [f"- {k}: `{v}`" for k, v in self.paths.items()]
        return "\n".join(lines)


def run_spin(config: SpinConfig, progress: bool = True) -> SpinResult:
    """Score fairness, privacy and general data; select the coupled set; zero it; export."""
    from spin_interp import ablate, data
    from spin_interp.attribution import score_weights
    from spin_interp.export import export_hf
    from spin_interp.models import load_model, model_fingerprint
    from spin_interp.select import select_coupled

    config.validate()
    out = Path(config.out_dir)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"out_dir {out} exists and is not a folder; choose another out_dir")
    if out.exists() and any(out.iterdir()) and not config.overwrite:
        raise FileExistsError(f"{out} is not empty; set overwrite = true or choose another out_dir")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    model = load_model(config.model, dtype=getattr(torch, config.dtype))
    timings["load_model"] = time.perf_counter() - t0
    paths: dict[str, str] = {}
    scores = {}
    for behaviour in ("fairness", "privacy", "general"):
        spec: DatasetSpec = getattr(config, behaviour)
        examples = data.load_behaviour(
            behaviour,
            source=spec.source,
            split=spec.split,
            n=spec.n,
            seed=spec.seed,
            safe=spec.safe,
        )
        t = time.perf_counter()
        s = score_weights(
            model,
            examples,
            method=config.method,
            targets=config.targets,
            keep_fraction=config.keep_fraction,
            format=config.format,
            max_len=config.max_len,
            progress=progress,
        )
        timings[f"score_{behaviour}"] = time.perf_counter() - t
        s.meta["dataset"] = {
            "behaviour": behaviour,
            **asdict(spec),
            "fingerprint": data.dataset_fingerprint(examples),
        }
        paths[f"scores_{behaviour}"] = str(s.save(out / f"scores_{behaviour}.safetensors"))
        scores[behaviour] = s
    sel = select_coupled(
        scores["privacy"],
        scores["fairness"],
        scores["general"],
        p=config.p,
        q=config.q,
        mode=config.mode,
    )
    paths["selection"] = str(sel.save(out / "selection.safetensors"))
    t_eval = time.perf_counter()
    before = wiki_perplexity(model, config.eval_sentences) if config.eval_sentences else None
    report_before = _evaluate(model, config, progress)
    edit = ablate.zero_weights(model, sel)
    paths["edit"] = str(edit.save(out / "edit.safetensors"))
    edit.apply()
    after = wiki_perplexity(model, config.eval_sentences) if config.eval_sentences else None
    comparison = None
    if report_before is not None:
        report_after = _evaluate(model, config, progress)
        paths["eval_before"] = str(report_before.save(out / "eval_before.json"))
        paths["eval_after"] = str(report_after.save(out / "eval_after.json"))
        comparison = report_before.compare(report_after)
        paths["eval_comparison"] = str(comparison.save(out / "eval_comparison.json"))
    timings["evaluate"] = time.perf_counter() - t_eval
    export_dir = None
    if config.export:
        t = time.perf_counter()
        export_dir = str(export_hf(model, out / "model", overwrite=config.overwrite))
        timings["export"] = time.perf_counter() - t
        paths["model"] = export_dir
    timings["total"] = time.perf_counter() - t0
    result = SpinResult(
        out_dir=str(out),
        selection_count=sel.count(),
        counts_by_layer={str(k): v for k, v in sel.counts_by_layer().items()},
        counts_by_module=sel.counts_by_module(),
        perplexity_before=before,
        perplexity_after=after,
        export_dir=export_dir,
        timings=timings,
        config=config.to_dict(),
        model_fingerprint=model_fingerprint(model),
        paths=paths,
    )
    result.comparison_markdown = comparison.to_markdown() if comparison is not None else None
    atomic_write_text(out / "summary.json", result.to_json())
    atomic_write_text(out / "summary.md", result.to_markdown() + "\n")
    result.model = model  # type: ignore[attr-defined]  # the edited model, for callers
    result.edit = edit  # type: ignore[attr-defined]
    return result


def _evaluate(model: Any, config: SpinConfig, progress: bool) -> Any:
    if config.evaluate == "none":
        return None
    from spin_interp.evaluate import evaluate

    return evaluate(model, suite=config.evaluate, seed=config.eval_seed, progress=progress)
