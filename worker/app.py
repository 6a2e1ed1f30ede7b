"""The worker's run loop: Kafka in, micro-batches through the model, records out.

One pass of the loop, in order:

1. poll a batch of up to ``max_batch_size`` records, waiting ``max_batch_wait_ms``;
2. decode them into the float32 batch matrix, setting bad ones aside;
3. score the matrix with one onnxruntime call;
4. produce alerts, optional scores and dead letters;
5. serve delivery reports and retire batches whose outputs are all acknowledged;
6. commit the offsets that are now safe (at a bounded interval).

In exactly-once mode steps 4 to 6 become one Kafka transaction per batch: the outputs
and the consumed offsets commit together or not at all.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)

from worker.config import Settings
from worker.decode import DeadLetter, DecodedBatch, Decoder
from worker.errors import (
    ConfigError,
    DeliveryError,
    FencedError,
    FraudWorkerError,
    KafkaAuthError,
    KafkaFatalError,
    KafkaTlsError,
)
from worker.liveness import STATS_INTERVAL_MS, GroupLiveness, stats_interval_ms
from worker.metrics import Metrics
from worker.model import Model
from worker.offsets import OffsetLedger, PendingBatch, TopicPartitionKey
from worker.outputs import (
    alert_value,
    dead_letter_headers,
    fit_dead_letter,
    rfc3339_ms,
    score_value,
)
from worker.redaction import RedactingFilter, Redactor, secret_values
from worker.watchdog import Watchdog

__all__ = ["Worker"]

logger = logging.getLogger(__name__)

# Every Worker adds its secret Kafka settings here; they are redacted from this
# module's log lines and from librdkafka's, which go to the "worker.kafka" logger.
_LOG_REDACTOR = Redactor()
_LOG_FILTER = RedactingFilter(_LOG_REDACTOR)
logger.addFilter(_LOG_FILTER)
logging.getLogger("worker.kafka").addFilter(_LOG_FILTER)

# Shutdown and revocation wait this long for outstanding acks; past it, offsets of the
# unacknowledged batches are simply not committed.
_FLUSH_TIMEOUT_S = 30.0
# Transaction calls block on the broker; this bounds one attempt before it is retried
# (short, so that a refused login is noticed between attempts).
_TXN_TIMEOUT_S = 5.0
# A transaction call blocked this long will never return (see worker.watchdog).
_TXN_STALL_S = 60.0
# Closing the consumer leaves the group through the group coordinator; while no broker
# answers, librdkafka waits for it without limit, so shutdown waits this long only.
_CLOSE_TIMEOUT_S = 10.0
# Lag needs one cached watermark lookup per partition; every few seconds is plenty.
_LAG_INTERVAL_S = 5.0
# While outputs await their acks, poll at least this often so that acks (and with
# them commits and the latency metric) are seen within about a millisecond.
_ACK_POLL_S = 0.001
# When librdkafka's queue is full, serve delivery reports this long and retry.
_QUEUE_FULL_WAIT_S = 0.05
# A consumer error repeated every poll would flood the log; repeat at most this often.
_ERROR_LOG_INTERVAL_S = 10.0
# Longest one blocking consume() call may take, so that stop() and fatal errors are
# seen this soon even when max_batch_wait_ms is long (up to 60 s).
_CONSUME_SLICE_S = 0.1
# Longest time the broker may hold a fetch; see _consumer_config.
_FETCH_WAIT_MAX_MS = 50
# librdkafka's own default for message.max.bytes, which bounds every produced record.
_MESSAGE_MAX_BYTES = 1_000_000

_AUTH_CODES = frozenset(
    {KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED}
)
# OpenSSL's reason when the broker's certificate does not verify (unknown CA, wrong
# host, expired). librdkafka reports it as _SSL, the code of transient TLS failures
# too, so only this text tells a setting that no retry can fix.
_TLS_VERIFY_FAILED = "certificate verify failed"
_FENCING_CODES = frozenset(
    {
        KafkaError._FENCED,
        KafkaError.PRODUCER_FENCED,
        KafkaError.INVALID_PRODUCER_EPOCH,
        KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
    }
)

ClientFactory = Callable[[dict[str, Any]], Any]


class Worker:
    """Consume, score and publish until ``stop()`` is called or a fatal error occurs.

    Args:
        settings: validated settings.
        model: the loaded model; its feature names fix the decoding.
        metrics: metrics registered on the registry the HTTP server exposes.
        consumer_factory: builds the consumer from a librdkafka config dict.
        producer_factory: builds the producer from a librdkafka config dict.
        watchdog: ends the process when a transaction call blocks for good.

    Note:
        In at-least-once mode an alert can repeat after a crash or a rebalance, for
        at most the batches whose offsets were not yet committed; consumers dedupe on
        transaction_id. Exactly-once mode removes the repeats for read_committed
        readers.
    """

    def __init__(
        self,
        settings: Settings,
        model: Model,
        metrics: Metrics,
        consumer_factory: ClientFactory = Consumer,
        producer_factory: ClientFactory = Producer,
        watchdog: Watchdog | None = None,
    ) -> None:
        self.settings = settings
        self.model = model
        self.metrics = metrics
        self.threshold = (
            settings.threshold
            if settings.threshold is not None
            else model.info.threshold
        )
        self.exactly_once = settings.processing_guarantee == "exactly-once"
        self.decoder = Decoder(
            model.info.features, settings.alert_key_field, settings.max_event_bytes
        )
        self._matrix = np.zeros((settings.max_batch_size, model.width), np.float32)
        self._ledger = OffsetLedger()
        self._positions: dict[TopicPartitionKey, int] = {}
        self._assigned: set[TopicPartitionKey] = set()
        self._stopping = False
        # Counts revocations and losses, so the loop knows when a consume() call may
        # have returned records of a partition it no longer owns.
        self._revocations = 0
        self._fatal: KafkaError | None = None
        self._auth_error: KafkaError | None = None
        self._tls_error: KafkaError | None = None
        self._watchdog = watchdog or Watchdog(_TXN_STALL_S)
        self._last_error_log = 0.0
        self._abort_log = _Throttle(_ERROR_LOG_INTERVAL_S)
        self._commit_log = _Throttle(_ERROR_LOG_INTERVAL_S)
        self._unreachable_log = _Throttle(_ERROR_LOG_INTERVAL_S)
        self._kafka_log = _LibrdkafkaLog(
            logging.getLogger("worker.kafka"), _ERROR_LOG_INTERVAL_S
        )
        self.liveness = self._make_liveness()
        secrets = secret_values(settings.kafka)
        self._redactor = Redactor(secrets)
        _LOG_REDACTOR.add(secrets)
        try:
            self._producer = producer_factory(self._producer_config())
            self._consumer = consumer_factory(self._consumer_config())
        except KafkaException as exc:
            error = ConfigError(
                f"expected librdkafka to accept the Kafka settings, found: "
                f"{exc.args[0]}; fix --kafka-config or the -X flags"
            )
            error.__cause__ = exc
            # A quoted secret is redacted, and the library error that quotes it dropped.
            self._redactor.scrub_error(error)
            raise error from error.__cause__
        # librdkafka accepted the setting, so it is an integer; dead letters are cut
        # to fit it (see outputs.fit_dead_letter).
        self._max_record_bytes = int(
            settings.client_config("producer").get(
                "message.max.bytes", _MESSAGE_MAX_BYTES
            )
        )
        metrics.model_info.labels(model.info.model_version, f"{self.threshold:g}").set(
            1
        )

    # -- lifecycle -------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """True when partitions are assigned (the model is loaded by construction)."""
        return bool(self._assigned) and not self._stopping

    def stop(self) -> None:
        """Ask the loop to finish the batch in flight and shut down; signal-safe."""
        self._stopping = True

    def run(self) -> int:
        """Run until stopped; return the process exit code (0 after a clean stop).

        Raises:
            DeliveryError: an output was refused; safe offsets were committed first.
            KafkaFatalError: librdkafka reported a fatal error.
            FencedError: exactly-once mode, another instance took over.

        Secret Kafka settings that librdkafka quotes are redacted from the messages
        of these errors.
        """
        try:
            return self._run()
        except FraudWorkerError as exc:
            self._redactor.scrub_error(exc)
            raise

    def _run(self) -> int:
        settings = self.settings
        if self.exactly_once:
            self._call_txn(self._producer.init_transactions, _TXN_TIMEOUT_S)
        self._consumer.subscribe(
            [settings.input_topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        logger.info("worker started %s", settings.describe())
        clean = False
        try:
            if self.exactly_once:
                self._run_transactional()
            else:
                self._run_at_least_once()
            clean = True
        except KafkaException as exc:
            raise KafkaFatalError(
                f"expected the Kafka client to keep working, found {exc.args[0]}; "
                "the worker stops; restart it (offsets stop at the last safe batch)"
            ) from exc
        finally:
            self._shutdown(clean)
        return 0

    def _shutdown(self, clean: bool) -> None:
        self._stopping = True
        self.metrics.ready.set(0)
        logger.info("worker stopping clean=%s", clean)
        if not self.exactly_once:
            self._producer.flush(_FLUSH_TIMEOUT_S)
            self._retire()
            failure = self._ledger.failure
            if clean and failure is not None:
                # Refused while stopping; otherwise the DeliveryError reports it.
                logger.error(
                    "outputs refused by the broker count=%d first: %s; offsets stop "
                    "before their batch",
                    len(failure.errors),
                    failure.errors[0],
                )
            self._commit(asynchronous=False)
        self._close_consumer()
        logger.info("worker stopped")

    def _close_consumer(self) -> None:
        failures: list[BaseException] = []

        def close() -> None:
            try:
                self._consumer.close()
            except (KafkaException, RuntimeError) as exc:
                failures.append(exc)

        closer = threading.Thread(target=close, name="consumer-close", daemon=True)
        closer.start()
        closer.join(_CLOSE_TIMEOUT_S)
        if closer.is_alive():
            logger.warning(
                "consumer close unfinished after %.0f s (no group coordinator "
                "answers); exiting anyway, the broker expires the membership",
                _CLOSE_TIMEOUT_S,
            )
        elif failures:
            logger.warning("consumer close failed: %s", failures[0])

    # -- at-least-once ---------------------------------------------------------

    def _run_at_least_once(self) -> None:
        producer = self._producer
        size = self.settings.max_batch_size
        wait_s = self.settings.max_batch_wait_ms / 1000.0
        commit_every_s = self.settings.commit_interval_ms / 1000.0
        next_commit = time.monotonic() + commit_every_s
        next_lag = time.monotonic() + _LAG_INTERVAL_S
        ledger = self._ledger
        while not self._stopping:
            # 1. poll a batch
            timeout = min(wait_s, _ACK_POLL_S) if ledger.pending else wait_s
            revocations = self._revocations
            messages = self._consume(size, timeout)
            self._raise_if_fatal()
            if self._revocations != revocations and messages:
                messages = self._owned(messages)

            # 2.-4. decode, score, produce
            if messages:
                try:
                    batch = self._process(messages)
                except _BatchAbandoned:
                    # Not in the ledger, so no offset of it is committed.
                    logger.warning(
                        "stopped while librdkafka's queue was full; the last batch "
                        "is left uncommitted for the next run count=%d",
                        len(messages),
                    )
                    break
                if batch is not None:
                    self._ledger.add(batch)

            # 5. delivery reports, then retire fully acknowledged batches
            producer.poll(0)
            self._retire()
            failure = self._ledger.failure
            if failure is not None:
                self._commit(asynchronous=False)
                raise DeliveryError(
                    f"expected the broker to accept every output, found "
                    f"{failure.errors[0]} ({len(failure.errors)} refused in one "
                    "batch); offsets stop before that batch. Check the output "
                    "topics exist and accept these records, then restart"
                )

            # 6. commit safe offsets
            now = time.monotonic()
            if now >= next_commit:
                self._commit(asynchronous=True)
                next_commit = now + commit_every_s
            if now >= next_lag:
                self._update_lag()
                next_lag = now + _LAG_INTERVAL_S

    def _consume(self, size: int, timeout_s: float) -> list[Any]:
        """Return up to ``size`` records that arrive within ``timeout_s``.

        One batch, as one ``consume(size, timeout_s)`` call would return it, but
        gathered in calls of at most ``_CONSUME_SLICE_S``: the batch ends when full or
        when the wait is over, or early, with what it holds, once stop() is called.
        """
        consume = self._consumer.consume
        if timeout_s <= _CONSUME_SLICE_S:
            return consume(size, timeout_s)
        deadline = time.monotonic() + timeout_s
        messages = consume(size, _CONSUME_SLICE_S)
        while len(messages) < size and not self._stopping:
            self._raise_if_fatal()
            left = deadline - time.monotonic()
            if left <= 0:
                break
            messages.extend(consume(size - len(messages), min(left, _CONSUME_SLICE_S)))
        return messages

    def _retire(self) -> None:
        for batch in self._ledger.collect():
            self._observe_latency(batch)

    def _commit(self, asynchronous: bool) -> None:
        # A synchronous commit is the last word (shutdown, a refused output): it
        # also resends offsets whose asynchronous commit has no known outcome yet.
        ledger = self._ledger
        offsets = ledger.uncommitted() if asynchronous else ledger.unconfirmed()
        if not offsets:
            return
        partitions = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        try:
            self._consumer.commit(offsets=partitions, asynchronous=asynchronous)
        except KafkaException as exc:
            held = self._commit_log.allow()
            if held is not None:
                logger.warning(
                    "offset commit failed: %s (earlier failures not logged=%d)",
                    exc.args[0],
                    held,
                )
            return
        ledger.mark_committed(offsets, confirmed=not asynchronous)
        if not asynchronous:
            logger.debug("offsets committed %s", offsets)

    # -- exactly-once ----------------------------------------------------------

    def _run_transactional(self) -> None:
        producer = self._producer
        size = self.settings.max_batch_size
        wait_s = self.settings.max_batch_wait_ms / 1000.0
        next_lag = time.monotonic() + _LAG_INTERVAL_S
        while not self._stopping:
            # Lag first, so that idle polls update it too and it falls to 0 once the
            # worker has caught up.
            now = time.monotonic()
            if now >= next_lag:
                self._update_lag()
                next_lag = now + _LAG_INTERVAL_S

            # 1. poll a batch
            revocations = self._revocations
            messages = self._consume(size, wait_s)
            self._raise_if_fatal()
            if self._revocations != revocations and messages:
                messages = self._owned(messages)
            if not messages:
                producer.poll(0)
                continue

            # 2.-4. decode, score, produce inside a transaction
            self._call_txn(producer.begin_transaction)
            try:
                batch = self._process(messages)
            except _BatchAbandoned:
                self._abandon_transaction(len(messages))
                break
            if batch is None:
                self._call_txn(producer.abort_transaction, _TXN_TIMEOUT_S)
                continue

            # 5.-6. the consumed offsets join the transaction, which commits both
            try:
                self._finish_transaction(batch)
            except _AbortableError as exc:
                held = self._abort_log.allow()
                if held is not None:
                    logger.warning(
                        "transaction aborted, rewinding %d partitions "
                        "(outputs refused=%d, earlier aborts not logged=%d): %s",
                        len(batch.next_offsets),
                        len(batch.errors),
                        held,
                        exc,
                    )
                self._call_txn(producer.abort_transaction, _TXN_TIMEOUT_S)
                self._rewind(messages)
                continue
            batch.done_at = time.time()
            self.metrics.commits.inc()
            self._observe_latency(batch)

    def _abandon_transaction(self, count: int) -> None:
        """Abort the transaction of a batch that stop() cut short."""
        logger.warning(
            "stopped while librdkafka's queue was full; the last batch is aborted "
            "and left for the next run count=%d",
            count,
        )
        try:
            self._call_txn(self._producer.abort_transaction, _TXN_TIMEOUT_S)
        except (FraudWorkerError, _AbortableError) as exc:
            # Nothing of the batch is committed either way: the broker aborts the
            # open transaction after transaction.timeout.ms, or when the next run
            # with this transactional id calls init_transactions.
            logger.warning("abort of the last transaction failed: %s", exc)

    def _finish_transaction(self, batch: PendingBatch) -> None:
        offsets = [TopicPartition(t, p, o) for (t, p), o in batch.next_offsets.items()]
        metadata = self._consumer.consumer_group_metadata()
        producer = self._producer
        self._call_txn(
            producer.send_offsets_to_transaction, offsets, metadata, _TXN_TIMEOUT_S
        )
        self._call_txn(producer.commit_transaction, _TXN_TIMEOUT_S)

    def _call_txn(self, call: Callable[..., Any], *args: Any) -> None:
        """Run a transactional call, retrying for as long as librdkafka says it may.

        A broker outage makes these calls time out with retriable errors; they are
        repeated until the broker is back or the worker is asked to stop.
        """
        while True:
            try:
                self._watchdog.arm(getattr(call, "__name__", "a transaction call"))
                try:
                    call(*args)
                finally:
                    self._watchdog.disarm()
                return
            except KafkaException as exc:
                err: KafkaError = exc.args[0]
                retry = err.retriable() and not err.txn_requires_abort()
                if not retry or err.fatal() or self._stopping:
                    self._raise_transaction_error(exc)
                self._producer.poll(0)
                self._raise_if_fatal()
                self._warn_throttled("transaction call retried: %s", err)

    def _raise_transaction_error(self, exc: KafkaException) -> None:
        err: KafkaError = exc.args[0]
        if err.code() in _FENCING_CODES or "fenced" in str(err).lower():
            raise FencedError(
                f"expected to own transactional id {self.settings.transactional_id!r}, "
                f"found another instance using it ({err}); this instance stops. Give "
                "each instance its own --instance-id"
            ) from exc
        if err.txn_requires_abort():
            raise _AbortableError(str(err)) from exc
        raise KafkaFatalError(
            f"expected the transaction call to succeed, found {err}; "
            "check the broker's transaction coordinator and restart"
        ) from exc

    def _rewind(self, messages: Sequence[Any]) -> None:
        first: dict[TopicPartitionKey, int] = {}
        for message in messages:
            key = (message.topic(), message.partition())
            first.setdefault(key, message.offset())
        for (topic, partition), offset in first.items():
            if (topic, partition) not in self._assigned:
                continue
            self._consumer.seek(TopicPartition(topic, partition, offset))

    # -- one batch -------------------------------------------------------------

    def _process(self, messages: list[Any]) -> PendingBatch | None:
        """Decode, score and produce one batch; return it for tracking."""
        good = [m for m in messages if m.error() is None]
        if len(good) != len(messages):
            self._log_consumer_errors(messages)
            if not good:
                return None
            messages = good

        values: list[bytes | None] = [m.value() for m in messages]
        timestamps = [m.timestamp()[1] for m in messages]
        last_offset = {m.partition(): m.offset() for m in messages}
        topic = self.settings.input_topic
        next_offsets = {(topic, p): o + 1 for p, o in last_offset.items()}
        self._positions.update(next_offsets)
        batch = PendingBatch(
            next_offsets, np.asarray(timestamps, dtype=np.int64), self._on_refused
        )
        count = len(messages)

        # 2. decode
        decoded = self.decoder.decode_into(values, self._matrix)

        # 3. score
        scores = np.empty(0, dtype=np.float32)
        if decoded.count:
            started = time.perf_counter()
            scores = self.model.score(self._matrix[: decoded.count])
            self.metrics.inference_seconds.observe(time.perf_counter() - started)
            # The sum is finite exactly when every score is: one reduction per batch.
            if not np.isfinite(scores.sum()):
                decoded, scores = self._set_aside_non_finite(decoded, scores)

        # 4. produce
        scored_at = rfc3339_ms(time.time())
        alerts = self._produce_scores(messages, decoded, scores, scored_at, batch)
        if decoded.dead:
            self._produce_dead_letters(messages, decoded, batch)
        batch.seal()

        metrics = self.metrics
        metrics.events_consumed.inc(count)
        metrics.batches.inc()
        metrics.batch_size.observe(count)
        if alerts:
            metrics.alerts.inc(alerts)
        return batch

    def _set_aside_non_finite(
        self, decoded: DecodedBatch, scores: np.ndarray
    ) -> tuple[DecodedBatch, np.ndarray]:
        """Turn the events the model scored NaN or infinite into dead letters.

        Their features are finite (the decoder checked), so the model's own arithmetic
        failed on them; they get no alert and no score record.
        """
        finite = np.isfinite(scores)
        dead = list(decoded.dead)
        for row in np.flatnonzero(~finite).tolist():
            detail = (
                f"score: expected a finite fraud probability from the model, found "
                f"{float(scores[row])!r} for finite features; this model cannot score "
                "the event"
            )
            dead.append(DeadLetter(decoded.indexes[row], "not_finite", detail))
        dead.sort(key=lambda letter: letter.index)
        keep = np.flatnonzero(finite).tolist()
        kept = DecodedBatch(
            len(keep),
            [decoded.indexes[k] for k in keep],
            [decoded.events[k] for k in keep],
            dead,
        )
        return kept, scores[finite]

    def _produce_scores(
        self,
        messages: list[Any],
        decoded: DecodedBatch,
        scores: np.ndarray,
        scored_at: str,
        batch: PendingBatch,
    ) -> int:
        if not decoded.count:
            return 0
        threshold = self.threshold
        version = self.model.info.model_version
        decoder = self.decoder
        topic = self.settings.input_topic
        hits = np.flatnonzero(scores >= threshold)
        for row in hits.tolist():
            event = decoded.events[row]
            message = messages[decoded.indexes[row]]
            value = alert_value(
                decoder.read_transaction_id(event),
                float(scores[row]),
                threshold,
                version,
                decoder.read_event_time(event),
                scored_at,
                topic,
                message.partition(),
                message.offset(),
            )
            key = decoder.read_key(event).encode()
            self._produce(self.settings.alerts_topic, value, key, None, batch)
        scores_topic = self.settings.scores_topic
        if scores_topic:
            as_floats = scores.tolist()
            for row, event in enumerate(decoded.events):
                message = messages[decoded.indexes[row]]
                score = as_floats[row]
                value = score_value(
                    decoder.read_transaction_id(event),
                    score,
                    threshold,
                    version,
                    decoder.read_event_time(event),
                    scored_at,
                    topic,
                    message.partition(),
                    message.offset(),
                    score >= threshold,
                )
                key = decoder.read_key(event).encode()
                self._produce(scores_topic, value, key, None, batch)
        return len(hits)

    def _produce_dead_letters(
        self, messages: list[Any], decoded: DecodedBatch, batch: PendingBatch
    ) -> None:
        reasons = collections.Counter(letter.reason for letter in decoded.dead)
        for reason, count in reasons.items():
            self.metrics.dead_letters.labels(reason).inc(count)
        dlq = self.settings.dlq_topic
        if not dlq:
            return
        version = self.model.info.model_version
        topic = self.settings.input_topic
        for letter in decoded.dead:
            message = messages[letter.index]
            headers = dead_letter_headers(
                letter, topic, message.partition(), message.offset(), version
            )
            value, key, headers = fit_dead_letter(
                message.value(), message.key(), headers, self._max_record_bytes
            )
            self._produce(dlq, value, key, headers, batch)

    def _produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        headers: list[tuple[str, bytes]] | None,
        batch: PendingBatch,
    ) -> None:
        batch.expect()
        while True:
            try:
                if headers is None:
                    self._producer.produce(
                        topic, value, key, on_delivery=batch.on_delivery
                    )
                else:
                    self._producer.produce(
                        topic,
                        value,
                        key,
                        on_delivery=batch.on_delivery,
                        headers=headers,
                    )
                return
            except BufferError:
                # The queue stays full while no broker answers; stop() and fatal
                # errors must still end the wait, which would otherwise last until
                # message.timeout.ms fails the queued records.
                self._producer.poll(_QUEUE_FULL_WAIT_S)
                self._raise_if_fatal()
                if self._stopping:
                    raise _BatchAbandoned from None

    # -- callbacks and housekeeping -------------------------------------------

    def _observe_latency(self, batch: PendingBatch) -> None:
        if batch.done_at is None:
            return
        stamps = batch.timestamps_ms
        stamps = stamps[stamps > 0]
        if stamps.size:
            latency = batch.done_at - stamps.astype(np.float64) / 1000.0
            self.metrics.end_to_end_latency.observe_many(np.maximum(latency, 0.0))

    def _on_refused(self, err: KafkaError) -> None:
        # Counted per record; logged once per failed batch where the failure is
        # handled (the DeliveryError, the shutdown, the aborted transaction).
        self.metrics.produce_errors.inc()

    def _on_commit(
        self, err: KafkaError | None, partitions: list[TopicPartition]
    ) -> None:
        failed = [tp for tp in partitions if err is not None or tp.error is not None]
        if failed:
            # Forgetting them makes the next commit round send these offsets again.
            self._ledger.retry_commit((tp.topic, tp.partition) for tp in failed)
            held = self._commit_log.allow()
            if held is not None:
                logger.warning(
                    "offset commit failed for %d partitions: %s (earlier failures "
                    "not logged=%d)",
                    len(failed),
                    err if err is not None else failed[0].error,
                    held,
                )
            return
        self._ledger.confirm({(tp.topic, tp.partition): tp.offset for tp in partitions})
        self.metrics.commits.inc()

    def _on_error(self, err: KafkaError) -> None:
        if err.code() in _AUTH_CODES:
            self._auth_error = err
            return
        if err.code() == KafkaError._SSL and _TLS_VERIFY_FAILED in err.str():
            self._tls_error = err
            return
        if err.fatal():
            self._fatal = err
            logger.error("kafka fatal error: %s", err)
            return
        if err.code() == KafkaError._ALL_BROKERS_DOWN:
            held = self._unreachable_log.allow()
            if held is not None:
                logger.warning(
                    "cannot reach Kafka at %s (%s); is a broker running there? For "
                    "the local broker: make kafka-up. The client keeps retrying "
                    "(repeats not logged=%d)",
                    self.settings.bootstrap_servers,
                    err.str(),
                    held,
                )
            return
        self._warn_throttled("kafka error (the client retries): %s", err)

    def _warn_throttled(self, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._last_error_log >= _ERROR_LOG_INTERVAL_S:
            self._last_error_log = now
            logger.warning(message, *args)

    def _raise_if_fatal(self) -> None:
        if self._auth_error is not None:
            raise KafkaAuthError(
                "expected the broker to accept this client's credentials, found "
                f"authentication refused ({self._auth_error.str()}); check "
                "sasl.username, sasl.password and sasl.mechanism in --kafka-config "
                "or -X (values are not logged)"
            )
        if self._tls_error is not None:
            raise KafkaTlsError(
                "expected the broker's TLS certificate to verify against the trusted "
                f"CAs, found verification failed ({self._tls_error.str()}); set "
                "ssl.ca.location in --kafka-config or -X to the CA file that signed "
                "the broker's certificate (values are not logged)"
            )
        if self._fatal is not None and self._fatal.code() in _FENCING_CODES:
            raise FencedError(
                f"expected to own transactional id {self.settings.transactional_id!r}, "
                f"found another instance using it ({self._fatal}); this instance "
                "stops. Give each instance its own --instance-id"
            )
        if self._fatal is not None:
            raise KafkaFatalError(
                f"expected a working Kafka client, found a fatal error: {self._fatal}; "
                "the worker stops; restart it (offsets stop at the last safe batch)"
            )

    def _log_consumer_errors(self, messages: list[Any]) -> None:
        # Reaching the end of a partition (enable.partition.eof=true) is no error.
        errors = [
            err
            for m in messages
            if (err := m.error()) is not None
            and err.code() != KafkaError._PARTITION_EOF
        ]
        if not errors:
            return
        now = time.monotonic()
        if now - self._last_error_log < _ERROR_LOG_INTERVAL_S:
            return
        self._last_error_log = now
        logger.warning("consumer reported %d errors, first: %s", len(errors), errors[0])

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned.update((tp.topic, tp.partition) for tp in partitions)
        self.metrics.ready.set(1 if self._assigned else 0)
        logger.info(
            "partitions assigned %s",
            ",".join(f"{tp.topic}[{tp.partition}]" for tp in partitions),
        )

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        logger.info("partitions revoked count=%d", len(revoked))
        if not self.exactly_once:
            # Every output of the revoked partitions must be acked before their
            # offsets are committed, and nothing later than that.
            self._producer.flush(_FLUSH_TIMEOUT_S)
            self._retire()
            offsets = {
                tp: o for tp, o in self._ledger.unconfirmed().items() if tp in revoked
            }
            if offsets:
                partitions_out = [
                    TopicPartition(t, p, o) for (t, p), o in offsets.items()
                ]
                try:
                    consumer.commit(offsets=partitions_out, asynchronous=False)
                    self._ledger.mark_committed(offsets, confirmed=True)
                except KafkaException as exc:
                    logger.warning("commit on revocation failed: %s", exc.args[0])
        self._drop(revoked)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        lost = {(tp.topic, tp.partition) for tp in partitions}
        logger.warning(
            "partitions lost count=%d; their offsets are not committed", len(lost)
        )
        self._drop(lost)

    def _owned(self, messages: list[Any]) -> list[Any]:
        """Keep the records of partitions this consumer still owns (and errors).

        A rebalance callback runs inside ``consume()``, which can still return
        records of the partitions it just revoked. They are dropped unprocessed: no
        output is produced for them and their offsets are not committed here; the
        partition's new owner reads them from its last committed offset.
        """
        assigned = self._assigned
        kept = [
            m
            for m in messages
            if m.error() is not None or (m.topic(), m.partition()) in assigned
        ]
        if len(kept) != len(messages):
            logger.info(
                "records of revoked partitions left to their new owner count=%d",
                len(messages) - len(kept),
            )
        return kept

    def _drop(self, partitions: set[TopicPartitionKey]) -> None:
        self._revocations += 1
        self._ledger.forget(partitions)
        self._assigned -= partitions
        for topic, partition in partitions:
            self._positions.pop((topic, partition), None)
            try:
                self.metrics.consumer_lag.remove(topic, str(partition))
            except KeyError:
                pass
        self.metrics.ready.set(1 if self._assigned else 0)

    def _update_lag(self) -> None:
        for (topic, partition), position in list(self._positions.items()):
            try:
                _low, high = self._consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), cached=True
                )
            except KafkaException:
                continue
            if high >= 0:
                self.metrics.consumer_lag.labels(topic, str(partition)).set(
                    max(high - position, 0)
                )

    # -- client settings -------------------------------------------------------

    def _make_liveness(self) -> GroupLiveness:
        limit_s = self.settings.unhealthy_after_s
        interval_ms = stats_interval_ms(self.settings.client_config("consumer"))
        if limit_s and interval_ms == 0:
            logger.warning(
                "group liveness check off: it needs librdkafka statistics, found "
                "statistics.interval.ms=0 in -X or --kafka-config; remove that "
                "setting to turn the check on (--unhealthy-after-s %d)",
                limit_s,
            )
            limit_s = 0
        return GroupLiveness(limit_s)

    def _consumer_config(self) -> dict[str, Any]:
        settings = self.settings
        config: dict[str, Any] = {
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            # With read_committed the broker holds a fetch for up to this long even
            # when records arrive; librdkafka's 500 ms default put half a second on
            # the first events after an idle spell. 50 ms costs a few idle fetches.
            "fetch.wait.max.ms": _FETCH_WAIT_MAX_MS,
            "client.id": "fraud-worker",
            "statistics.interval.ms": STATS_INTERVAL_MS,
        }
        config.update(settings.client_config("consumer"))
        config.update(
            {
                "bootstrap.servers": settings.bootstrap_servers,
                "group.id": settings.group_id,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "on_commit": self._on_commit,
                "error_cb": self._on_error,
                "stats_cb": self.liveness.on_stats,
                "logger": self._kafka_log,
            }
        )
        return config

    def _producer_config(self) -> dict[str, Any]:
        settings = self.settings
        # Alerts are few; a short linger keeps their latency low without
        # costing throughput, since a busy batch fills librdkafka batches anyway.
        config: dict[str, Any] = {"linger.ms": 1, "client.id": "fraud-worker"}
        config.update(settings.client_config("producer"))
        config.update(
            {
                "bootstrap.servers": settings.bootstrap_servers,
                "enable.idempotence": True,
                "acks": "all",
                "error_cb": self._on_error,
                "logger": self._kafka_log,
            }
        )
        if self.exactly_once:
            config["transactional.id"] = settings.transactional_id
        return config


class _AbortableError(Exception):
    """A transaction failed in a way that an abort and a rewind recover from."""


class _BatchAbandoned(Exception):
    """stop() came while a batch's outputs waited for room in librdkafka's queue."""


class _Throttle:
    """Let one log line of a kind through per interval and count those held back."""

    __slots__ = ("_interval_s", "_last", "_held")

    def __init__(self, interval_s: float) -> None:
        self._interval_s = interval_s
        self._last = -math.inf
        self._held = 0

    def allow(self) -> int | None:
        """Return None to hold this line back, else the count held since the last."""
        now = time.monotonic()
        if now - self._last < self._interval_s:
            self._held += 1
            return None
        held, self._held, self._last = self._held, 0, now
        return held


class _LibrdkafkaLog:
    """librdkafka's log callback: each kind of line passes at most once per interval.

    While no broker answers, librdkafka logs a failed connect at every retry, about 20
    lines a second per client. A kind is the facility (``FAIL``, ...) and the client
    thread that logged it, which names the broker; the line that passes after held
    back ones says how many. Debug lines, which ``-X debug=...`` asks for, all pass.
    """

    def __init__(self, target: logging.Logger, interval_s: float) -> None:
        self._target = target
        self._interval_s = interval_s
        self._throttles: dict[tuple[str, str], _Throttle] = {}

    def log(self, level: int, msg: str, *args: Any) -> None:
        """Take one line, called as ``log(level, fmt, facility, client, text)``."""
        if level <= logging.DEBUG or len(args) != 3:
            self._target.log(level, msg, *args)
            return
        text = str(args[2])
        thread = text[6 : text.find("]")] if text.startswith("[thrd:") else ""
        key = (str(args[0]), thread)
        throttle = self._throttles.get(key)
        if throttle is None:
            throttle = self._throttles[key] = _Throttle(self._interval_s)
        held = throttle.allow()
        if held:
            self._target.log(level, msg + " (similar lines not logged=%d)", *args, held)
        elif held is not None:
            self._target.log(level, msg, *args)
