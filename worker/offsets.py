"""Which offsets are safe to commit: outputs of them and all earlier ones are acked.

Each micro-batch is one ``PendingBatch``. Every output record of the batch is produced
with the batch's bound ``on_delivery`` as callback, so no per-record object is made.
A batch is complete once all its outputs are acknowledged (a batch without outputs is
complete when sealed). ``OffsetLedger`` keeps batches in consumption order and only
moves a partition's safe offset forward over a prefix of complete batches, so an
offset is never committed while an earlier output is still unacknowledged.

Note:
    Safety is tracked per batch, not per record: one slow output holds back the
    commits of its whole batch. The cost is at most one batch of re-processing
    after a crash, which at-least-once allows anyway.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = ["OffsetLedger", "PendingBatch", "TopicPartitionKey"]

logger = logging.getLogger(__name__)

TopicPartitionKey = tuple[str, int]


class PendingBatch:
    """Outputs of one batch on their way to the broker.

    Attributes:
        next_offsets: per partition, the offset after the batch's last record.
        timestamps_ms: Kafka timestamps of the batch's records, for latency.
        remaining: outputs produced and not yet acknowledged.
        errors: delivery errors reported for this batch (empty when all went well).
        done_at: wall-clock time the last output was acknowledged, or None.
    """

    __slots__ = (
        "next_offsets",
        "timestamps_ms",
        "remaining",
        "errors",
        "done_at",
        "_sealed",
        "_on_error",
    )

    def __init__(
        self,
        next_offsets: dict[TopicPartitionKey, int],
        timestamps_ms: np.ndarray,
        on_error: Any = None,
    ) -> None:
        self.next_offsets = next_offsets
        self.timestamps_ms = timestamps_ms
        self.remaining = 0
        self.errors: list[Any] = []
        self.done_at: float | None = None
        self._sealed = False
        self._on_error = on_error

    def expect(self, count: int = 1) -> None:
        """Count ``count`` more outputs that are about to be produced."""
        self.remaining += count

    def on_delivery(self, err: Any, _msg: Any) -> None:
        """Delivery report callback shared by every output of the batch."""
        if err is not None:
            self.errors.append(err)
            if self._on_error is not None:
                self._on_error(err)
        self.remaining -= 1
        if self.remaining == 0 and self._sealed:
            self.done_at = time.time()

    def seal(self) -> None:
        """Mark that every output of the batch has been produced."""
        self._sealed = True
        if self.remaining == 0:
            self.done_at = time.time()

    @property
    def complete(self) -> bool:
        """True once sealed and every output acknowledged."""
        return self.done_at is not None

    @property
    def failed(self) -> bool:
        """True when at least one output was refused."""
        return bool(self.errors)


class OffsetLedger:
    """Tracks pending batches and the safe offset of each partition."""

    def __init__(self) -> None:
        self._queue: deque[PendingBatch] = deque()
        self._safe: dict[TopicPartitionKey, int] = {}
        self._committed: dict[TopicPartitionKey, int] = {}
        self._confirmed: dict[TopicPartitionKey, int] = {}
        self.failure: PendingBatch | None = None

    def add(self, batch: PendingBatch) -> None:
        """Append a batch in consumption order."""
        self._queue.append(batch)

    @property
    def pending(self) -> int:
        """Number of batches not yet complete."""
        return len(self._queue)

    def collect(self) -> list[PendingBatch]:
        """Retire the complete prefix of batches and return them.

        A failed batch stops the prefix for good and is kept in ``failure``; no
        offset of it or of any later batch becomes safe.
        """
        done: list[PendingBatch] = []
        queue = self._queue
        while queue and self.failure is None:
            head = queue[0]
            if head.failed:
                self.failure = head
                break
            if not head.complete:
                break
            queue.popleft()
            self._safe.update(head.next_offsets)
            done.append(head)
        return done

    def safe_offsets(self) -> dict[TopicPartitionKey, int]:
        """Return, per partition, the offset to commit (the next one to process)."""
        return dict(self._safe)

    def uncommitted(self) -> dict[TopicPartitionKey, int]:
        """Return the safe offsets that differ from the last committed ones."""
        return {
            tp: offset
            for tp, offset in self._safe.items()
            if self._committed.get(tp) != offset
        }

    def unconfirmed(self) -> dict[TopicPartitionKey, int]:
        """Return the safe offsets the broker has not confirmed as committed.

        Unlike ``uncommitted`` this includes offsets handed to an asynchronous commit
        whose outcome is not known yet; a last, synchronous commit sends these.
        """
        return {
            tp: offset
            for tp, offset in self._safe.items()
            if self._confirmed.get(tp) != offset
        }

    def mark_committed(
        self, offsets: dict[TopicPartitionKey, int], confirmed: bool = False
    ) -> None:
        """Record that ``offsets`` were handed to a commit call.

        Args:
            offsets: per partition, the offset handed to the commit call.
            confirmed: the call was synchronous and succeeded, so the broker holds
                these offsets.
        """
        self._committed.update(offsets)
        if confirmed:
            self._confirmed.update(offsets)

    def confirm(self, offsets: dict[TopicPartitionKey, int]) -> None:
        """Record that the broker confirmed an asynchronous commit of ``offsets``."""
        self._confirmed.update(offsets)

    def retry_commit(self, partitions: Iterable[TopicPartitionKey]) -> None:
        """Treat the last commit of ``partitions`` as not done, so it is sent again."""
        for tp in partitions:
            self._committed.pop(tp, None)

    def forget(self, partitions: Iterable[TopicPartitionKey]) -> None:
        """Drop the state of partitions this consumer no longer owns.

        Batches still waiting for acks lose those partitions too, so a late ack can
        never commit an offset of a partition another consumer now owns.
        """
        for tp in partitions:
            self._safe.pop(tp, None)
            self._committed.pop(tp, None)
            self._confirmed.pop(tp, None)
            for batch in self._queue:
                batch.next_offsets.pop(tp, None)
