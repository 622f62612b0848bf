"""JSON and CSV outputs: numpy values and NaN handled, written atomically."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from igdbeam.io.atomic_files import atomic_open


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, float) and value != value:  # NaN is not JSON
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def dump_json(fh: IO[str], data: Any) -> None:
    """Write ``data`` as indented JSON to an open text file (numpy values and NaN handled)."""
    json.dump(_jsonable(data), fh, indent=2)
    fh.write("\n")


def dump_csv(
    fh: IO[str], rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None
) -> None:
    """Write dict rows as CSV to an open text file (opened with ``newline=""``)."""
    if columns is None:
        cols: list[str] = []
        for r in rows:
            cols.extend(k for k in r if k not in cols)
        columns = cols
    writer = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: _jsonable(v) for k, v in r.items()})


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """Write ``data`` as indented JSON atomically (numpy values and NaN handled)."""
    with atomic_open(path, "w", encoding="utf-8") as fh:
        dump_json(fh, data)
    return Path(path)


def write_csv(
    path: str | os.PathLike[str],
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str] | None = None,
) -> Path:
    """Write dict rows as CSV atomically; ``columns`` defaults to the keys in first-seen order."""
    with atomic_open(path, "w", encoding="utf-8", newline="") as fh:
        dump_csv(fh, rows, columns)
    return Path(path)
