"""Read and write the CSV format of the public BIGRec / D3 / IGD code.

A split is a CSV file with at least the columns ``user_id, history_item_title, item_title,
history_item_id, item_id`` (extra columns such as ``timestamp`` are kept as strings). The two
history columns hold Python list literals, as the reference code writes them (it reads them with
``eval``; we use :func:`ast.literal_eval`). The catalog is an item info file of ``title\\tid``
lines. Catalog *positions* (0 .. N-1, the line order of the info file) are the item ids of the
:class:`~igdbeam.ItemTrie`; the ids in the files may be any integers.

Files are read as UTF-8 with an optional byte-order mark (``utf-8-sig``: Excel's "CSV UTF-8" and
Windows editors write one), so the mark never sticks to the first title or column name.
"""

from __future__ import annotations

import ast
import csv
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from igdbeam.io import atomic_dir

REQUIRED_COLUMNS = ("user_id", "history_item_title", "item_title", "history_item_id", "item_id")
SPLITS = ("train", "valid", "test")


class DataFormatError(ValueError):
    """A data file is missing, has the wrong columns or holds a value that cannot be parsed."""


@dataclass(frozen=True)
class Catalog:
    """The item catalog: ``titles[k]`` and ``ids[k]`` describe catalog position ``k``.

    Catalog positions are the item ids of the trie built from ``titles``.
    """

    titles: list[str]
    ids: list[int]
    _position: dict[int, int] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.titles) != len(self.ids):
            raise DataFormatError(f"{len(self.titles)} titles for {len(self.ids)} item ids")
        seen: dict[int, int] = {}
        for k, item in enumerate(self.ids):
            if item in seen:
                raise DataFormatError(f"item id {item} appears twice in the catalog")
            seen[item] = k
        self._position.update(seen)

    def __len__(self) -> int:
        return len(self.titles)

    def position(self, item_id: int) -> int:
        """Return the catalog position (trie item id) of a file item id.

        Raises:
            DataFormatError: the id is not in the catalog.
        """
        try:
            return self._position[int(item_id)]
        except KeyError:
            raise DataFormatError(f"item id {item_id} is not in the item info file") from None


@dataclass(frozen=True)
class Sample:
    """One row of a split: a user's history (oldest first) and the next item."""

    user_id: str
    history_item_title: list[str]
    item_title: str
    history_item_id: list[int]
    item_id: int
    extra: dict[str, str] = field(default_factory=dict)


