"""Read local CSV / JSONL / JSON / parquet tables with line-accurate error messages."""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = ["Row", "TABLE_SUFFIXES", "parse_bool", "parse_mapping", "read_table", "row_error"]

logger = logging.getLogger(__name__)

#: Suffixes :func:`read_table` understands.
TABLE_SUFFIXES: tuple[str, ...] = (".jsonl", ".ndjson", ".json", ".csv", ".parquet", ".pq")


class Row(dict):
    """A table row (a dict) that remembers where it came from, for error messages."""

    path: str = ""
    where: str = ""

    @classmethod
    def at(cls, data: Mapping[str, Any], path: str | Path, where: str) -> Row:
        """Wrap ``data``; ``where`` is e.g. ``"line 7"`` or ``"row 3"``."""
        row = cls(data)
        row.path = str(path)
        row.where = where
        return row


def row_error(row: Row, message: str) -> ValueError:
    """Return a ``ValueError`` naming the file and line of ``row``."""
    return ValueError(f"{row.path}, {row.where}: {message}")


def read_table(path: str | Path) -> list[Row]:
    """Read every row of a local table.

    ``.jsonl`` / ``.ndjson``: one JSON object per line (blank lines are skipped);
    ``.json``: a JSON array of objects, or JSON lines; ``.csv``: a header row then data
    (cells are strings); ``.parquet`` / ``.pq``: read with pandas (needs pandas and pyarrow).
    Malformed input raises ``ValueError`` naming the file and the line (or row).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no such data file: {p}")
    suffix = p.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        rows = list(_read_jsonl(p))
    elif suffix == ".json":
        rows = _read_json(p)
    elif suffix == ".csv":
        rows = list(_read_csv(p))
    elif suffix in (".parquet", ".pq"):
        rows = _read_parquet(p)
    else:
        raise ValueError(
            f"{p}: unsupported file type {suffix!r}; use one of {', '.join(TABLE_SUFFIXES)}"
        )
    logger.info("read %d rows from %s", len(rows), p)
    return rows


def _read_jsonl(p: Path) -> Iterator[Row]:
    with p.open(encoding="utf-8-sig") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{p}, line {lineno}: invalid JSON ({err.msg})") from err
            if not isinstance(obj, dict):
                raise ValueError(
                    f"{p}, line {lineno}: expected a JSON object, got {type(obj).__name__}"
                )
            yield Row.at(obj, p, f"line {lineno}")


def _read_json(p: Path) -> list[Row]:
    text = p.read_text(encoding="utf-8-sig")
    if text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{p}, line {err.lineno}: invalid JSON ({err.msg})") from err
        rows = []
        for i, obj in enumerate(data, start=1):
            if not isinstance(obj, dict):
                raise ValueError(f"{p}, record {i}: expected a JSON object")
            rows.append(Row.at(obj, p, f"record {i}"))
        return rows
    return list(_read_jsonl(p))


def _read_csv(p: Path) -> Iterator[Row]:
    with p.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            raise ValueError(f"{p}, line {reader.line_num}: malformed CSV ({err})") from err
        header = [h.strip() for h in header]
        while True:
            start = reader.line_num + 1
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as err:
                raise ValueError(f"{p}, line {start}: malformed CSV ({err})") from err
            if not cells or all(not c.strip() for c in cells):
                continue
            if len(cells) != len(header):
                raise ValueError(
                    f"{p}, line {start}: expected {len(header)} columns "
                    f"({', '.join(header)}), found {len(cells)}"
                )
            yield Row.at(dict(zip(header, cells, strict=True)), p, f"line {start}")


def _read_parquet(p: Path) -> list[Row]:
    try:
        import pandas as pd
    except ImportError as err:
        raise ImportError(
            f"reading {p} needs pandas and pyarrow: pip install pandas pyarrow "
            "(or convert the file to JSONL / CSV)"
        ) from err
    try:
        frame = pd.read_parquet(p)
    except ImportError as err:
        raise ImportError(f"reading {p} needs pyarrow: pip install pyarrow ({err})") from err
    except Exception as err:  # pyarrow raises several unrelated types for corrupt files
        raise ValueError(f"{p}: could not read parquet file ({err})") from err
    rows = []
    for i, record in enumerate(frame.to_dict(orient="records"), start=1):
        rows.append(Row.at({k: _plain(v) for k, v in record.items()}, p, f"row {i}"))
    return rows


def _plain(value: Any) -> Any:
    """Turn numpy scalars / arrays from pandas into plain Python objects."""
    if hasattr(value, "tolist") and not isinstance(value, str | bytes):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}


def parse_bool(row: Row, column: str) -> bool:
    """Read a boolean cell (JSON bool, 0/1, or a true/false/yes/no string)."""
    value = row.get(column)
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise row_error(row, f"column {column!r} must be a boolean, got {value!r}")


def parse_mapping(row: Row, column: str) -> dict[str, Any]:
    """Read a mapping cell: a JSON object, or a string holding one (as in CSV files)."""
    value = row.get(column)
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as err:
            raise row_error(row, f"column {column!r} is not a JSON object ({err.msg})") from err
        if isinstance(parsed, dict):
            return parsed
    raise row_error(row, f"column {column!r} must be a JSON object, got {value!r}")
