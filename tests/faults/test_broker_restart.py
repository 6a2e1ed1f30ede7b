"""The broker stops for 20 s mid-stream: the same worker process reconnects by itself.

The broker is the fault tests' private one (never the session broker other tests
use); it keeps its data over the stop, as a rolling restart would.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from faultkit import (
    FAST_GROUP_SETTINGS,
    Feeder,
    PrivateBroker,
    Tally,
    WorkerFleet,
    count_lines,
    create_topics,
    kafkakit,
    modelkit,
    report,
    unique,
    wait_until_committed,
)

pytestmark = pytest.mark.integration

_PARTITIONS = 2
_OUTAGE_S = 20.0


def _run_outage(
    private: PrivateBroker,
    tmp_path: Path,
    guarantee: str,
    events: int,
    rate: float,
    outages: int,
) -> Tally:
    bootstrap = private.bootstrap
    source, scores = unique("outage-in"), unique("outage-scores")
    alerts, dlq = unique("outage-alerts"), unique("outage-dlq")
    create_topics(
        bootstrap, {source: _PARTITIONS, scores: _PARTITIONS, alerts: 1, dlq: 1}
    )
    group = f"{source}-g"
    argv = kafkakit.worker_argv(
        bootstrap,
        modelkit.write_model_dir(tmp_path / "model"),
        source,
        group,
        scores_topic=scores,
        alerts_topic=alerts,
        dlq_topic=dlq,
        processing_guarantee=guarantee,
        instance_id="fault-outage",
        X=list(FAST_GROUP_SETTINGS),
    )
    fleet = WorkerFleet(argv, tmp_path)
    feeder = Feeder(bootstrap, source, events, rate, tmp_path / "feeder.log")
    worker = fleet.start()
    stream_s = events / rate

    def worker_alive() -> None:
        assert worker.alive, f"worker exited:\n{worker.log()[-4000:]}"

    try:
        for k in range(outages):
            # Each outage starts while events are still streaming in.
            done = k * events // outages + events // (2 * outages)
            wait_until_committed(
                bootstrap,
                group,
                source,
                _PARTITIONS,
                done,
                timeout_s=stream_s + 60,
                also=worker_alive,
            )
            private.stop()
            stopped_at = time.monotonic()
            while time.monotonic() - stopped_at < _OUTAGE_S:
                assert worker.alive, (
                    f"worker gave up during the outage:\n{worker.log()}"
                )
                time.sleep(0.5)
            private.start()
            print(f"outage {k + 1}: broker down {time.monotonic() - stopped_at:.1f} s")

        feeder.wait(stream_s + 180)
        wait_until_committed(
            bootstrap,
            group,
            source,
            _PARTITIONS,
            events,
            timeout_s=stream_s + 180,
            also=worker_alive,
        )
        assert worker.alive, worker.log()
        assert worker.stop() == 0, worker.log()
    finally:
        feeder.close()
        fleet.stop_all()
        private.start()  # the next test gets a running broker even after a failure

    log = worker.log()
    assert count_lines(log, "kafka fatal error") == 0, log
    tally = Tally.of(bootstrap, source, scores)
    report(
        "broker stopped 20 s",
        guarantee,
        outages,
        tally,
        rate=rate,
        worker_processes=len(fleet.runs),
        assignments=count_lines(log, "partitions assigned"),
        kafka_warnings=count_lines(log, "kafka error"),
    )
    assert tally.inputs == events
    assert tally.unexpected == 0
    return tally


def test_worker_reconnects_after_a_20_s_broker_stop_and_loses_no_event(
    private_broker, tmp_path
):
    tally = _run_outage(
        private_broker, tmp_path, "at-least-once", events=4_000, rate=200.0, outages=1
    )

    assert tally.missing == 0


@pytest.mark.slow
@pytest.mark.parametrize("guarantee", ["at-least-once", "exactly-once"])
def test_worker_rides_out_two_broker_stops_in_a_long_stream(
    private_broker, tmp_path, guarantee
):
    tally = _run_outage(
        private_broker, tmp_path, guarantee, events=30_000, rate=500.0, outages=2
    )

    assert tally.missing == 0
    if guarantee == "exactly-once":
        assert tally.duplicates == 0
