"""Strict arguments outside decoding: integers are integers (bools, floats, NaN refused), floats
are finite where infinity makes no sense, files from ordinary tools (a UTF-8 BOM, a FIFO) are
read or refused at once, and CUDA requests without a GPU raise a typed error."""

from __future__ import annotations

import argparse
import csv
import math
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from factories.cli import run_cli
from igdbeam import CudaUnavailableError, ItemTrie, TrieFormatError, popularity_weights
from igdbeam.app.cli import arg_types, build_parser
from igdbeam.data import Catalog, DataFormatError, Sample, read_item_info, read_samples
from igdbeam.data.bigrec_csv import read_target_ids, write_dataset
from igdbeam.errors import InvalidIdError
from igdbeam.training.loss_func import check_num_items_in_batch

INT_TYPES = (arg_types.positive_int, arg_types.non_negative_int, arg_types.steps_int)
FLOAT_TYPES = (
    arg_types.positive_float,
    arg_types.unit_float,
    arg_types.non_negative_float,
    arg_types.finite_float,
)


def _options() -> list[tuple[str, argparse.Action]]:
    """Every (command, option) of the CLI."""
    sub = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    return [(cmd, a) for cmd, p in sub.items() for a in p._actions if a.option_strings]


def test_no_option_uses_a_plain_int_or_float_type() -> None:
    """int('2') would do, but float options must refuse inf/NaN and int ones need a range."""
    for cmd, action in _options():
        assert action.type not in (int, float), (cmd, action.option_strings)


@pytest.mark.parametrize("text", ["2.7", "2.0", "nan", "True", "1e3", "inf", "", "0x10"])
def test_every_integer_option_refuses_non_integers(text: str, capsys) -> None:
    checked = 0
    for cmd, action in _options():
        if action.type not in INT_TYPES:
            continue
        code, _, err = run_cli([cmd, action.option_strings[0], text], capsys)
        assert code == 2, (cmd, action.option_strings, text)
        assert f"argument {action.option_strings[0]}" in err and "integer" in err
        checked += 1
    assert checked >= 15


@pytest.mark.parametrize("text", ["inf", "-inf", "nan", "1e999", "x"])
def test_every_float_option_refuses_infinity_and_nan(text: str, capsys) -> None:
    checked = 0
    for cmd, action in _options():
        if action.type not in FLOAT_TYPES:
            continue
        code, _, err = run_cli([cmd, action.option_strings[0], text], capsys)
        assert code == 2 and f"argument {action.option_strings[0]}" in err, (cmd, text)
        checked += 1
    assert checked >= 10


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["experiment", "--out", "o", "--seeds", "1,2.5"], "expected an integer, got '2.5'"),
        (["experiment", "--out", "o", "--seeds", "0,-1"], "must be a non-negative integer"),
        (["experiment", "--out", "o", "--seeds", ","], "expected comma-separated seeds"),
        (["experiment", "--out", "o", "--lora-r", "-1"], "must be a non-negative integer"),
        (["train", "--output-dir", "o", "--lora-r", "1.5"], "expected an integer, got '1.5'"),
        (["train", "--output-dir", "o", "--max-steps", "0"], "positive integer or -1"),
    ],
)
def test_list_and_rank_options(argv, message, capsys) -> None:
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and message in err


def test_experiment_seeds_are_parsed_into_ints() -> None:
    args = build_parser().parse_args(["experiment", "--out", "o", "--seeds", " 3, 0 ,7"])
    assert args.seeds == (3, 0, 7)


def test_version(capsys) -> None:
    from igdbeam import __version__

    code, out, _ = run_cli(["--version"], capsys)
    assert code == 0 and out.strip() == f"igdbeam {__version__}"


def test_help_shows_each_default_once_and_never_none(capsys) -> None:
    for cmd in [None, *build_parser()._subparsers._group_actions[0].choices]:  # type: ignore[union-attr]
        code, out, _ = run_cli(([cmd] if cmd else []) + ["--help"], capsys)
        assert code == 0
        flat = " ".join(out.split())
        assert "(default: None)" not in flat, cmd
        assert "(default: False)" not in flat, cmd
        for chunk in flat.split("(default")[1:]:
            assert "(default" not in chunk.split(")")[0], cmd
    code, out, _ = run_cli(["evaluate", "--help"], capsys)
    assert "(default: 10)" in " ".join(out.split())  # --num-beams: a real default is shown


# ------------------------------------------------------------------ library functions
@pytest.mark.parametrize("bad", [True, 2.0, float("nan"), "3", None])
def test_popularity_num_items_must_be_an_integer(bad) -> None:
    with pytest.raises(InvalidIdError, match="num_items must be an integer"):
        popularity_weights([0, 1], bad)


@pytest.mark.parametrize("bad", [float("nan"), math.inf, -1e-3, True, "0.1"])
def test_equal_ig_rtol_must_be_finite_and_non_negative(bad) -> None:
    with pytest.raises(ValueError, match="equal_ig_rtol must be a"):
        ItemTrie.from_token_ids([[1, 2], [3, 2]], equal_ig_rtol=bad)


