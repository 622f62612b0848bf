"""The CLI's guarantees: one ``igdbeam: error:`` line and status 2 for bad inputs, numbers checked
at parse time, outputs checked before any work, ``--overwrite`` limited to igdbeam's own outputs,
and atomic outputs (signals: ``test_cli_signals.py``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import igdbeam
from factories.cli import DECODER, one_error_line, run_cli, snapshot_tree
from igdbeam.io import MARKER_NAME, write_marker

HEADER = "user_id,history_item_title,item_title,history_item_id,item_id\n"


# ------------------------------------------------------------------------- malformed inputs
def _malformed(base: Path, data: Path, kind: str) -> Path:
    """A copy of ``data`` whose three split files (or info.txt) are broken in one way."""
    bad = base / f"bad-{kind}"
    shutil.copytree(data, bad)
    for split in ("train", "valid", "test"):
        f = bad / f"{split}.csv"
        if kind == "short_row":
            f.write_text(f.read_text() + 'u9,"[""Babe (1995)""]",Babe (1995)\n')
        elif kind == "float_id":
            f.write_text(f.read_text() + 'u9,"[""Toy Story (1995)""]",Babe (1995),[146.7],107\n')
        elif kind == "missing_columns":
            f.write_text("user_id,item_id\nu1,100\n")
        elif kind == "empty_file":
            f.write_text("")
        elif kind == "no_rows":
            f.write_text(HEADER)
        elif kind == "not_utf8":
            f.write_bytes(f.read_bytes() + b'u9,"[""\xff\xfe""]",Babe (1995),[100],107\n')
    if kind == "empty_info":
        (bad / "info.txt").write_text("")
    return bad


EXPECTED = {
    "short_row": "3 fields but the header has 5 (no value for column(s) history_item_id, item_id)",
    "float_id": "column 'history_item_id': element 0 is 146.7, not an integer item id",
    "missing_columns": "missing column(s) history_item_title, item_title, history_item_id",
    "empty_file": "missing column(s) user_id, history_item_title",
    "empty_info": "has no items",
    "no_rows": "the split has no rows",
    "not_utf8": "not UTF-8 text",
}


def _previous_output(base: Path, command: str) -> tuple[list[str], Path]:
    """An earlier output of ``command`` (marked) and the options that name it, with --overwrite."""
    if command in ("evaluate", "train"):
        out = base / f"prev-{command}"
        out.mkdir()
        write_marker(out, command)
        (out / "metrics.json").write_text('{"old": true}\n')
        return (["--output-dir" if command == "train" else "--out", str(out), "--overwrite"], out)
    if command == "recommend":
        out = base / "prev-recs"
        out.mkdir()
        (out / "recs.csv").write_text("user_id,rank\nold,1\n")
        (out / "recs.json").write_text('{"old": true}\n')
        return ["--out", str(out / "recs.csv"), "--overwrite"], out
    out = base / "prev-stats"
    out.mkdir()
    (out / "s.json").write_text('{"old": true}\n')
    (out / "zero_ig_by_step.png").write_bytes(b"old png")
    return ["--out", str(out / "s.json"), "--plot", str(out), "--overwrite"], out


@pytest.mark.parametrize("kind", list(EXPECTED))
@pytest.mark.parametrize("command", ["stats", "train", "recommend", "evaluate"])
def test_malformed_data_every_command(tiny_assets, tmp_path: Path, kind: str, command: str, capsys):
    if kind == "no_rows" and command == "stats":
        pytest.skip("statistics of empty splits are valid (zero rows)")
    data, model = tiny_assets
    bad = _malformed(tmp_path, data, kind)
    out_args, out = _previous_output(tmp_path, command)
    before, listing = snapshot_tree(out), sorted(p.name for p in tmp_path.iterdir())
    extra = {
        "stats": [],
        "train": ["--max-steps", "1", "--no-progress"],
        "recommend": ["--decoder", DECODER, "--include-history", "--no-progress"],
        "evaluate": ["--decoder", DECODER, "--include-history", "--no-progress"],
    }[command]
    argv = [command, "--data", str(bad), "--model", str(model), *out_args, *extra]
    line = one_error_line(*run_cli(argv, capsys)[::2])
    assert EXPECTED[kind] in line
    assert str(bad) in line  # the message names the file
    if kind in ("short_row", "float_id"):
        assert "row " in line
    assert snapshot_tree(out) == before  # the earlier output is unchanged, byte for byte
    assert sorted(p.name for p in tmp_path.iterdir()) == listing  # no temp file left


@pytest.mark.parametrize(
    ("inter", "message"),
    [
        ("user_id:token\titem_id:token\trating:float\ttimestamp:float\nu1\t1\n", "2 fields"),
        (
            "user_id:token\titem_id:token\trating:float\ttimestamp:float\nu1\t1\t5\tsoon\n",
            "timestamp 'soon' is not a finite number",
        ),
        ("", "the file is empty"),
        ("user_id:token\trating:float\n", "missing column(s) item_id, timestamp"),
    ],
)
def test_prepare_malformed_recbole(recbole, tmp_path: Path, inter: str, message: str, capsys):
    out = tmp_path / "ml"
    assert run_cli(["prepare", "--out", str(out), "--no-progress"], capsys)[0] == 0
    before = snapshot_tree(out)
    (recbole / "ml-100k.inter").write_text(inter)
    argv = ["prepare", "--out", str(out), "--overwrite", "--no-progress"]
    line = one_error_line(*run_cli(argv, capsys)[::2])
    assert message in line and "ml-100k.inter" in line
    assert snapshot_tree(out) == before


def test_reader_rejects_non_integer_ids(tmp_path: Path) -> None:
    """The CSV reader used to read the history id 146.7 as 146."""
    from igdbeam.data import DataFormatError, read_samples

    f = tmp_path / "t.csv"
    f.write_text(HEADER + '7,"[""A"", ""B""]",C,"[1, 146.7]",3\n')
    with pytest.raises(DataFormatError, match=r"t\.csv:2: row 1, column 'history_item_id'"):
        read_samples(f)
    f.write_text(HEADER + '7,"[""A""]",C,[1],3.0\n')
    with pytest.raises(DataFormatError, match=r"column 'item_id': '3\.0' is not an integer"):
        read_samples(f)
    f.write_text(HEADER + '7,"[""A""]",C,[true],3\n')
    with pytest.raises(DataFormatError, match="element 0 is True, not an integer"):
        read_samples(f)


# ------------------------------------------------------------------------------- --overwrite
def test_prepare_overwrite_replaces_only_its_own_output(recbole, tmp_path: Path, capsys):
    # A user's folder and a user's file are never replaced, with or without --overwrite.
    user_dir = tmp_path / "mine"
    user_dir.mkdir()
    (user_dir / "notes.txt").write_text("precious")
    user_file = tmp_path / "file.txt"
    user_file.write_text("precious too")
    for target, what in ((user_dir, "igdbeam did not create"), (user_file, "is a file")):
        for extra in ([], ["--overwrite"]):
            argv = ["prepare", "--out", str(target), "--no-progress", *extra]
            line = one_error_line(*run_cli(argv, capsys)[::2])
            assert str(target) in line and what in line
    assert (user_dir / "notes.txt").read_text() == "precious"
    assert sorted(p.name for p in user_dir.iterdir()) == ["notes.txt"]
    assert user_file.read_text() == "precious too"

    # An igdbeam output: marked; refused without --overwrite, replaced with it.
    out = tmp_path / "ml"
    assert run_cli(["prepare", "--out", str(out), "--no-progress"], capsys)[0] == 0
    marker = json.loads((out / MARKER_NAME).read_text())
    assert marker == {"command": "prepare", "version": igdbeam.__version__}
    first = snapshot_tree(out)
    line = one_error_line(*run_cli(["prepare", "--out", str(out), "--no-progress"], capsys)[::2])
    assert "already exists; pass --overwrite" in line
    argv = ["prepare", "--out", str(out), "--overwrite", "--max-history", "1", "--no-progress"]
    assert run_cli(argv, capsys)[0] == 0
    assert snapshot_tree(out) != first and (out / MARKER_NAME).is_file()
    # Only the output and the user's things: no temp or old copies left next to them.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt", "mine", "ml", "recbole"]

    # An empty folder is fine (nothing to lose).
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_cli(["prepare", "--out", str(empty), "--no-progress"], capsys)[0] == 0
    assert (empty / "train.csv").is_file()

    # Another command's output is not replaced by --overwrite.
    line = one_error_line(
        *run_cli(["evaluate", "--out", str(out), "--overwrite", "--data", str(out)], capsys)[::2]
    )
    assert "holds the output of 'igdbeam prepare'" in line
    assert (out / "train.csv").is_file()


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["stats", "--out", "{}"], "--out"),
        (["stats", "--plot", "{}"], "--plot"),
        (["train", "--output-dir", "{}"], "--output-dir"),
        (["recommend", "--out", "{}"], "--out"),
        (["evaluate", "--out", "{}"], "--out"),
        (["demo", "--out", "{}"], "--out"),
    ],
)
def test_user_paths_are_never_replaced(tmp_path: Path, argv: list[str], option: str, capsys):
    """Every command's output option: a user folder (with files) stays untouched, --overwrite
    or not; the check happens before any data or model is read (--data does not exist)."""
    user_dir = tmp_path / "mine"
    user_dir.mkdir()
    (user_dir / "zero_ig_by_step.png").write_text("mine")
    (user_dir / "results.csv").write_text("mine")
    before = snapshot_tree(tmp_path)
    target = user_dir  # a folder (for --plot: the folder of an existing image)
    if argv[0] in ("stats", "recommend") and option == "--out":
        target = user_dir / "results.csv"  # an existing file: needs --overwrite
    full = [a.replace("{}", str(target)) for a in argv]
    if argv[0] != "demo":
        full += ["--data", str(tmp_path / "no-such-data")]
    line = one_error_line(*run_cli(full, capsys)[::2])
    assert str(target) in line
    if argv[0] in ("train", "evaluate", "demo"):
        assert "igdbeam did not create" in line
        line = one_error_line(*run_cli([*full, "--overwrite"], capsys)[::2])
        assert "igdbeam did not create" in line
    elif option == "--plot":
        assert "zero_ig_by_step.png" in line and "pass --overwrite" in line
    else:
        assert "already exists; pass --overwrite" in line
    assert snapshot_tree(tmp_path) == before


def test_recommend_out_never_collides_with_its_json(tiny_assets, tmp_path: Path, capsys):
    data, model = tiny_assets
    for name in ("recs.json", "recs.JSON"):
        out = tmp_path / name
        out.write_text("keep")
        argv = ["recommend", "--data", str(data), "--model", str(model), "--out", str(out)]
        line = one_error_line(*run_cli([*argv, "--overwrite"], capsys)[::2])
        assert "ends in .json" in line and out.read_text() == "keep"


def test_recommend_overwrite_and_atomic_pair(tiny_assets, tmp_path: Path, capsys):
    data, model = tiny_assets
    out = tmp_path / "recs.csv"
    argv = [
        "recommend", "--data", str(data), "--model", str(model), "--decoder", DECODER,
        "--include-history", "--out", str(out), "--num-beams", "2", "--num-users", "2",
        "--no-progress",
    ]  # fmt: skip
    assert run_cli(argv, capsys)[0] == 0
    first = snapshot_tree(tmp_path)
    assert sorted(first) == [".", "recs.csv", "recs.json"]
    line = one_error_line(*run_cli(argv, capsys)[::2])
    assert "already exists; pass --overwrite" in line and snapshot_tree(tmp_path) == first
    code, _, err = run_cli([*argv, "--overwrite", "--num-users", "3"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["recs.csv", "recs.json"]
    assert len(json.loads((tmp_path / "recs.json").read_text())["recommendations"]) == 6


def _failing_generate(*_args, **_kwargs):
    raise ValueError("the decoder gave up")


def test_demo_out_is_staged_and_rolled_back(tmp_path: Path, capsys, monkeypatch):
    """`demo` writes into --out itself (run_demo prints that path): a new folder is marked, a
    failed --overwrite run puts the earlier folder back. run_demo is a stand-in here (the real
    one is tested in tests/test_demo.py); the CLI's staging is what is tested."""
    from igdbeam.app import demo

    def fake_run_demo(out_dir, profile, *, num_users=None, generate_fn=None, **_):
        assert Path(out_dir) == out  # the final path, not a temp one
        (Path(out_dir) / "zero_ig_by_step.png").write_bytes(b"png")
        if generate_fn is not None:
            generate_fn()  # the failing decoder raises mid-run, after a file was written
        (Path(out_dir) / "results.json").write_text(json.dumps({"num_rows": num_users}))
        return {}

    monkeypatch.setattr(demo, "run_demo", fake_run_demo)
    monkeypatch.setattr("igdbeam.app.cli.loading.load_decoder", lambda spec: _DECODERS[spec])
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--num-users", "2", "--no-progress"]
    ok = ["--decoder", "ok"]
    code, _, err = run_cli([*argv, *ok], capsys)
    assert code == 0, err
    assert json.loads((out / MARKER_NAME).read_text())["command"] == "demo"
    first = snapshot_tree(out)
    assert sorted(first) == [".", MARKER_NAME, "results.json", "zero_ig_by_step.png"]
    line = one_error_line(*run_cli([*argv, *ok], capsys)[::2])
    assert "already exists; pass --overwrite" in line
    line = one_error_line(*run_cli([*argv, "--decoder", "failing", "--overwrite"], capsys)[::2])
    assert "the decoder gave up" in line
    assert snapshot_tree(out) == first  # the earlier demo output is back, intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]
    code, _, err = run_cli([*argv, *ok, "--overwrite", "--num-users", "3"], capsys)
    assert code == 0, err
    assert json.loads((out / "results.json").read_text())["num_rows"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]


