"""BIGRec CSV loader / writer and the MovieLens builder."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

from factories.data import TITLES, write_tiny_data
from igdbeam.data import (
    Catalog,
    DataFormatError,
    Sample,
    build_movielens,
    load_dataset,
    read_item_info,
    read_samples,
    split_by_time,
    write_dataset,
)
from igdbeam.data.movielens import make_samples


def test_round_trip(tmp_path: Path) -> None:
    d = write_tiny_data(tmp_path / "d")
    ds = load_dataset(d)
    assert ds.catalog.titles == TITLES
    assert ds.catalog.position(103) == 3
    s = ds.split("test")[0]
    assert s.user_id == "u0"
    assert len(s.history_item_title) == 3 and len(s.history_item_id) == 3
    # The history column is a JSON list, which the reference code's eval() reads as well.
    import ast
    import csv

    with (d / "test.csv").open() as fh:
        row = next(csv.DictReader(fh))
    assert ast.literal_eval(row["history_item_title"]) == s.history_item_title
    assert sorted(p.name for p in d.iterdir()) == [
        ".igdbeam-output",  # the marker: an igdbeam output that --overwrite may replace
        "info.txt",
        "test.csv",
        "train.csv",
        "valid.csv",
    ]
    assert json.loads((d / ".igdbeam-output").read_text())["command"] == "prepare"
    mask = os.umask(0)
    os.umask(mask)
    assert d.stat().st_mode & 0o777 == 0o777 & ~mask


def test_reference_style_csv(tmp_path: Path) -> None:
    """A file as the public code writes it, with extra columns and quoting."""
    (tmp_path / "train.csv").write_text(
        "user_id,history_item_id,history_item_title,item_id,item_title,timestamp\n"
        '7,"[1, 2]","[\'A, the movie\', ""Bob\'s""]",3,C,123\n'
    )
    (rows,) = read_samples(tmp_path / "train.csv")
    assert rows.history_item_title == ["A, the movie", "Bob's"]
    assert rows.history_item_id == [1, 2]
    assert rows.item_id == 3 and rows.extra == {"timestamp": "123"}


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="does not exist"):
        read_samples(tmp_path / "nope.csv")
    with pytest.raises(DataFormatError, match="does not exist"):
        load_dataset(tmp_path / "nodir")


def test_wrong_columns_named(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("user_id,item_title,item_id\n1,A,2\n")
    with pytest.raises(
        DataFormatError, match="missing column\\(s\\) history_item_title, history_item_id"
    ):
        read_samples(tmp_path / "t.csv")


def test_empty_history(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text(
        "user_id,history_item_title,item_title,history_item_id,item_id\n9,[],A,[],2\n"
    )
    with pytest.raises(DataFormatError, match="user '9' has an empty history"):
        read_samples(tmp_path / "t.csv")
    assert len(read_samples(tmp_path / "t.csv", allow_empty_history=True)) == 1


def test_bad_values(tmp_path: Path) -> None:
    head = "user_id,history_item_title,item_title,history_item_id,item_id\n"
    (tmp_path / "a.csv").write_text(head + "1,\"['A', 'B']\",C,[1],2\n")
    with pytest.raises(DataFormatError, match="2 history titles but 1 history ids"):
        read_samples(tmp_path / "a.csv")
    (tmp_path / "b.csv").write_text(head + "1,[oops,C,[1],2\n")
    with pytest.raises(DataFormatError, match="not a list literal"):
        read_samples(tmp_path / "b.csv")


def test_item_info_errors(tmp_path: Path) -> None:
    p = tmp_path / "info.txt"
    p.write_text("Toy Story\t1\nNo tab here\n")
    with pytest.raises(DataFormatError, match=":2: expected 'title<TAB>id'"):
        read_item_info(p)
    p.write_text("A\t1\nB\t1\n")
    with pytest.raises(DataFormatError, match="item id 1 appears twice"):
        read_item_info(p)
    p.write_text("A\tx\n")
    with pytest.raises(DataFormatError, match="not an integer"):
        read_item_info(p)
    p.write_text("A\t5\nB\t7\n")
    assert read_item_info(p).ids == [5, 7]


def test_unknown_item_id(tmp_path: Path) -> None:
    d = write_tiny_data(tmp_path / "d")
    (d / "info.txt").write_text("".join(f"{t}\t{100 + k}\n" for k, t in enumerate(TITLES[:5])))
    with pytest.raises(DataFormatError, match="is not in the item info file"):
        load_dataset(d)


def test_write_is_atomic(tmp_path: Path) -> None:
    cat = Catalog(["A", "B"], [0, 1])
    good = Sample("u", ["A"], "B", [0], 1)
    bad = Sample("v", [], "B", [], 1)
    with pytest.raises(DataFormatError, match="empty history"):
        write_dataset(tmp_path / "out", cat, {"train": [good], "test": [good, bad]})
    assert list(tmp_path.iterdir()) == []  # nothing half-written, no temp dir left
    write_dataset(tmp_path / "out", cat, {"train": [good]})
    with pytest.raises(FileExistsError, match="already exists"):
        write_dataset(tmp_path / "out", cat, {"train": [good]})
    with pytest.raises(DataFormatError):
        write_dataset(tmp_path / "out", cat, {"train": [bad]}, overwrite=True)
    assert len(read_samples(tmp_path / "out" / "train.csv")) == 1  # old copy intact


def _recbole(tmp_path: Path) -> Path:
    d = tmp_path / "toy"
    d.mkdir()
    (d / "toy.item").write_text(
        "item_id:token\tmovie_title:token_seq\trelease_year:token\n"
        "1\tAlpha\t1990\n2\tBeta\t1991\n3\tGamma (1992)\t1992\n4\tDelta\t\n5\tUnused\t1999\n"
    )
    (d / "toy.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "a\t2\t5\t20\n"
        "a\t1\t4\t10\n"
        "a\t3\t1\t30\n"
        "b\t4\t3\t15\n"
        "b\t1\t3\t40\n"
        "b\t99\t3\t50\n"  # unknown item: dropped
        "c\t2\t5\t5\n"  # one interaction: no sample
    )
    return d


def test_movielens_builder_hand_computed(tmp_path: Path) -> None:
    report = build_movielens(_recbole(tmp_path), tmp_path / "out", max_history=1, progress=False)
    assert report.dropped_unknown_items == 1
    assert report.num_users == 3 and report.num_interactions == 6
    ds = load_dataset(tmp_path / "out")
    # Titles get the year unless they already end with it; items never used are dropped.
    assert ds.catalog.titles == ["Alpha (1990)", "Beta (1991)", "Gamma (1992)", "Delta"]
    # Samples by target time: a@20 (hist Alpha), a@30 (hist Beta, max_history=1), b@40 (hist
    # Delta). n=3: train floor(2.4)=2, valid floor(0.3)=0, test 1.
    train, valid, test = ds.split("train"), ds.split("valid"), ds.split("test")
    assert [(s.user_id, s.history_item_title, s.item_title) for s in train] == [
        ("a", ["Alpha (1990)"], "Beta (1991)"),
        ("a", ["Beta (1991)"], "Gamma (1992)"),
    ]
    assert valid == []
    assert [(s.user_id, s.history_item_id, s.item_id) for s in test] == [("b", [3], 0)]
    assert test[0].extra == {"timestamp": "40"}


def test_movielens_min_rating_and_errors(tmp_path: Path) -> None:
    src = _recbole(tmp_path)
    report = build_movielens(src, tmp_path / "o", min_rating=4, progress=False)
    assert report.dropped_low_rating == 3
    assert report.num_samples == {"train": 0, "valid": 0, "test": 1}
    (src / "toy.inter").write_text("user_id:token\trating:float\n")
    with pytest.raises(DataFormatError, match="missing column\\(s\\) item_id, timestamp"):
        build_movielens(src, tmp_path / "o2", progress=False)
    assert not (tmp_path / "o2").exists()


def test_history_window_and_split_sizes() -> None:
    inter = {"u": [(float(t), t, t) for t in range(13)]}
    timed = make_samples(inter, [f"t{k}" for k in range(13)], max_history=10)
    assert len(timed) == 12
    assert timed[-1][1].history_item_id == list(range(2, 12))
    assert timed[0][1].history_item_id == [0]
    splits = split_by_time(timed)
    assert [len(splits[k]) for k in ("train", "valid", "test")] == [9, 1, 2]
    assert splits["test"][-1].item_id == 12


@pytest.mark.assets
def test_real_ml100k(tmp_path: Path) -> None:
    from igdbeam.app.assets import asset_path

    if importlib.util.find_spec("recbole") is None:
        pytest.skip("recbole is not installed")
    report = build_movielens(asset_path("ml-100k"), tmp_path / "ml", progress=False)
    # 100,000 ratings by 943 users: one sample per rating except each user's first.
    assert report.num_users == 943 and report.num_items == 1682
    assert sum(report.num_samples.values()) == 100_000 - 943
    assert report.num_samples == {"train": 79245, "valid": 9905, "test": 9907}


def test_read_target_ids_and_popularity(tmp_path: Path) -> None:
    from igdbeam.app.pipeline import popularity
    from igdbeam.data.bigrec_csv import read_target_ids

    d = write_tiny_data(tmp_path / "d")
    full = load_dataset(d)
    lazy = load_dataset(d, splits=("test",))
    ids = read_target_ids(d / "train.csv")
    assert ids == [s.item_id for s in full.split("train")]
    assert popularity(lazy).tolist() == popularity(full).tolist()
    assert popularity(full).sum() == len(ids)
    (d / "train.csv").write_text("user_id\n1\n")
    with pytest.raises(DataFormatError, match="missing column item_id"):
        read_target_ids(d / "train.csv")


def test_malformed_rows_name_file_row_and_column(tmp_path: Path) -> None:
    head = "user_id,history_item_title,item_title,history_item_id,item_id\n"
    f = tmp_path / "t.csv"
    good = '0,"[""A""]",B,[1],2\n'  # row 1 (line 2) is fine; row 2 (line 3) is not
    cases = [
        ('1,"[""A""]",C\n', r"t\.csv:3: row 2: 3 fields but the header has 5 \(no value for "
         r"column\(s\) history_item_id, item_id\)"),
        ('1,"[""A""]",C,[1],2,extra\n', "row 2: 6 fields but the header has 5"),
        ('1,"[""A""]",C,[146.7],2\n', "row 2, column 'history_item_id': element 0 is 146.7"),
        ('1,"[""A""]",C,"[""1""]",2.5\n', "row 2, column 'item_id': '2.5' is not an integer"),
        ('1,"[1]",C,[1],2\n', "column 'history_item_title': element 0 is 1, not a title"),
    ]  # fmt: skip
    for row, message in cases:
        f.write_text(head + good + row)
        with pytest.raises(DataFormatError, match=message):
            read_samples(f)
    f.write_bytes(head.encode() + b'1,"[""\xff""]",C,[1],2\n')
    with pytest.raises(DataFormatError, match=r"t\.csv: not UTF-8 text"):
        read_samples(f)
    # String ids of integers are fine (the reference files quote nothing, pandas may).
    f.write_text(head + '1,"[""A""]",C,"[""7""]", 8 \n')
    (s,) = read_samples(f)
    assert s.history_item_id == [7] and s.item_id == 8


def test_read_target_ids_rejects_floats(tmp_path: Path) -> None:
    from igdbeam.data.bigrec_csv import read_target_ids

    f = tmp_path / "t.csv"
    f.write_text("user_id,item_id\n1,5\n2,6.5\n")
    with pytest.raises(DataFormatError, match=r"t\.csv:3: row 2, column 'item_id': '6.5'"):
        read_target_ids(f)
    f.write_text("user_id,item_id\n1\n")
    with pytest.raises(DataFormatError, match="row 1, column 'item_id': missing"):
        read_target_ids(f)


def test_movielens_malformed_rows(tmp_path: Path) -> None:
    src = _recbole(tmp_path)
    inter = src / "toy.inter"
    head = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    for body, message in [
        ("a\t2\n", r"toy\.inter:2: 2 fields, expected at least 4"),
        ("a\t2\t5\tnan\n", "timestamp 'nan' is not a finite number"),
        ("a\t2\tfive\t3\n", "rating 'five' is not a number"),
    ]:
        inter.write_text(head + body)
        with pytest.raises(DataFormatError, match=message):
            build_movielens(src, tmp_path / "o", min_rating=1, progress=False)
    assert not (tmp_path / "o").exists()


def test_write_dataset_never_replaces_a_users_folder_or_file(tmp_path: Path) -> None:
    cat = Catalog(["A", "B"], [0, 1])
    good = Sample("u", ["A"], "B", [0], 1)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    afile = tmp_path / "afile"
    afile.write_text("keep")
    with pytest.raises(FileExistsError, match="igdbeam did not create"):
        write_dataset(mine, cat, {"train": [good]}, overwrite=True)
    with pytest.raises(FileExistsError, match="is a file"):
        write_dataset(afile, cat, {"train": [good]}, overwrite=True)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"] and afile.read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "mine"]
    # An empty folder is fine, and its replacement is marked.
    (tmp_path / "empty").mkdir()
    write_dataset(tmp_path / "empty", cat, {"train": [good]})
    assert json.loads((tmp_path / "empty" / ".igdbeam-output").read_text())["command"] == "prepare"