@pytest.mark.parametrize("bad", [True, 2.5, -1, "3"])
def test_read_samples_limit(tmp_path: Path, bad) -> None:
    with pytest.raises(ValueError, match="limit must be None or an integer >= 0"):
        read_samples(tmp_path / "x.csv", limit=bad)


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (None, True),
        (0, True),
        (12, True),
        (np.int64(12), True),
        (12.0, True),
        (torch.tensor(12), True),
        (torch.tensor([12, 12]), True),  # DataParallel: one copy per GPU
        (True, False),
        (-1, False),
        (float("nan"), False),
        (math.inf, False),
        ("12", False),
        (torch.tensor(float("nan")), False),
        (torch.tensor(-3), False),
        (torch.tensor([12, -1]), False),
        (torch.tensor(True), False),
        (torch.zeros(2, 2), False),
        (torch.tensor([]), False),
    ],
)
def test_num_items_in_batch_is_checked_whatever_its_type(value, ok) -> None:
    if ok:
        check_num_items_in_batch(value)
    else:
        with pytest.raises(ValueError, match="num_items_in_batch must be a finite count >= 0"):
            check_num_items_in_batch(value)


def test_loss_func_refuses_a_nan_tensor_count() -> None:
    """Before the check a NaN tensor count silently became a denominator of 1."""
    from types import SimpleNamespace

    from igdbeam import make_compute_loss_func

    trie = ItemTrie.from_token_ids([[5, 6, 2], [5, 7, 2]], vocab_size=8)
    loss = make_compute_loss_func(trie, beta=0.1)
    logits = torch.randn(1, 4, 8)
    labels = torch.tensor([[-100, 5, 6, 2]])
    out = SimpleNamespace(logits=logits)
    assert torch.isfinite(loss(out, labels, torch.tensor(3)))
    with pytest.raises(ValueError, match="num_items_in_batch"):
        loss(out, labels, torch.tensor(float("nan")))
    with pytest.raises(ValueError, match="num_items_in_batch"):
        loss(out, labels, True)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without a GPU")
@pytest.mark.parametrize("device", ["cuda", "cuda:1", torch.device("cuda", 0)])
def test_trie_to_cuda_without_a_gpu_is_a_typed_error(device) -> None:
    trie = ItemTrie.from_token_ids([[1, 2], [3, 2]])
    with pytest.raises(CudaUnavailableError, match="asks for a CUDA GPU.*use 'cpu' instead"):
        trie.to(device)
    assert issubclass(CudaUnavailableError, RuntimeError)
    assert trie.to("cpu") is trie
    with pytest.raises(ValueError, match="is not a device"):
        trie.to("gpu")


# ------------------------------------------------------------------ files from ordinary tools
def _load_within(path: str | Path, seconds: float = 10.0) -> BaseException | None:
    """``ItemTrie.load(path)`` in a daemon thread; fails the test if it does not return."""
    box: list[BaseException | None] = []

    def run() -> None:
        try:
            ItemTrie.load(path)
            box.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box.append(exc)

    start = time.monotonic()
    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert box, f"ItemTrie.load({str(path)!r}) did not return within {seconds} s (blocked)"
    assert time.monotonic() - start < seconds
    return box[0]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_trie_load_refuses_a_fifo_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.igdtrie"
    os.mkfifo(fifo)
    exc = _load_within(fifo)
    assert isinstance(exc, TrieFormatError) and "a FIFO (named pipe), not a regular file" in str(
        exc
    )


@pytest.mark.parametrize(
    ("path", "kind"), [("/dev/zero", "a device"), ("/dev/null", "a device"), (".", "a folder")]
)
def test_trie_load_refuses_devices_and_folders(tmp_path: Path, path: str, kind: str) -> None:
    target = tmp_path if path == "." else Path(path)
    if not target.exists():
        pytest.skip(f"{path} does not exist here")
    exc = _load_within(target)
    assert isinstance(exc, TrieFormatError) and f"it is {kind}, not a regular file" in str(exc)


def test_trie_load_of_a_missing_file_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        ItemTrie.load(tmp_path / "none.igdtrie")


BOM = "\ufeff"
HEADER = "user_id,history_item_title,item_title,history_item_id,item_id"


def test_bom_in_info_txt_does_not_stick_to_the_first_title(tmp_path: Path) -> None:
    info = tmp_path / "info.txt"
    info.write_text(BOM + "Heat (1995)\t10\r\nBabe (1995)\t11\r\n", encoding="utf-8")
    catalog = read_item_info(info)
    assert catalog.titles == ["Heat (1995)", "Babe (1995)"] and catalog.ids == [10, 11]


