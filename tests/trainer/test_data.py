"""Reading, validating and splitting training data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import train_test_split

from trainer.data import Dataset, Split, from_synthetic, load_csv, split, write_csv
from trainer.errors import DataValidationError
from trainer.synthetic import FEATURE_COLUMNS, generate


def _frame(n_rows: int = 40, n_fraud: int = 5, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(n_rows, 29)), columns=list(FEATURE_COLUMNS))
    frame["Amount"] = np.round(np.abs(frame["Amount"]) * 50, 2)
    frame.insert(0, "Time", np.arange(n_rows, dtype=float))
    frame["Class"] = 0
    frame.loc[: n_fraud - 1, "Class"] = 1
    return frame


def _write(tmp_path: Path, frame: pd.DataFrame) -> Path:
    path = tmp_path / "data.csv"
    frame.to_csv(path, index=False)
    return path


def _set_cell(frame: pd.DataFrame, row: int, column: str, text: str) -> pd.DataFrame:
    frame = frame.astype({column: object})
    frame.loc[row, column] = text
    return frame


def test_valid_file_loads_features_in_contract_order(tmp_path: Path) -> None:
    frame = _frame()
    # Column order in the file does not matter; the model's order does.
    shuffled = frame[["Class", "Amount", *reversed(FEATURE_COLUMNS[:-1]), "Time"]]
    dataset = load_csv(_write(tmp_path, shuffled))

    assert dataset.features.dtype == np.float32
    np.testing.assert_allclose(
        dataset.features, frame[list(FEATURE_COLUMNS)].to_numpy(np.float32)
    )
    np.testing.assert_array_equal(dataset.labels, frame["Class"].to_numpy())
    assert dataset.seed is None
    assert dataset.sha256 is not None and len(dataset.sha256) == 64


def test_time_column_is_optional(tmp_path: Path) -> None:
    dataset = load_csv(_write(tmp_path, _frame().drop(columns=["Time"])))

    assert len(dataset) == 40


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(DataValidationError, match="cannot read training data .*nope"):
        load_csv(tmp_path / "nope.csv")


def test_empty_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("")

    with pytest.raises(DataValidationError, match="cannot parse .* as CSV"):
        load_csv(path)


def test_row_with_too_many_fields_is_rejected(tmp_path: Path) -> None:
    path = _write(tmp_path, _frame())
    with path.open("a") as handle:
        handle.write(",".join(["1"] * 40) + "\n")

    with pytest.raises(DataValidationError, match="cannot parse .* as CSV"):
        load_csv(path)


def test_file_that_is_not_text_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "binary.csv"
    path.write_bytes(b"V1,V2\n\xff\xfe\x00\x81,\x90\n")

    with pytest.raises(DataValidationError, match="cannot parse .* as CSV"):
        load_csv(path)


def test_directory_instead_of_a_file_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(DataValidationError, match="cannot read training data"):
        load_csv(tmp_path)


def test_header_without_rows_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(DataValidationError, match="header line but no data rows"):
        load_csv(_write(tmp_path, _frame().iloc[:0]))


@pytest.mark.parametrize("column", ["V1", "V17", "Amount", "Class"])
def test_missing_required_column_is_named(tmp_path: Path, column: str) -> None:
    path = _write(tmp_path, _frame().drop(columns=[column]))

    with pytest.raises(DataValidationError, match=f"lacks required column.*{column}"):
        load_csv(path)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("abc", "'abc', which is not a number"),
        ("", "an empty cell"),
        ("nan", "'nan', which is not finite"),
        ("inf", "'inf', which is not finite"),
        ("-inf", "'-inf', which is not finite"),
    ],
    ids=["text", "empty", "nan", "inf", "minus-inf"],
)
def test_bad_cell_is_reported_with_column_and_first_row(
    tmp_path: Path, text: str, problem: str
) -> None:
    frame = _set_cell(_frame(), 11, "V3", text)
    frame = _set_cell(frame, 20, "V3", text)

    with pytest.raises(DataValidationError, match=f"column V3 row 12: .*{problem}"):
        load_csv(_write(tmp_path, frame))


@pytest.mark.parametrize("label", ["2", "-1", "0.5", "yes"])
def test_label_other_than_zero_or_one_is_rejected(tmp_path: Path, label: str) -> None:
    frame = _set_cell(_frame(), 30, "Class", label)

    with pytest.raises(DataValidationError, match="column Class row 31"):
        load_csv(_write(tmp_path, frame))


@pytest.mark.parametrize(
    ("n_fraud", "missing"), [(0, "fraud"), (40, "legitimate")], ids=["no-fraud", "all"]
)
def test_both_classes_must_be_present(
    tmp_path: Path, n_fraud: int, missing: str
) -> None:
    frame = _frame(n_fraud=n_fraud) if n_fraud else _frame().assign(Class=0)

    with pytest.raises(DataValidationError, match=f"0 {missing} .* row"):
        load_csv(_write(tmp_path, frame))


def test_labels_written_as_floats_are_accepted(tmp_path: Path) -> None:
    frame = _frame()
    frame["Class"] = frame["Class"].astype(float)

    assert load_csv(_write(tmp_path, frame)).labels.sum() == 5


def test_file_digest_changes_with_content(tmp_path: Path) -> None:
    first = load_csv(_write(tmp_path, _frame(seed=1))).sha256
    second = load_csv(_write(tmp_path, _frame(seed=2))).sha256

    assert first != second


def test_split_is_stratified_80_20_with_a_validation_slice() -> None:
    dataset = from_synthetic(20_000, seed=0)
    parts = split(dataset)
    counts = parts.row_counts()

    assert counts == {"train": 12_800, "validation": 3_200, "test": 4_000}
    fraud_share = dataset.labels.mean()
    for labels in (parts.y_train, parts.y_val, parts.y_test):
        assert labels.mean() == pytest.approx(fraud_share, abs=0.0015)


def test_split_is_the_same_every_time() -> None:
    dataset = from_synthetic(5_000, seed=3)
    first, second = split(dataset), split(dataset)

    np.testing.assert_array_equal(first.x_test, second.x_test)
    np.testing.assert_array_equal(first.x_val, second.x_val)
    np.testing.assert_array_equal(first.y_train, second.y_train)


def test_split_keeps_every_row_exactly_once() -> None:
    dataset = from_synthetic(5_000, seed=4)
    parts = split(dataset)
    joined = np.concatenate([parts.x_train, parts.x_val, parts.x_test])

    assert len(joined) == len(dataset)
    assert (
        np.unique(joined, axis=0).shape[0]
        == np.unique(dataset.features, axis=0).shape[0]
    )


def test_training_part_is_the_original_80_percent_without_test_rows() -> None:
    dataset = from_synthetic(5_000, seed=4)
    parts = split(dataset)
    x_part, y_part = parts.training_part()
    x_rest, _, y_rest, _ = train_test_split(
        dataset.features,
        dataset.labels,
        test_size=0.2,
        stratify=dataset.labels,
        random_state=0,
    )

    assert len(y_part) == 4_000
    assert sorted(map(bytes, x_part)) == sorted(map(bytes, x_rest))
    assert y_part.sum() == y_rest.sum()
    assert not {bytes(row) for row in x_part} & {bytes(row) for row in parts.x_test}


def test_split_of_the_real_subset_matches_the_original_recipe(
    creditcard_csv: Path,
) -> None:
    dataset = load_csv(creditcard_csv)
    parts = split(dataset)

    # The original recipe's 80/20 split: 1,514 test rows, 78 of them fraud.
    assert parts.row_counts()["test"] == 1_514
    assert int(parts.y_test.sum()) == 78


def test_too_few_synthetic_rows_are_rejected_naming_the_least_count() -> None:
    with pytest.raises(
        DataValidationError,
        match="synthetic data of 500 rows has 1 fraud.*at least 2027 rows",
    ):
        from_synthetic(500, seed=0)


def test_least_synthetic_count_named_in_the_error_is_enough() -> None:
    parts = split(from_synthetic(2_027, seed=0))

    assert parts.y_val.sum() >= 1 and parts.y_test.sum() >= 1


def test_duplicate_column_name_is_rejected(tmp_path: Path) -> None:
    path = _write(tmp_path, _frame().assign(extra=7.0))
    text = path.read_text()
    path.write_text(text.replace(",extra", ",V3", 1))

    with pytest.raises(DataValidationError, match="column 'V3' appears more than"):
        load_csv(path)


def test_rows_one_field_wider_than_the_header_are_rejected(tmp_path: Path) -> None:
    # pandas would take the first field as an index and shift every column left.
    path = _write(tmp_path, _frame())
    header, *rows = path.read_text().splitlines()
    path.write_text("\n".join([header, *(row + ",0" for row in rows)]) + "\n")

    with pytest.raises(DataValidationError, match="cannot parse .* as CSV"):
        load_csv(path)


def test_value_beyond_float32_is_rejected(tmp_path: Path) -> None:
    frame = _set_cell(_frame(), 7, "Amount", "1e39")

    with pytest.raises(
        DataValidationError, match="column Amount row 8: .*'1e39'.*float32 range"
    ):
        load_csv(_write(tmp_path, frame))


def test_header_with_a_byte_order_mark_and_spaces_is_read(tmp_path: Path) -> None:
    frame = _frame()
    path = tmp_path / "data.csv"
    text = frame.to_csv(index=False)
    header, rest = text.split("\n", 1)
    path.write_text(header.replace(",", ", ") + "\n" + rest, encoding="utf-8-sig")

    dataset = load_csv(path)

    np.testing.assert_allclose(
        dataset.features, frame[list(FEATURE_COLUMNS)].to_numpy(np.float32)
    )


def test_file_with_another_separator_gets_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    _frame().to_csv(path, index=False, sep=";")

    with pytest.raises(DataValidationError, match="separated by ';'"):
        load_csv(path)


def test_three_rows_of_a_class_are_too_few_for_the_three_parts(
    tmp_path: Path,
) -> None:
    with pytest.raises(DataValidationError, match="has 3 fraud .* at least 4"):
        load_csv(_write(tmp_path, _frame(n_rows=200, n_fraud=3)))


@pytest.mark.parametrize("n_rows", [8, 40, 200, 2_000], ids=lambda n: f"rows-{n}")
def test_four_rows_per_class_put_both_classes_in_every_part(
    tmp_path: Path, n_rows: int
) -> None:
    parts = split(load_csv(_write(tmp_path, _frame(n_rows=n_rows, n_fraud=4))))

    for labels in (parts.y_train, parts.y_val, parts.y_test):
        assert set(np.unique(labels)) == {0, 1}


def test_synthetic_rows_round_trip_through_csv(tmp_path: Path) -> None:
    data = generate(3_000, seed=5)
    path = tmp_path / "synthetic.csv"
    write_csv(data, path)

    loaded: Dataset = load_csv(path)
    header = path.read_text().splitlines()[0].split(",")
    assert header == ["Time", *FEATURE_COLUMNS, "Class"]
    np.testing.assert_array_equal(loaded.labels, data.labels)
    np.testing.assert_allclose(loaded.features, data.features.astype(np.float32))


def test_test_rows_copied_from_training_or_validation_are_counted() -> None:
    rows = np.arange(24, dtype=np.float32).reshape(8, 3)
    labels = np.array([1, 0, 1, 0, 0, 0, 1, 0], dtype=np.int8)
    # Test rows: a copy of a fraud training row, a copy of a legitimate
    # validation row, and one unseen row.
    x_test = np.stack([rows[0], rows[5], rows[0] + 100])
    y_test = np.array([1, 0, 1], dtype=np.int8)
    parts = Split(rows[:4], labels[:4], rows[4:], labels[4:], x_test, y_test)

    assert parts.test_rows_seen_in_training() == {"rows": 2, "frauds": 1}
