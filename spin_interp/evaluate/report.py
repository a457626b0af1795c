"""Evaluation results: :class:`MetricResult`, :class:`EvalReport` and :class:`ComparisonReport`.

A metric keeps its per-item outcomes (``item_ids`` and ``values``, plus ``weights`` for
token-weighted perplexity), so two reports of the same items can be compared pairwise: a paired
bootstrap interval of the difference for every metric, and an exact McNemar test with its
discordant counts for binary rates. Reports are JSON files, written atomically.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spin_interp._io import atomic_write_text as _atomic_write_text
from spin_interp.evaluate import stats

__all__ = [
    "ComparisonReport",
    "ComparisonRow",
    "EvalReport",
    "MetricResult",
    "make_mean",
    "make_perplexity",
    "make_rate",
]

KINDS = ("rate", "mean", "perplexity")
BETTER = ("higher", "lower", "closer")
REPORT_KIND = "spin_interp.eval_report"
COMPARISON_KIND = "spin_interp.eval_comparison"
FORMAT_VERSION = 1


@dataclass
class MetricResult:
    """One number with its sample size, interval, scoring rule and per-item outcomes.

    ``kind``: ``rate`` (binary outcomes, Wilson interval), ``mean`` (real outcomes, bootstrap
    interval) or ``perplexity`` (per-item mean NLL weighted by token count, ``exp`` of the
    weighted mean; bootstrap interval). ``better``: ``higher``, ``lower`` or ``closer`` (to
    ``ideal``). ``details`` optionally keeps per-item text (e.g. the generation) for auditing.
    """

    name: str
    group: str
    rule: str
    kind: str
    value: float
    n: int
    interval: tuple[float, float] | None
    interval_method: str
    item_ids: list[str]
    values: list[float]
    weights: list[float] | None = None
    headline: bool = False
    better: str = "higher"
    ideal: float | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    details: list[dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"metric kind must be one of {KINDS}, got {self.kind!r}")
        if self.better not in BETTER:
            raise ValueError(f"better must be one of {BETTER}, got {self.better!r}")
        if len(self.item_ids) != len(self.values):
            raise ValueError(f"{self.key}: {len(self.item_ids)} ids but {len(self.values)} values")
        if len(set(self.item_ids)) != len(self.item_ids):
            raise ValueError(f"{self.key}: item ids are not unique (pairing needs unique ids)")
        if self.weights is not None and len(self.weights) != len(self.values):
            raise ValueError(f"{self.key}: weights and values differ in length")
        if self.interval is not None:
            self.interval = (float(self.interval[0]), float(self.interval[1]))

    @property
    def key(self) -> str:
        """``name[rule]``: unique within a report, used to pair metrics across reports."""
        return f"{self.name}[{self.rule}]"

    @property
    def transform(self) -> str:
        return "exp" if self.kind == "perplexity" else "identity"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["interval"] = list(self.interval) if self.interval is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MetricResult:
        d = dict(d)
        if d.get("interval") is not None:
            d["interval"] = tuple(d["interval"])
        return cls(**d)


def _check_ids(item_ids: Sequence[str], n: int, name: str) -> list[str]:
    ids = [str(i) for i in item_ids]
    if len(ids) != n:
        raise ValueError(f"{name}: {len(ids)} item ids for {n} outcomes")
    if n == 0:
        raise ValueError(f"{name}: no items (an empty item list has no rate)")
    return ids


def make_rate(
    name: str,
    group: str,
    rule: str,
    item_ids: Sequence[str],
    outcomes: Sequence[int | bool | float],
    **kw: Any,
) -> MetricResult:
    """A binary rate with its Wilson 95% interval."""
    ids = _check_ids(item_ids, len(outcomes), name)
    vals = [float(x) for x in outcomes]
    if any(v not in (0.0, 1.0) for v in vals):
        raise ValueError(f"{name}: a rate needs 0/1 outcomes")
    k = int(sum(vals))
    return MetricResult(
        name=name,
        group=group,
        rule=rule,
        kind="rate",
        value=k / len(vals),
        n=len(vals),
        interval=stats.wilson_interval(k, len(vals)),
        interval_method="wilson95",
        item_ids=ids,
        values=vals,
        **kw,
    )


def make_mean(
    name: str,
    group: str,
    rule: str,
    item_ids: Sequence[str],
    values: Sequence[float],
    seed: int = 0,
    n_boot: int = 2000,
    **kw: Any,
) -> MetricResult:
    """A mean of per-item values with a seeded percentile-bootstrap 95% interval."""
    ids = _check_ids(item_ids, len(values), name)
    vals = [float(x) for x in values]
    return MetricResult(
        name=name,
        group=group,
        rule=rule,
        kind="mean",
        value=stats.statistic(vals),
        n=len(vals),
        interval=stats.bootstrap_interval(vals, n_boot=n_boot, seed=seed),
        interval_method=f"bootstrap95(n_boot={n_boot}, seed={seed})",
        item_ids=ids,
        values=vals,
        **kw,
    )


def make_perplexity(
    name: str,
    group: str,
    rule: str,
    item_ids: Sequence[str],
    nll_sums: Sequence[float],
    n_tokens: Sequence[int],
    seed: int = 0,
    n_boot: int = 2000,
    **kw: Any,
) -> MetricResult:
    """Token-weighted perplexity ``exp(sum NLL / sum tokens)`` with a bootstrap interval over
    items (texts)."""
    ids = _check_ids(item_ids, len(nll_sums), name)
    if len(n_tokens) != len(nll_sums) or any(int(t) < 1 for t in n_tokens):
        raise ValueError(f"{name}: every text needs at least one scored token")
    w = [float(t) for t in n_tokens]
    vals = [float(s) / t for s, t in zip(nll_sums, w, strict=True)]
    return MetricResult(
        name=name,
        group=group,
        rule=rule,
        kind="perplexity",
        value=stats.statistic(vals, w, "exp"),
        n=len(vals),
        interval=stats.bootstrap_interval(vals, w, "exp", n_boot=n_boot, seed=seed),
        interval_method=f"bootstrap95(n_boot={n_boot}, seed={seed})",
        item_ids=ids,
        values=vals,
        weights=w,
        extra={"tokens": int(sum(w))},
        **kw,
    )


def _fmt(m_kind: str, v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if m_kind == "rate":
        return f"{100 * v:.1f}%"
    if m_kind == "perplexity":
        return f"{v:.2f}"
    return f"{v:+.3f}"


def _fmt_ci(kind: str, ci: tuple[float, float] | None) -> str:
    if ci is None:
        return "–"
    if kind == "rate":
        return f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"
    if kind == "perplexity":
        return f"[{ci[0]:.2f}, {ci[1]:.2f}]"
    return f"[{ci[0]:+.3f}, {ci[1]:+.3f}]"


def _fmt_diff(kind: str, v: float) -> str:
    if kind == "rate":
        return f"{100 * v:+.1f} pts"
    if kind == "perplexity":
        return f"{v:+.3f}"
    return f"{v:+.3f}"


def _fmt_diff_ci(kind: str, ci: tuple[float, float]) -> str:
    if kind == "rate":
        return f"[{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]"
    return f"[{ci[0]:+.3f}, {ci[1]:+.3f}]"


def _target(m: MetricResult) -> str:
    if m.better == "closer":
        return f"→ {_fmt(m.kind, m.ideal)}" if m.ideal is not None else "→ ideal"
    return "↑" if m.better == "higher" else "↓"


def _read_json(path: str | os.PathLike, kind: str) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no {kind} file at {p}")
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{p} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("kind") != kind:
        raise ValueError(f"{p} is not a {kind} file (kind={doc.get('kind')!r})")
    if doc.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{p} has format version {doc.get('format_version')}, this library reads "
            f"{FORMAT_VERSION}"
        )
    return doc


GROUPS = ("fairness", "privacy", "general")


@dataclass
class EvalReport:
    """All metrics of one evaluation run, with what is needed to reproduce and pair it."""

    metrics: list[MetricResult]
    model: str = ""
    model_fingerprint: str | None = None
    suite: str = ""
    seed: int = 0
    sizes: dict[str, int | None] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    elapsed_s: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    created: str = field(
        default_factory=lambda: _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    )
    library_version: str = ""

    def __post_init__(self) -> None:
        keys = [m.key for m in self.metrics]
        dup = {k for k in keys if keys.count(k) > 1}
        if dup:
            raise ValueError(f"duplicate metrics in a report: {sorted(dup)}")

    # ------------------------------------------------------------------ access

    def metric(self, name: str, rule: str | None = None) -> MetricResult:
        """The metric ``name`` (under ``rule``; without it, the headline or only one)."""
        found = [m for m in self.metrics if m.name == name and (rule is None or m.rule == rule)]
        if rule is None and len(found) > 1:
            heads = [m for m in found if m.headline]
            found = heads or found
        if len(found) != 1:
            have = sorted({m.key for m in self.metrics})
            raise KeyError(
                f"no unique metric {name!r}"
                + (f" with rule {rule!r}" if rule else "")
                + f"; the report has: {have}"
            )
        return found[0]

    def headline(self) -> list[MetricResult]:
        """The metrics marked as headline (one rule per quantity)."""
        return [m for m in self.metrics if m.headline]

    def summary(self) -> dict[str, float]:
        """``{key: value}`` for every metric."""
        return {m.key: m.value for m in self.metrics}

    # ------------------------------------------------------------------ (de)serialisation

    def to_dict(self) -> dict[str, Any]:
        d = {
            "kind": REPORT_KIND,
            "format_version": FORMAT_VERSION,
        }
        for k, v in asdict(self).items():
            if k != "metrics":
                d[k] = v
        d["metrics"] = [m.to_dict() for m in self.metrics]
        return d

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EvalReport:
        d = {k: v for k, v in d.items() if k not in ("kind", "format_version")}
        d["metrics"] = [MetricResult.from_dict(m) for m in d.get("metrics", [])]
        return cls(**d)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the report as JSON (temporary file, then ``os.replace``)."""
        return _atomic_write_text(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike) -> EvalReport:
        """Read a report written by :meth:`save`."""
        return cls.from_dict(_read_json(path, REPORT_KIND))

    # ------------------------------------------------------------------ presentation

    def to_markdown(self) -> str:
        """Tables per behaviour: value, 95% interval, n and the scoring rule of every metric."""
        lines = [f"## Evaluation: {self.model or 'model'} (suite {self.suite!r}, seed {self.seed})"]
        if self.model_fingerprint:
            lines.append(f"model fingerprint `{self.model_fingerprint}`; {self.elapsed_s:.0f} s")
        for note in self.notes:
            lines.append(f"> {note}")
        for group in GROUPS + tuple(sorted({m.group for m in self.metrics} - set(GROUPS))):
            ms = [m for m in self.metrics if m.group == group]
            if not ms:
                continue
            lines += ["", f"### {group}", ""]
            lines.append("| | metric | rule | value | 95% CI | n | target | note |")
            lines.append("|---|---|---|---|---|---|---|---|")
            for m in ms:
                note = m.note
                if "unparsable" in m.extra:
                    note = (note + "; " if note else "") + f"unparsable {m.extra['unparsable']}"
                lines.append(
                    f"| {'★' if m.headline else ''} | {m.name} | {m.rule} | {_fmt(m.kind, m.value)}"
                    f" | {_fmt_ci(m.kind, m.interval)} | {m.n} | {_target(m)} | {note} |"
                )
        if self.skipped:
            lines += ["", "Skipped: " + "; ".join(f"{k} ({v})" for k, v in self.skipped.items())]
        lines.append("")
        lines.append(
            "★ headline rule. Rates: Wilson 95% intervals; means and perplexity: "
            "percentile bootstrap over items."
        )
        return "\n".join(lines) + "\n"

    # ------------------------------------------------------------------ pairing

    def compare(self, other: EvalReport, n_boot: int = 2000, seed: int = 0) -> ComparisonReport:
        """Pair ``self`` (before) with ``other`` (after) metric by metric, item by item."""
        return compare_reports(self, other, n_boot=n_boot, seed=seed)