def test_bom_in_split_csvs_is_read(tmp_path: Path) -> None:
    split = tmp_path / "test.csv"
    split.write_text(BOM + HEADER + '\r\n7,"[""Heat (1995)""]",Babe (1995),[10],11\r\n')
    [sample] = read_samples(split)
    assert sample.user_id == "7" and sample.history_item_title == ["Heat (1995)"]
    assert sample.item_id == 11 and sample.extra == {}
    assert read_target_ids(split) == [11]


TITLE = st.text(
    st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), min_size=1, max_size=20
).filter(lambda t: t.strip() and t == " ".join(t.split()))


@st.composite
def datasets(draw):
    titles = draw(st.lists(TITLE, min_size=1, max_size=6, unique=True))
    ids = draw(
        st.lists(
            st.integers(-(2**40), 2**40), min_size=len(titles), max_size=len(titles), unique=True
        )
    )
    samples = []
    for _ in range(draw(st.integers(0, 4))):
        hist = draw(st.lists(st.integers(0, len(titles) - 1), min_size=1, max_size=4))
        target = draw(st.integers(0, len(titles) - 1))
        samples.append(
            Sample(
                user_id=draw(st.text("abc123,\"' ", min_size=1, max_size=5)),
                history_item_title=[titles[h] for h in hist],
                item_title=titles[target],
                history_item_id=[ids[h] for h in hist],
                item_id=ids[target],
            )
        )
    return Catalog(titles, ids), samples


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=datasets(), bom=st.booleans(), crlf=st.booleans())
def test_csv_readers_round_trip_any_titles(tmp_path_factory, data, bom, crlf) -> None:
    """Whatever the titles (quotes, commas, non-ASCII), a written dataset reads back equal,
    also after an editor added a BOM and CRLF line ends."""
    catalog, samples = data
    folder = tmp_path_factory.mktemp("ds") / "d"
    write_dataset(folder, catalog, {"test": samples})
    for name in ("info.txt", "test.csv"):
        text = (folder / name).read_text(encoding="utf-8")
        if crlf:
            text = text.replace("\r\n", "\n").replace("\n", "\r\n")
        (folder / name).write_text((BOM if bom else "") + text, encoding="utf-8", newline="")
    again = read_item_info(folder / "info.txt")
    assert again.titles == catalog.titles and again.ids == catalog.ids
    read = read_samples(folder / "test.csv")
    assert [
        (s.user_id, s.history_item_title, s.item_title, s.history_item_id, s.item_id) for s in read
    ] == [
        (s.user_id, s.history_item_title, s.item_title, s.history_item_id, s.item_id)
        for s in samples
    ]
    assert read_target_ids(folder / "test.csv") == [s.item_id for s in samples]


CELL = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["[]", "[1, 2]", '["a"]', "[1.5]", "[True]", "nan", "1e3", "[", "((", "-0"]),
    st.integers().map(str),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    header=st.lists(st.sampled_from([*HEADER.split(","), "x", ""]), max_size=7),
    rows=st.lists(st.lists(CELL, max_size=7), max_size=4),
    bom=st.booleans(),
)
def test_csv_readers_raise_only_data_format_errors(tmp_path_factory, header, rows, bom) -> None:
    """Arbitrary CSV content is read or refused with a DataFormatError naming the file, never
    another exception; integers are never truncated from floats."""
    path = tmp_path_factory.mktemp("csv") / "s.csv"
    with path.open("w", encoding="utf-8", newline="") as fh:
        fh.write(BOM if bom else "")
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    for reader in (read_samples, read_target_ids):
        try:
            out = reader(path)
        except DataFormatError as exc:
            assert str(path) in str(exc)
            continue
        for value in out:
            ids = [value] if isinstance(value, int) else [value.item_id, *value.history_item_id]
            assert all(type(i) is int for i in ids)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(lines=st.lists(st.text(max_size=15), max_size=5), bom=st.booleans())
def test_item_info_reader_raises_only_data_format_errors(tmp_path_factory, lines, bom) -> None:
    path = tmp_path_factory.mktemp("info") / "info.txt"
    path.write_text((BOM if bom else "") + "\n".join(lines), encoding="utf-8", errors="replace")
    try:
        catalog = read_item_info(path)
    except DataFormatError as exc:
        assert str(path) in str(exc)
        return
    assert all(t.strip() and not t.startswith(BOM) for t in catalog.titles)
    assert all(type(i) is int for i in catalog.ids)


def test_help_and_version_import_neither_torch_nor_transformers() -> None:
    """``igdbeam --help`` starts in well under a second: the CLI imports torch, numpy and
    transformers only when a command runs."""
    import subprocess
    import sys

    from factories.cli import subprocess_env

    code = (
        "import sys\n"
        "from igdbeam.app.cli import main\n"
        "for argv in (['--help'], ['--version'], ['evaluate', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "names = ('torch', 'numpy', 'transformers', 'igdbeam._C')\n"
        "heavy = [m for m in names if m in sys.modules]\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=subprocess_env(), capture_output=True, text=True
    )
    assert "HEAVY []" in out.stderr, out.stderr
    assert "usage: igdbeam" in out.stdout and "igdbeam 0." in out.stdout
