"""Training data: read and validate the CSV, or generate it, then split it.

The input schema is the public credit-card fraud dataset's: columns ``V1``..``V28``,
``Amount`` and ``Class`` (0 legitimate, 1 fraud), optionally ``Time`` and any other
columns, which are ignored. Every rule broken is reported with the column and the
first offending row, counted from 1 after the header line.
"""

from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from trainer.errors import DataValidationError
from trainer.synthetic import FEATURE_COLUMNS, FRAUD_RATE, SyntheticData, generate

__all__ = [
    "LABEL_COLUMN",
    "Dataset",
    "Split",
    "from_synthetic",
    "load_csv",
    "split",
    "write_csv",
]

logger = logging.getLogger(__name__)

LABEL_COLUMN = "Class"

# The original recipe: stratified 80/20 with random_state 0. The validation slice
# takes the same share of the training part, stratified with the same state.
_TEST_SHARE = 0.2
_VALIDATION_SHARE = 0.2
_SPLIT_RANDOM_STATE = 0

# Both splits are stratified and every part needs each class: the test part for its
# ROC-AUC and PR-AUC, the validation part to choose a threshold. With 3 rows of a
# class the validation part gets none of them; with 4 or more each part gets one.
_MIN_ROWS_PER_CLASS = 4

# Features reach the model as float32; a larger finite value would become infinite.
_FLOAT32_MAX = float(np.finfo(np.float32).max)

# Separators that a CSV written elsewhere may use instead of commas.
_OTHER_SEPARATORS = (";", "\t", "|")


@dataclass(frozen=True)
class Dataset:
    """Validated rows ready for training.

    Attributes:
        features: float32 array (n, 29), columns in ``FEATURE_COLUMNS`` order.
        labels: int8 array of 0 and 1.
        source: the CSV path, or ``"synthetic"``.
        sha256: hex digest of the CSV file bytes; None for synthetic data.
        seed: the generator seed for synthetic data; None for a file.
    """

    features: np.ndarray
    labels: np.ndarray
    source: str
    sha256: str | None
    seed: int | None

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class Split:
    """Train, validation and test parts; the test part serves the final report only."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    def test_rows_seen_in_training(self) -> dict[str, int]:
        """Count test rows whose features also appear in the train or validation part.

        Exact copies on both sides of the split make test figures optimistic: the
        public dataset repeats some fraud rows, and the original split keeps them.
        """
        seen = {row.tobytes() for row in self.x_train}
        seen.update(row.tobytes() for row in self.x_val)
        copied = np.array([row.tobytes() in seen for row in self.x_test], dtype=bool)
        return {
            "rows": int(copied.sum()),
            "frauds": int(np.sum(copied & (self.y_test == 1))),
        }

    def training_part(self) -> tuple[np.ndarray, np.ndarray]:
        """Return the whole training part: the train rows, then the validation rows.

        These are the 80% of the rows the original recipe trained on, and the rows a
        refit trains on once the epochs and threshold have been chosen.
        """
        return (
            np.concatenate([self.x_train, self.x_val]),
            np.concatenate([self.y_train, self.y_val]),
        )

    def row_counts(self) -> dict[str, int]:
        """Return the number of rows per part."""
        return {
            "train": len(self.y_train),
            "validation": len(self.y_val),
            "test": len(self.y_test),
        }


def load_csv(path: Path) -> Dataset:
    """Read and validate a CSV in the credit-card dataset's schema.

    Raises:
        DataValidationError: the file is missing or unreadable, or a required
            column is absent, not numeric, not finite, a label is not 0 or 1, or a
            class has fewer rows than a stratified split needs.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataValidationError(
            f"cannot read training data {path}: {exc.strerror or exc}; "
            "pass an existing CSV file with --data"
        ) from exc
    digest = hashlib.sha256(raw).hexdigest()

    try:
        # The bytes just hashed are parsed, so the digest describes the rows used.
        # Strings first, so a bad cell can be reported exactly as written. The
        # header is read as a row: pandas would otherwise take the first field of
        # rows one field wider than the header as an index and shift the columns.
        table = pd.read_csv(
            io.BytesIO(raw), dtype=str, header=None, keep_default_na=False
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataValidationError(
            f"cannot parse {path} as CSV with a header line: {exc}"
        ) from exc
    names = [str(name).strip() for name in table.iloc[0].fillna("")]
    _check_unique_names(names, path)
    frame = table.iloc[1:].fillna("").reset_index(drop=True)
    frame.columns = pd.Index(names)

    features, labels = _validate(frame, path)
    logger.info(
        "training data loaded path=%s rows=%d frauds=%d sha256=%s",
        path,
        len(labels),
        int(labels.sum()),
        digest[:12],
    )
    return Dataset(features, labels, source=str(path), sha256=digest, seed=None)


def from_synthetic(n_rows: int, seed: int) -> Dataset:
    """Generate ``n_rows`` synthetic rows and check they can be split.

    Raises:
        DataValidationError: too few rows for a stratified split of the frauds.
    """
    data = generate(n_rows, seed=seed)
    _check_class_counts(
        data.labels,
        f"synthetic data of {n_rows} rows",
        fix=f"generate at least {_min_synthetic_rows()} rows with --synthetic N",
    )
    logger.info(
        "synthetic data generated rows=%d frauds=%d seed=%d",
        n_rows,
        int(data.labels.sum()),
        seed,
    )
    return Dataset(
        data.features.astype(np.float32),
        data.labels,
        source="synthetic",
        sha256=None,
        seed=seed,
    )


def write_csv(data: SyntheticData, path: Path) -> None:
    """Write generated rows as a CSV in the real dataset's column layout."""
    frame = pd.DataFrame(data.features, columns=list(FEATURE_COLUMNS))
    frame.insert(0, "Time", data.time)
    frame[LABEL_COLUMN] = data.labels
    frame.to_csv(path, index=False, float_format="%.15g")


def split(dataset: Dataset) -> Split:
    """Split into stratified train, validation and test parts, the same every time."""
    x_rest, x_test, y_rest, y_test = train_test_split(
        dataset.features,
        dataset.labels,
        test_size=_TEST_SHARE,
        stratify=dataset.labels,
        random_state=_SPLIT_RANDOM_STATE,
    )
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest,
        y_rest,
        test_size=_VALIDATION_SHARE,
        stratify=y_rest,
        random_state=_SPLIT_RANDOM_STATE,
    )
    return Split(x_train, y_train, x_val, y_val, x_test, y_test)


