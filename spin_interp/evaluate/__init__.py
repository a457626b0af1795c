"""Evaluate fairness awareness, privacy awareness and general capability of a (edited) model.

>>> import spin_interp as si
>>> from spin_interp import evaluate as ev
>>> model = si.load_model("smollm2-135m-instruct")               # doctest: +SKIP
>>> before = ev.evaluate(model, suite="quick")                    # doctest: +SKIP
>>> with edit.applied():                                          # doctest: +SKIP
...     after = ev.evaluate(model, suite="quick")
>>> print(before.compare(after).to_markdown())                    # doctest: +SKIP

Every number carries its scoring rule, ``n`` and a 95% interval; before/after comparisons are
paired item by item (bootstrap intervals, exact McNemar tests). See ``docs/evaluation.md``.
"""

from spin_interp.evaluate.benchmarks import (
    MCItem,
    MissingLabelsError,
    PairItem,
    load_bbq,
    load_boolq,
    load_crows_pairs,
    load_hellaswag,
    load_mmlu,
    load_openbookqa,
    load_stereoset,
)
from spin_interp.evaluate.judges import (
    Judge,
    Judgement,
    KeywordJudge,
    MDJudge,
    awareness,
    parse_md_judge_output,
)
from spin_interp.evaluate.leak import contains_value, normalise_for_match
from spin_interp.evaluate.report import (
    ComparisonReport,
    ComparisonRow,
    EvalReport,
    MetricResult,
    make_mean,
    make_perplexity,
    make_rate,
)
from spin_interp.evaluate.runner import Runner
from spin_interp.evaluate.scoring import (
    HEADLINE_RULE,
    RULES,
    MCScores,
    pair_logliks,
    score_multiple_choice,
    sentence_logliks,
)
from spin_interp.evaluate.stats import (
    bootstrap_interval,
    mcnemar_exact,
    mcnemar_from_outcomes,
    paired_bootstrap,
    wilson_interval,
)
from spin_interp.evaluate.suite import SIZE_KEYS, SUITES, evaluate
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


def generate(
    model: object,
    prompts: list[str],
    max_new_tokens: int = 64,
    batch_size: int = 8,
    chat: bool = True,
    progress: bool = False,
) -> list[str]:
    """Greedy, deterministic, left-padded batched generation (chat template by default).

    ``model`` is a bridge (its clean HF twin is built once per call) or a :class:`Runner`.
    """
    runner = model if isinstance(model, Runner) else Runner(model)
    return runner.generate(
        prompts,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        chat=chat,
        progress=progress,
    )


__all__ = [
    "HEADLINE_RULE",
    "RULES",
    "SIZE_KEYS",
    "SUITES",
    "ComparisonReport",
    "ComparisonRow",
    "EvalReport",
    "Judge",
    "Judgement",
    "KeywordJudge",
    "MCItem",
    "MCScores",
    "MDJudge",
    "MetricResult",
    "MissingLabelsError",
    "PairItem",
    "Runner",
    "awareness",
    "bbq_metrics",
    "bootstrap_interval",
    "contains_value",
    "evaluate",
    "generate",
    "load_bbq",
    "load_boolq",
    "load_crows_pairs",
    "load_hellaswag",
    "load_mmlu",
    "load_openbookqa",
    "load_stereoset",
    "make_mean",
    "make_perplexity",
    "make_rate",
    "mc_accuracy",
    "mcnemar_exact",
    "mcnemar_from_outcomes",
    "normalise_for_match",
    "open_awareness",
    "pair_logliks",
    "pair_preference",
    "paired_bootstrap",
    "parse_md_judge_output",
    "perplexity",
    "privacy_loglik_preference",
    "privacy_metrics",
    "question_awareness",
    "score_multiple_choice",
    "sentence_logliks",
    "wilson_interval",
]
