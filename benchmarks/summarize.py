"""Collect ``benchmarks/results/*.json`` (and ``results/quick/*.json``) into
``benchmarks/RESULTS.md``: one table per benchmark with the machine and thread count.

Run by ``make bench`` after the benchmark scripts; it only reads their JSON.
"""

from __future__ import annotations

import json
import os
import platform
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def table(rows: list[dict], keys: list[str] | None = None) -> list[str]:
    if not rows:
        return ["(no rows)"]
    keys = keys or [k for k in rows[0] if not isinstance(rows[0][k], (dict, list))]
    out = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    out += ["| " + " | ".join(_fmt(r.get(k, "")) for k in keys) + " |" for r in rows]
    return out


def extrapolate(row: dict, n: int = 128) -> dict:
    """Linear extrapolation of measured scoring times to ``n`` examples per dataset (both the
    one-pass scorer and the per-layer baseline are linear in the number of examples)."""
    row = dict(row)
    k = n / row["examples"]
    row[f"snip_s_at_{n}"] = row["t_snip_s"] * k
    row[f"per_layer_s_at_{n}"] = row["t_per_layer_s"] * k
    return row


def section(path: Path) -> list[str]:
    d = json.loads(path.read_text())
    threads = d.get("threads", d.get("threads_per_process", "?"))
    lines = [f"### {path.stem} (`{path.relative_to(HERE)}`, threads: {threads})", ""]
    rows = d.get("rows") or d.get("runs") or d.get("results")
    if path.stem == "bench_scoring" and isinstance(rows, list):
        rows = [extrapolate(r) for r in rows]
    if isinstance(rows, list) and rows and isinstance(rows[0], dict):
        lines += table(rows)
    else:
        flat = {k: v for k, v in d.items() if not isinstance(v, (dict, list))}
        lines += table([flat])
    return lines + [""]


def main() -> None:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Benchmark results",
        "",
        f"Collected {stamp} on {platform.machine()}, {os.cpu_count()} cores "
        f"(Python {platform.python_version()}). Full-size runs first, then the quick runs "
        "of `make bench`. Each benchmark's JSON has every number; times are wall-clock on "
        "shared cores, so compare the ratios measured side by side within one run.",
        "",
    ]
    for sub in ("", "quick"):
        files = sorted((HERE / "results" / sub).glob("bench_*.json"))
        if files:
            lines += [f"## {'full sizes' if not sub else 'quick (make bench)'}", ""]
            for f in files:
                lines += section(f)
    (HERE / "RESULTS.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