@dataclass
class ComparisonRow:
    """One metric before and after, on the items both reports scored."""

    key: str
    name: str
    group: str
    rule: str
    kind: str
    headline: bool
    better: str
    ideal: float | None
    n_before: int
    n_after: int
    n_paired: int
    before: float
    after: float
    difference: float
    interval: tuple[float, float]
    mcnemar_b: int | None = None
    mcnemar_c: int | None = None
    mcnemar_p: float | None = None
    note: str = ""


@dataclass
class ComparisonReport:
    """Paired before/after differences for every metric the two reports share."""

    rows: list[ComparisonRow]
    before_model: str = ""
    after_model: str = ""
    before_fingerprint: str | None = None
    after_fingerprint: str | None = None
    only_before: list[str] = field(default_factory=list)
    only_after: list[str] = field(default_factory=list)
    n_boot: int = 2000
    seed: int = 0

    def row(self, name: str, rule: str | None = None) -> ComparisonRow:
        found = [r for r in self.rows if r.name == name and (rule is None or r.rule == rule)]
        if rule is None and len(found) > 1:
            found = [r for r in found if r.headline] or found
        if len(found) != 1:
            raise KeyError(f"no unique comparison row {name!r}; have {[r.key for r in self.rows]}")
        return found[0]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["kind"] = COMPARISON_KIND
        d["format_version"] = FORMAT_VERSION
        return d

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def save(self, path: str | os.PathLike) -> Path:
        return _atomic_write_text(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike) -> ComparisonReport:
        d = _read_json(path, COMPARISON_KIND)
        d = {k: v for k, v in d.items() if k not in ("kind", "format_version")}
        rows = []
        for r in d.pop("rows"):
            r["interval"] = tuple(r["interval"])
            rows.append(ComparisonRow(**r))
        return cls(rows=rows, **d)

    def to_markdown(self) -> str:
        """A before/after table: paired difference, its bootstrap CI, McNemar p and counts."""
        lines = [
            f"## Before / after: {self.before_model or 'before'} → {self.after_model or 'after'}",
            "",
            "| | metric | rule | before | after | Δ (after−before) | 95% CI (paired bootstrap) "
            "| n paired (before/after) | McNemar p (b: 1→0, c: 0→1) | target | note |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            mc = (
                f"{r.mcnemar_p:.3g} (b={r.mcnemar_b}, c={r.mcnemar_c})"
                if r.mcnemar_p is not None
                else "–"
            )
            tgt = (
                f"→ {_fmt(r.kind, r.ideal)}"
                if r.better == "closer" and r.ideal is not None
                else ("↑" if r.better == "higher" else "↓" if r.better == "lower" else "→ ideal")
            )
            lines.append(
                f"| {'★' if r.headline else ''} | {r.name} | {r.rule} | {_fmt(r.kind, r.before)} | "
                f"{_fmt(r.kind, r.after)} | {_fmt_diff(r.kind, r.difference)} | "
                f"{_fmt_diff_ci(r.kind, r.interval)} | {r.n_paired} ({r.n_before}/{r.n_after}) | "
                f"{mc} | {tgt} | {r.note} |"
            )
        if self.only_before or self.only_after:
            lines.append("")
            if self.only_before:
                lines.append("Only in before: " + ", ".join(self.only_before))
            if self.only_after:
                lines.append("Only in after: " + ", ".join(self.only_after))
        lines += [
            "",
            f"Differences are computed on the items both runs scored (n paired); intervals are "
            f"percentile bootstrap over those items ({self.n_boot} resamples, seed {self.seed}); "
            "McNemar: exact two-sided binomial test on the discordant items.",
        ]
        return "\n".join(lines) + "\n"