_DECODERS = {"ok": None, "failing": _failing_generate}


# ------------------------------------------------------------------------------- bad numbers
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--output-dir", "o", "--grad-accum", "0"], "--grad-accum: must be a positive"),
        (["train", "--output-dir", "o", "--max-train-samples", "0"], "must be a positive"),
        (["train", "--output-dir", "o", "--batch-size", "-2"], "must be a positive integer"),
        (["train", "--output-dir", "o", "--lr", "0"], "--lr: must be a positive number"),
        (["train", "--output-dir", "o", "--lr", "nan"], "--lr: must be a finite number"),
        (["train", "--output-dir", "o", "--epochs", "-1"], "--epochs: must be a positive"),
        (["train", "--output-dir", "o", "--max-steps", "0"], "positive integer or -1"),
        (["train", "--output-dir", "o", "--beta", "1.5"], "--beta: must lie in [0, 1]"),
        (["train", "--output-dir", "o", "--seed", "-1"], "--seed: must be a non-negative"),
        (["train", "--output-dir", "o", "--max-prompt-tokens", "0"], "must be a positive"),
        (["train", "--output-dir", "o", "--threads", "2.5"], "expected an integer, got '2.5'"),
        (["evaluate", "--out", "o", "--alpha", "-0.1"], "--alpha: must lie in [0, 1]"),
        (["evaluate", "--out", "o", "--num-users", "0"], "--num-users: must be a positive"),
        (["evaluate", "--out", "o", "--max-history-items", "0"], "must be a positive"),
        (["recommend", "--out", "o", "--num-beams", "0"], "--num-beams: must be a positive"),
        (["recommend", "--out", "o", "--length-penalty", "inf"], "must be a finite number"),
        (["prepare", "--out", "o", "--max-history", "0"], "--max-history: must be a positive"),
        (["prepare", "--out", "o", "--max-users", "-3"], "--max-users: must be a positive"),
        (["prepare", "--out", "o", "--min-rating", "nan"], "--min-rating: must be a finite"),
        (["demo", "--num-users", "0"], "--num-users: must be a positive"),
        (["demo", "--threads", "0"], "--threads: must be a positive"),
    ],
)
def test_bad_numbers_are_argument_errors(argv, message, tmp_path: Path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and message in err and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(f"igdbeam {argv[0]}: error: argument --")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------- unwritable outputs
@pytest.mark.parametrize(
    "argv",
    [
        ["prepare", "--out", "{}/out"],
        ["stats", "--out", "{}/s.json"],
        ["stats", "--plot", "{}/plots"],
        ["train", "--output-dir", "{}/run"],
        ["recommend", "--out", "{}/recs.csv"],
        ["evaluate", "--out", "{}/eval"],
        ["demo", "--out", "{}/demo"],
    ],
)
def test_unwritable_out_fails_before_any_work(
    tiny_assets, tmp_path: Path, argv, capsys, monkeypatch
):
    """An --out below a regular file (unwritable even as root) fails at once, not after the
    decode or the training: nothing that loads data or a model may run."""
    from igdbeam import data
    from igdbeam.app import cli, demo

    def no_work(*_a, **_k):
        pytest.fail("the output path must be checked before any work")

    monkeypatch.setattr(cli.loading, "setup", no_work)
    monkeypatch.setattr(data, "load_dataset", no_work)
    monkeypatch.setattr(data, "build_movielens", no_work)
    monkeypatch.setattr(demo, "run_demo", no_work)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    full = [a.replace("{}", str(blocker)) for a in argv]
    if argv[0] in ("stats", "train", "recommend", "evaluate"):
        full += ["--data", str(tiny_assets[0]), "--model", str(tiny_assets[1])]
    line = one_error_line(*run_cli(full, capsys)[::2])
    assert f"{str(blocker)!r} is a file, not a folder" in line
    assert blocker.read_text() == "x" and sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_created_parents_are_removed_on_failure(tmp_path: Path, capsys):
    out = tmp_path / "deep" / "er" / "eval"
    line = one_error_line(
        *run_cli(["evaluate", "--out", str(out), "--data", str(tmp_path / "none")], capsys)[::2]
    )
    assert "does not exist" in line
    assert list(tmp_path.iterdir()) == []