def _check_file(path: str | os.PathLike[str], what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise DataFormatError(f"{what} {str(p)!r} does not exist")
    if not p.is_file():
        raise DataFormatError(f"{what} {str(p)!r} is not a file")
    return p


def _clean_title(title: str) -> str:
    """Make a title safe for one tab-separated line: collapse whitespace, tabs and newlines."""
    return " ".join(str(title).split())


@contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Turn a decoding or CSV-syntax error while reading ``path`` into a DataFormatError."""
    try:
        yield
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except csv.Error as exc:
        raise DataFormatError(f"{path}: malformed CSV: {exc}") from None


def _as_int(value: object) -> int:
    """An id: a Python int (not a bool) or a decimal integer string; anything else raises."""
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        return int(value.strip())
    raise ValueError(value)


def read_item_info(path: str | os.PathLike[str]) -> Catalog:
    """Read an item info file of ``title\\tid`` lines (the id is the last tab-separated field).

    Raises:
        DataFormatError: missing file, an empty file, a line without a tab, a non-integer or
            duplicate id, or an empty title (the message names the line).
    """
    p = _check_file(path, "item info file")
    titles: list[str] = []
    ids: list[int] = []
    with _reading(p), p.open(encoding="utf-8-sig") as fh:
        for lineno, line in enumerate(fh, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            title, sep, raw_id = line.rpartition("\t")
            if not sep:
                raise DataFormatError(f"{p}:{lineno}: expected 'title<TAB>id', got {line[:80]!r}")
            if not title.strip():
                raise DataFormatError(f"{p}:{lineno}: empty title")
            try:
                ids.append(_as_int(raw_id))
            except ValueError:
                raise DataFormatError(
                    f"{p}:{lineno}: item id {raw_id!r} is not an integer"
                ) from None
            titles.append(title)
    if not titles:
        raise DataFormatError(f"item info file {str(p)!r} has no items")
    try:
        return Catalog(titles, ids)
    except DataFormatError as exc:
        raise DataFormatError(f"{p}: {exc}") from None


def _parse_list(value: str, where: str, column: str) -> list:
    try:
        # The writer emits JSON lists (also valid Python, so the reference code's eval reads
        # them); files from the reference code use Python quoting and need literal_eval.
        parsed = json.loads(value) if value.strip() else []
    except (ValueError, RecursionError):
        parsed = None
    try:
        if parsed is None:
            parsed = ast.literal_eval(value)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise DataFormatError(
            f"{where}, column {column!r} is not a list literal: {value[:80]!r}"
        ) from None
    if isinstance(parsed, tuple):
        parsed = list(parsed)
    if not isinstance(parsed, list):
        raise DataFormatError(f"{where}, column {column!r} is not a list: {value[:80]!r}")
    return parsed


def read_samples(
    path: str | os.PathLike[str],
    *,
    allow_empty_history: bool = False,
    limit: int | None = None,
) -> list[Sample]:
    """Read one split CSV of the BIGRec format.

    Args:
        path: the CSV file.
        allow_empty_history: keep rows whose history is empty instead of raising.
        limit: read at most this many rows.

    Raises:
        DataFormatError: missing file, missing columns (all named), unparsable lists, histories
            whose title and id lists differ in length, non-integer ids or empty histories.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be None or an integer >= 0, got {limit!r}")
    p = _check_file(path, "split file")
    samples: list[Sample] = []
    with _reading(p), p.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise DataFormatError(
                f"{p}: missing column(s) {', '.join(missing)}; found {', '.join(header) or 'none'}."
                f" A BIGRec split needs {', '.join(REQUIRED_COLUMNS)}"
            )
        for rowno, row in enumerate(reader, start=1):
            if limit is not None and len(samples) >= limit:
                break
            where = f"{p}:{reader.line_num}: row {rowno}"
            if None in row:  # DictReader keeps the surplus fields of a long row under None
                raise DataFormatError(
                    f"{where}: {len(header) + len(row[None])} fields but the header has "
                    f"{len(header)}"
                )
            short = [c for c in header if row[c] is None]
            if short:
                raise DataFormatError(
                    f"{where}: {len(header) - len(short)} fields but the header has "
                    f"{len(header)} (no value for column(s) {', '.join(short)})"
                )
            titles = _parse_list(row["history_item_title"], where, "history_item_title")
            raw_ids = _parse_list(row["history_item_id"], where, "history_item_id")
            if len(titles) != len(raw_ids):
                raise DataFormatError(
                    f"{where}: {len(titles)} history titles but {len(raw_ids)} history ids"
                )
            if not titles and not allow_empty_history:
                raise DataFormatError(
                    f"{where}: user {row['user_id']!r} has an empty history; a recommender "
                    "needs at least one past item (drop the row or pass allow_empty_history)"
                )
            for k, t in enumerate(titles):
                if not isinstance(t, str):
                    raise DataFormatError(
                        f"{where}, column 'history_item_title': element {k} is {t!r}, not a "
                        "title string"
                    )
            hist_ids = []
            for k, x in enumerate(raw_ids):
                try:
                    hist_ids.append(_as_int(x))
                except ValueError:
                    raise DataFormatError(
                        f"{where}, column 'history_item_id': element {k} is {x!r}, not an "
                        "integer item id"
                    ) from None
            try:
                item_id = _as_int(row["item_id"])
            except ValueError:
                raise DataFormatError(
                    f"{where}, column 'item_id': {row['item_id'][:80]!r} is not an integer item id"
                ) from None
            extra = {k: v for k, v in row.items() if k not in REQUIRED_COLUMNS}
            samples.append(
                Sample(
                    user_id=str(row["user_id"]),
                    history_item_title=list(titles),
                    item_title=str(row["item_title"]),
                    history_item_id=hist_ids,
                    item_id=item_id,
                    extra=extra,
                )
            )
    return samples


@dataclass
class Dataset:
    """A catalog plus its train / valid / test splits."""

    catalog: Catalog
    splits: dict[str, list[Sample]]
    directory: Path | None = None

    def split(self, name: str) -> list[Sample]:
        """Return one split by name, with a clear error for a split that was not loaded."""
        if name not in self.splits:
            raise DataFormatError(f"split {name!r} is not loaded; have {sorted(self.splits)}")
        return self.splits[name]


def load_dataset(
    directory: str | os.PathLike[str],
    splits: Sequence[str] = SPLITS,
    *,
    info_name: str = "info.txt",
    check_ids: bool = True,
) -> Dataset:
    """Load ``<directory>/{info.txt,train.csv,valid.csv,test.csv}`` (as :func:`write_dataset`).

    With ``check_ids`` every target and history id must be in the item info file.
    """
    d = Path(directory)
    if not d.is_dir():
        raise DataFormatError(f"data directory {str(d)!r} does not exist")
    catalog = read_item_info(d / info_name)
    loaded = {name: read_samples(d / f"{name}.csv") for name in splits}
    if check_ids:
        for name, rows in loaded.items():
            for r, s in enumerate(rows):
                try:
                    catalog.position(s.item_id)
                    for h in s.history_item_id:
                        catalog.position(h)
                except DataFormatError as exc:
                    raise DataFormatError(f"{d / (name + '.csv')} row {r + 1}: {exc}") from None
    return Dataset(catalog, loaded, d)


def read_target_ids(path: str | os.PathLike[str]) -> list[int]:
    """Read only the ``item_id`` column of a split (fast: no history parsing).

    Raises:
        DataFormatError: missing file or column, or a non-integer id.
    """
    p = _check_file(path, "split file")
    with _reading(p), p.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, [])
        if "item_id" not in header:
            raise DataFormatError(
                f"{p}: missing column item_id; found {', '.join(header) or 'none'}"
            )
        k = header.index("item_id")
        ids = []
        for rowno, row in enumerate(reader, start=1):
            if not row:
                continue
            try:
                ids.append(_as_int(row[k]))
            except (ValueError, IndexError):
                value = repr(row[k][:80]) if k < len(row) else "missing"
                raise DataFormatError(
                    f"{p}:{reader.line_num}: row {rowno}, column 'item_id': {value} is not an "
                    "integer item id"
                ) from None
        return ids


