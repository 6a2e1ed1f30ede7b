"""Offsets become safe only when a batch's outputs, and all earlier ones, are acked."""

from __future__ import annotations

import numpy as np

from worker.offsets import OffsetLedger, PendingBatch

_TS = np.zeros(0, dtype=np.int64)


def _batch(ledger: OffsetLedger, outputs: int, **offsets: int) -> PendingBatch:
    batch = PendingBatch({("t", int(p[1:])): o for p, o in offsets.items()}, _TS)
    batch.expect(outputs)
    batch.seal()
    ledger.add(batch)
    return batch


def test_offsets_commit_only_after_alerts_delivered():
    ledger = OffsetLedger()
    batch = _batch(ledger, 2, p0=10)

    ledger.collect()
    assert ledger.uncommitted() == {}

    batch.on_delivery(None, None)
    ledger.collect()
    assert ledger.uncommitted() == {}

    batch.on_delivery(None, None)
    ledger.collect()
    assert ledger.uncommitted() == {("t", 0): 10}


def test_batch_without_outputs_waits_for_earlier_batches():
    ledger = OffsetLedger()
    first = _batch(ledger, 1, p0=5)
    _batch(ledger, 0, p0=9, p1=3)

    ledger.collect()
    assert ledger.safe_offsets() == {}

    first.on_delivery(None, None)
    ledger.collect()
    assert ledger.safe_offsets() == {("t", 0): 9, ("t", 1): 3}


def test_failed_delivery_stops_offsets_for_good():
    ledger = OffsetLedger()
    _batch(ledger, 0, p0=4)
    failed = _batch(ledger, 1, p0=8)
    _batch(ledger, 0, p0=12)

    failed.on_delivery("broker said no", None)
    ledger.collect()

    assert ledger.failure is failed
    assert ledger.safe_offsets() == {("t", 0): 4}


def test_committed_offsets_are_not_committed_twice_and_forgotten_on_revoke():
    ledger = OffsetLedger()
    _batch(ledger, 0, p0=4, p1=2)
    ledger.collect()
    ledger.mark_committed({("t", 0): 4})

    assert ledger.uncommitted() == {("t", 1): 2}

    ledger.forget([("t", 1)])
    assert ledger.safe_offsets() == {("t", 0): 4}


def test_refusals_reach_the_error_callback():
    seen = []
    batch = PendingBatch({("t", 0): 1}, _TS, seen.append)
    batch.expect(1)
    batch.on_delivery("refused", None)
    batch.seal()
    assert seen == ["refused"] and batch.failed and batch.complete


def test_late_ack_after_revocation_commits_nothing_for_the_lost_partition():
    ledger = OffsetLedger()
    batch = _batch(ledger, 1, p0=7, p1=3)

    ledger.forget([("t", 1)])
    batch.on_delivery(None, None)
    ledger.collect()

    assert ledger.safe_offsets() == {("t", 0): 7}


def test_offsets_of_an_async_commit_without_outcome_are_sent_by_the_last_commit():
    ledger = OffsetLedger()
    _batch(ledger, 0, p0=4, p1=2)
    ledger.collect()
    ledger.mark_committed({("t", 0): 4, ("t", 1): 2})

    assert ledger.uncommitted() == {}
    assert ledger.unconfirmed() == {("t", 0): 4, ("t", 1): 2}

    ledger.confirm({("t", 0): 4})
    assert ledger.unconfirmed() == {("t", 1): 2}

    ledger.mark_committed({("t", 1): 2}, confirmed=True)
    assert ledger.unconfirmed() == {}