def _validate(frame: pd.DataFrame, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Return features and labels, or raise naming the first broken rule."""
    required = [*FEATURE_COLUMNS, LABEL_COLUMN]
    missing = [name for name in required if name not in frame.columns]
    if missing:
        hint = ""
        if len(frame.columns) == 1:
            only = str(frame.columns[0])
            for separator in _OTHER_SEPARATORS:
                if separator in only:
                    hint = (
                        f"; the header looks separated by {separator!r}, "
                        "write the file comma-separated"
                    )
                    break
        raise DataValidationError(
            f"{path} lacks required column(s) {', '.join(missing)}; expected "
            f"V1..V28, Amount and {LABEL_COLUMN} (Time optional), found "
            f"{', '.join(map(repr, map(str, frame.columns))) or 'no columns'}{hint}"
        )
    if frame.empty:
        raise DataValidationError(f"{path} has a header line but no data rows")

    values = np.empty((len(frame), len(required)), dtype=np.float64)
    for index, name in enumerate(required):
        values[:, index] = _numeric_column(frame[name], name, path)

    labels = values[:, -1]
    bad = np.flatnonzero((labels != 0.0) & (labels != 1.0))
    if bad.size:
        row = int(bad[0])
        raise DataValidationError(
            f"{path}: column {LABEL_COLUMN} row {row + 1}: expected 0 or 1, "
            f"found {frame[LABEL_COLUMN].iloc[row]!r}"
        )
    int_labels = labels.astype(np.int8)
    _check_class_counts(int_labels, str(path), fix="add rows of that class to the file")
    return values[:, :-1].astype(np.float32), int_labels


def _numeric_column(column: pd.Series, name: str, path: Path) -> np.ndarray:
    """Convert a column of strings to finite floats, or raise at the first bad cell."""
    text = column.str.strip()
    numbers = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)
    with np.errstate(invalid="ignore"):
        bad = np.flatnonzero(~(np.abs(numbers) <= _FLOAT32_MAX))
    if bad.size:
        row = int(bad[0])
        found = column.iloc[row]
        if found.strip() == "":
            problem = "found an empty cell"
        elif np.isnan(numbers[row]) and found.strip().lower() not in ("nan", "-nan"):
            problem = f"found {found!r}, which is not a number"
        elif np.isfinite(numbers[row]):
            problem = (
                f"found {found!r}, which is beyond the float32 range the model "
                f"reads (magnitude at most {_FLOAT32_MAX:.3g})"
            )
        else:
            problem = f"found {found!r}, which is not finite"
        raise DataValidationError(
            f"{path}: column {name} row {row + 1}: expected a finite number, {problem}"
        )
    return numbers


def _check_unique_names(names: list[str], path: Path) -> None:
    """Raise when a column name repeats, since either column could be meant."""
    seen: set[str] = set()
    for position, name in enumerate(names, start=1):
        if name in seen:
            raise DataValidationError(
                f"{path}: column {name!r} appears more than once (again at "
                f"position {position}); expected each column name once, rename or "
                "remove the extra column"
            )
        seen.add(name)


def _check_class_counts(labels: np.ndarray, what: str, *, fix: str) -> None:
    """Raise unless each class has enough rows for the stratified splits."""
    frauds = int(labels.sum())
    legit = len(labels) - frauds
    for count, name in ((legit, "legitimate (0)"), (frauds, "fraud (1)")):
        if count < _MIN_ROWS_PER_CLASS:
            raise DataValidationError(
                f"{what} has {count} {name} row(s) in column {LABEL_COLUMN}; "
                f"training needs both classes with at least {_MIN_ROWS_PER_CLASS} "
                "rows each, so that the train, validation and test parts all hold "
                f"both; {fix}"
            )


def _min_synthetic_rows() -> int:
    """Return the fewest generated rows that hold enough frauds for the split."""
    n_rows = _MIN_ROWS_PER_CLASS
    while round(n_rows * FRAUD_RATE) < _MIN_ROWS_PER_CLASS:
        n_rows += 1
    return n_rows