def target_positions(dataset: Dataset, samples: Sequence[Sample]) -> np.ndarray:
    """Catalog positions (trie item ids) of the samples' targets, as ``int64``.

    Raises:
        DataFormatError: a target id that is not in the catalog.
    """
    return np.asarray([dataset.catalog.position(s.item_id) for s in samples], dtype=np.int64)


def _write_split(path: Path, samples: Iterable[Sample]) -> int:
    rows = list(samples)
    extra_cols: list[str] = []
    for s in rows:
        for k in s.extra:
            if k not in extra_cols:
                extra_cols.append(k)
    n = 0
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(list(REQUIRED_COLUMNS) + extra_cols)
        for s in rows:
            if not s.history_item_title:
                raise DataFormatError(f"user {s.user_id!r}: refusing to write an empty history")
            writer.writerow(
                [
                    s.user_id,
                    json.dumps(list(s.history_item_title), ensure_ascii=False),
                    s.item_title,
                    json.dumps([int(x) for x in s.history_item_id]),
                    s.item_id,
                ]
                + [s.extra.get(k, "") for k in extra_cols]
            )
            n += 1
    return n


def write_item_info(path: str | os.PathLike[str], catalog: Catalog) -> None:
    """Write ``title\\tid`` lines (titles are whitespace-normalised so one line stays one item)."""
    with Path(path).open("w", encoding="utf-8") as fh:
        for title, item in zip(catalog.titles, catalog.ids, strict=True):
            fh.write(f"{_clean_title(title)}\t{item}\n")


def write_dataset(
    directory: str | os.PathLike[str],
    catalog: Catalog,
    splits: Mapping[str, Sequence[Sample]],
    *,
    overwrite: bool = False,
    command: str = "prepare",
) -> Path:
    """Write ``info.txt`` and one CSV per split atomically: into a unique temp folder next to
    ``directory``, fsynced, then renamed into place (:func:`igdbeam.io.atomic_dir`).

    The folder gets the igdbeam output marker of ``command``. Nothing is left half-written when
    an error occurs: the temp folder is removed, and an existing ``directory`` is replaced (with
    ``overwrite``) only once everything was written, and only if it is empty or an earlier
    output of ``command``: a folder of the user's or a file is never replaced.

    Raises:
        FileExistsError: (:class:`igdbeam.io.OutputPathError`) the target exists and
            ``overwrite`` is False, or it is a file or a folder igdbeam did not write.
        DataFormatError: a sample with an empty history.
    """
    target = Path(directory)
    with atomic_dir(target, command=command, overwrite=overwrite) as tmp:
        write_item_info(tmp / "info.txt", catalog)
        for name, rows in splits.items():
            _write_split(tmp / f"{name}.csv", rows)
    return target