def compare_reports(
    before: EvalReport, after: EvalReport, n_boot: int = 2000, seed: int = 0
) -> ComparisonReport:
    """See :meth:`EvalReport.compare`."""
    b_by = {m.key: m for m in before.metrics}
    a_by = {m.key: m for m in after.metrics}
    rows = []
    for key, mb in b_by.items():
        ma = a_by.get(key)
        if ma is None:
            continue
        if ma.kind != mb.kind:
            raise ValueError(f"{key}: kind {mb.kind!r} before but {ma.kind!r} after")
        ia = {i: k for k, i in enumerate(ma.item_ids)}
        common = [i for i in mb.item_ids if i in ia]
        ib = {i: k for k, i in enumerate(mb.item_ids)}
        if not common:
            rows.append(
                ComparisonRow(
                    key,
                    mb.name,
                    mb.group,
                    mb.rule,
                    mb.kind,
                    mb.headline,
                    mb.better,
                    mb.ideal,
                    mb.n,
                    ma.n,
                    0,
                    mb.value,
                    ma.value,
                    ma.value - mb.value,
                    (float("nan"), float("nan")),
                    note="no common items: not paired",
                )
            )
            continue
        vb = np.array([mb.values[ib[i]] for i in common])
        va = np.array([ma.values[ia[i]] for i in common])
        wb = wa = None
        if mb.weights is not None and ma.weights is not None:
            wb = np.array([mb.weights[ib[i]] for i in common])
            wa = np.array([ma.weights[ia[i]] for i in common])
        pd = stats.paired_bootstrap(
            vb, va, wb, wa, transform=mb.transform, n_boot=n_boot, seed=seed
        )
        row = ComparisonRow(
            key,
            mb.name,
            mb.group,
            mb.rule,
            mb.kind,
            mb.headline,
            mb.better,
            mb.ideal,
            mb.n,
            ma.n,
            len(common),
            pd.before,
            pd.after,
            pd.difference,
            pd.interval,
        )
        if mb.kind == "rate":
            mc = stats.mcnemar_from_outcomes(vb, va)
            row.mcnemar_b, row.mcnemar_c, row.mcnemar_p = mc.b, mc.c, mc.p_value
        notes = []
        if len(common) < max(mb.n, ma.n):
            notes.append(f"{max(mb.n, ma.n) - len(common)} unpaired items left out")
        if mb.better == "closer" and mb.ideal is not None:
            moved = abs(pd.after - mb.ideal) - abs(pd.before - mb.ideal)
            notes.append(f"distance to ideal {'+' if moved >= 0 else ''}{moved:.3f}")
        row.note = "; ".join(notes)
        rows.append(row)
    return ComparisonReport(
        rows=rows,
        before_model=before.model,
        after_model=after.model,
        before_fingerprint=before.model_fingerprint,
        after_fingerprint=after.model_fingerprint,
        only_before=sorted(set(b_by) - set(a_by)),
        only_after=sorted(set(a_by) - set(b_by)),
        n_boot=n_boot,
        seed=seed,
    )
