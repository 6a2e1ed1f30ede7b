"""Synthetic card transactions shaped after the public credit-card fraud data.

Rows have the real data's schema (``V1``..``V28``, ``Amount``, a time in seconds and
a 0/1 label) and its fraud share of 0.173%. Legitimate rows scatter around zero with
the per-component spreads of the real legitimate rows and heavier tails than a
normal law; fraudulent rows are pulled towards the real per-component fraud means by
a random strength per row, so some frauds stand far out and some hide among the
legitimate rows. A model learns to separate the classes well but not perfectly.

Only numpy is imported, so the worker and the replay tool can use this module
without the training extras.

Note:
    The components are drawn independently given the class and the fraud strength.
    The real components are uncorrelated overall but not within the fraud class, so
    this data is easier to explain and a little easier to learn than the real one;
    models trained here say nothing about accuracy on real traffic.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

__all__ = ["FEATURE_COLUMNS", "FRAUD_RATE", "SyntheticData", "generate"]

logger = logging.getLogger(__name__)

FEATURE_COLUMNS: tuple[str, ...] = (*(f"V{i}" for i in range(1, 29)), "Amount")

# Share of fraud in the full public dataset (492 of 284,807 rows).
FRAUD_RATE = 0.001727

# Mean gap between transactions in the full dataset (172,792 s over 284,807 rows).
_MEAN_GAP_S = 0.6067

# Per-component spread of legitimate rows, rounded from the real data's summary.
_LEGIT_STD = np.array(
    [1.94, 1.80, 1.46, 1.42, 1.33, 1.33, 1.16, 1.15, 1.10, 1.05, 1.02, 1.01, 1.03, 0.90]
    + [0.94, 0.83, 0.76, 0.81, 0.81, 0.90, 0.72, 0.72, 0.54, 0.61, 0.51, 0.49, 0.38]
    + [0.36]
)

# Per-component mean of fraudulent rows, rounded from the real data's summary.
_FRAUD_MEAN = np.array(
    [-4.7, 3.6, -6.9, 4.5, -3.1, -1.4, -5.4, 0.6, -2.5, -5.5, 3.8, -6.3, -0.1, -7.1]
    + [-0.1, -4.2, -6.6, -2.2, 0.7, 0.4, 0.9, 0.0, 0.0, -0.1, 0.1, 0.1, 0.3, 0.1]
)

# Fraud strength per row is Gamma(shape, scale): mean 0.6 of the real fraud offset,
# and about one fraud in seven has less than 0.2 of it, close enough to the
# legitimate cloud to be missed. Tuned so that a small network reaches a test
# PR-AUC near 0.8 on 200,000 rows rather than the near-perfect 0.95+ that the full
# real offsets would give at this fraud share.
_STRENGTH_SHAPE = 2.0
_STRENGTH_SCALE = 0.3

# Frauds also spread wider than legitimate rows: the real fraud spreads are 1.5 to
# 6 times the legitimate ones. Spread grows with strength by this factor.
_FRAUD_SPREAD_PER_STRENGTH = 1.5

# Degrees of freedom of the Student t noise of legitimate rows: heavy enough tails
# that a few legitimate rows look odd, as real ones do.
_LEGIT_TAIL_DF = 5.0

# Amounts are log-normal. Legitimate: median 20, mean about 89 euros. Fraud: a
# third are test charges under 2 euros, the rest median 30 with a long tail.
_LEGIT_LOG_AMOUNT_MEAN, _LEGIT_LOG_AMOUNT_SIGMA = float(np.log(20.0)), 1.7
_FRAUD_SMALL_SHARE = 0.33
_FRAUD_LOG_AMOUNT_MEAN, _FRAUD_LOG_AMOUNT_SIGMA = float(np.log(30.0)), 1.6
_MAX_AMOUNT = 25_691.16  # the largest amount in the full dataset


@dataclass(frozen=True)
class SyntheticData:
    """Generated transactions, in time order.

    Attributes:
        time: seconds since the first transaction, float64, non-decreasing from 0.
        features: float64 array of shape (n, 29), columns in ``FEATURE_COLUMNS`` order.
        labels: int8 array of 0 (legitimate) and 1 (fraud).
    """

    time: np.ndarray
    features: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def generate(n_rows: int, seed: int = 0) -> SyntheticData:
    """Generate ``n_rows`` transactions, the same ones for the same arguments.

    The fraud count is ``round(n_rows * FRAUD_RATE)``, at least one when
    ``n_rows >= 2``, so both classes are present in any set of two or more rows.

    Raises:
        ValueError: ``n_rows`` is negative.
    """
    if n_rows < 0:
        raise ValueError(f"n_rows must be >= 0, got {n_rows}")
    rng = np.random.default_rng(seed)

    # 1. labels: a fixed number of frauds at random positions
    n_fraud = round(n_rows * FRAUD_RATE)
    if n_rows >= 2:
        n_fraud = max(n_fraud, 1)
    labels = np.zeros(n_rows, dtype=np.int8)
    labels[rng.choice(n_rows, size=n_fraud, replace=False)] = 1
    is_fraud = labels == 1

    # 2. components: heavy-tailed noise around zero, frauds shifted and widened
    df = _LEGIT_TAIL_DF
    unit_noise = rng.standard_t(df, size=(n_rows, 28)) / np.sqrt(df / (df - 2.0))
    components = unit_noise * _LEGIT_STD
    strength = rng.gamma(_STRENGTH_SHAPE, _STRENGTH_SCALE, size=(n_fraud, 1))
    widen = 1.0 + _FRAUD_SPREAD_PER_STRENGTH * strength
    components[is_fraud] = components[is_fraud] * widen + strength * _FRAUD_MEAN

    # 3. amounts in euros with cents
    amount: np.ndarray = rng.lognormal(
        _LEGIT_LOG_AMOUNT_MEAN, _LEGIT_LOG_AMOUNT_SIGMA, n_rows
    )
    small = rng.uniform(0.0, 2.0, size=n_fraud)
    large = rng.lognormal(_FRAUD_LOG_AMOUNT_MEAN, _FRAUD_LOG_AMOUNT_SIGMA, n_fraud)
    amount[is_fraud] = np.where(rng.random(n_fraud) < _FRAUD_SMALL_SHARE, small, large)
    amount = np.round(np.clip(amount, 0.0, _MAX_AMOUNT), 2)

    # 4. whole-second timestamps from exponential gaps
    gaps = rng.exponential(_MEAN_GAP_S, size=n_rows)
    if n_rows:
        gaps[0] = 0.0
    time = np.floor(np.cumsum(gaps))

    features = np.column_stack([components, amount])
    logger.debug("generated synthetic rows=%d frauds=%d seed=%d", n_rows, n_fraud, seed)
    return SyntheticData(time=time, features=features, labels=labels)
