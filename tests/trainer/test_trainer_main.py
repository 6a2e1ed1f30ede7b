"""The ``fraud-train`` command line: arguments, exit status and error messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainer.__main__ import main


def _bad_csv(tmp_path: Path) -> Path:
    path = tmp_path / "bad.csv"
    header = ",".join(["Time", *(f"V{i}" for i in range(1, 29)), "Amount", "Class"])
    good = ",".join(["0"] * 30 + ["1"])
    bad = ",".join(["1"] + ["0"] * 28 + ["twelve", "0"])
    path.write_text("\n".join([header, good, good, bad, bad]) + "\n")
    return path


def test_bad_data_exits_1_naming_column_and_row(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    status = main(["--data", str(_bad_csv(tmp_path)), "--out", str(tmp_path / "m")])

    assert status == 1
    assert "column Amount row 3" in caplog.text
    assert "'twelve'" in caplog.text
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["--out", "x"],
        ["--data", "a.csv", "--synthetic", "10", "--out", "x"],
        ["--synthetic", "0", "--out", "x"],
        ["--synthetic", "10", "--out", "x", "--epochs", "0"],
        ["--synthetic", "10", "--out", "x", "--min-precision", "1.5"],
        ["--synthetic", "10", "--out", "x", "--min-precision", "0"],
        ["--synthetic", "10", "--out", "x", "--threshold", "1"],
        ["--synthetic", "10", "--out", "x", "--max-false-alarms-per-10k", "-1"],
        ["--synthetic", "10", "--out", "x", "--recipe", "fancy"],
        ["--data", "a.csv", "--out", "x", "--synthetic-csv", "s.csv"],
        ["--synthetic", "10", "--out", "x", "--log-level", "chatty"],
        ["--synthetic", "10", "--out", "x", "--seed", "-1"],
        ["--synthetic", "10", "--out", "x", "--seed", str(2**32)],
        [
            "--synthetic",
            "10",
            "--out",
            "x",
            "--threshold",
            "0.5",
            "--min-precision",
            "0.8",
        ],
        [
            "--synthetic",
            "10",
            "--out",
            "x",
            "--recipe",
            "original",
            "--min-precision",
            "0.8",
        ],
        ["--synthetic", "10", "--out", "x", "--recipe", "original", "--no-refit"],
    ],
    ids=[
        "no-source",
        "two-sources",
        "zero-rows",
        "zero-epochs",
        "precision-above-1",
        "precision-0",
        "threshold-1",
        "negative-budget",
        "unknown-recipe",
        "synthetic-csv-without-synthetic",
        "unknown-log-level",
        "negative-seed",
        "seed-above-32-bits",
        "threshold-with-a-target",
        "original-with-a-target",
        "original-with-no-refit",
    ],
)
def test_bad_arguments_exit_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(argv)

    assert stopped.value.code == 2
    assert "fraud-train: error:" in capsys.readouterr().err


def test_synthetic_run_exits_0_with_a_fixed_threshold_and_writes_its_csv(
    tmp_path: Path,
) -> None:
    out_dir, csv_path = tmp_path / "m", tmp_path / "synthetic.csv"
    argv = ["--synthetic", "5000", "--epochs", "1", "--threshold", "0.7", "--no-refit"]
    argv += ["--out", str(out_dir), "--synthetic-csv", str(csv_path)]

    assert main(argv) == 0

    written = json.loads((out_dir / "model.json").read_text())
    assert written["threshold"] == 0.7
    assert written["threshold_policy"]["kind"] == "fixed"
    assert written["rows"]["train"] == 3_200
    assert len(csv_path.read_text().splitlines()) == 5_001


def test_original_recipe_trains_every_epoch_without_class_weights(
    tmp_path: Path,
) -> None:
    argv = ["--synthetic", "5000", "--epochs", "2", "--recipe", "original"]

    assert main([*argv, "--out", str(tmp_path)]) == 0

    written = json.loads((tmp_path / "report.json").read_text())
    assert written["recipe"] == "original"
    assert written["training"]["epochs_run"] == 2
    assert written["training"]["class_weight"] is None
    assert written["rows"] == {"train": 4_000, "validation": 0, "test": 1_000}
    assert written["threshold"] == 0.5


@pytest.mark.parametrize(
    ("flag", "text", "expected"),
    [
        ("--epochs", "ten", "expected an integer, got 'ten'"),
        ("--min-precision", "high", "expected a number, got 'high'"),
    ],
    ids=["integer", "number"],
)
def test_text_for_a_number_is_named_in_the_error(
    flag: str, text: str, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main(["--synthetic", "3000", "--out", "x", flag, text])

    assert f"argument {flag}: {expected}" in capsys.readouterr().err


def test_out_that_is_a_file_exits_1_before_training(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trainer.pipeline

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("training started although --out is unusable")

    monkeypatch.setattr(trainer.pipeline, "train", no_training)
    taken = tmp_path / "taken"
    taken.write_text("not a directory")

    status = main(["--synthetic", "3000", "--out", str(taken)])

    assert status == 1
    assert f"cannot write the model directory {taken}" in caplog.text
    assert "pass another --out" in caplog.text


def test_synthetic_csv_that_cannot_be_written_exits_1(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    argv = ["--synthetic", "3000", "--synthetic-csv", str(tmp_path)]

    assert main([*argv, "--out", str(tmp_path / "m")]) == 1
    assert f"cannot write the synthetic CSV {tmp_path}" in caplog.text
