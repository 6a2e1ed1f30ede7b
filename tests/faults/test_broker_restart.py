"""The broker stops for 20 s mid-stream: the worker reconnects by itself, no event lost.

In at-least-once mode the same process must ride out every outage. In exactly-once
mode a process whose transaction call never returns ends itself and is restarted,
as its supervisor would.

The broker is the fault tests' private one (never the session broker other tests
use); it keeps its data over the stop, as a rolling restart would.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
from faultkit import (
    FAST_GROUP_SETTINGS,
    Feeder,
    PrivateBroker,
    Tally,
    WorkerFleet,
    WorkerProcess,
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
# The worker's own shutdown bounds (30 s flush, 10 s consumer close) plus slack; a
# worker still running after this is hung.
_STOP_BUDGET_S = 60.0


def _run_outage(
    private: PrivateBroker,
    tmp_path: Path,
    guarantee: str,
    events: int,
    rate: float,
    outages: int,
    supervised: bool = False,
) -> Tally:
    """Stream events, stop the broker ``outages`` times, compare the outputs.

    With ``supervised`` a worker that exits with code 1 is started again, as a
    Kubernetes Deployment would; otherwise the first worker must live through all.
    """
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
    fleet.start()
    stream_s = events / rate

    def worker_alive() -> None:
        worker = fleet.current
        if worker.alive:
            return
        code = worker.process.returncode
        assert supervised and code == 1, f"worker exited {code}:\n{worker.log()}"
        fleet.start()

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
                worker_alive()
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
        worker_alive()
        assert fleet.current.stop() == 0, fleet.current.log()
    finally:
        feeder.close()
        fleet.stop_all()
        private.start()  # the next test gets a running broker even after a failure

    log = fleet.logs()
    assert count_lines(log, "kafka fatal error") == 0, log
    tally = Tally.of(bootstrap, source, scores)
    report(
        "broker stopped 20 s",
        guarantee,
        outages,
        tally,
        rate=rate,
        worker_processes=len(fleet.runs),
        stall_exits=count_lines(log, "still blocked"),
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
    # Exactly-once ends a process whose transaction call never returns (see
    # worker.watchdog); its replacement fences it, so restarts are part of the mode.
    tally = _run_outage(
        private_broker,
        tmp_path,
        guarantee,
        events=30_000,
        rate=500.0,
        outages=2,
        supervised=guarantee == "exactly-once",
    )

    assert tally.missing == 0
    if guarantee == "exactly-once":
        assert tally.duplicates == 0


@pytest.mark.slow
def test_sigterm_while_the_broker_is_down_still_stops_the_worker(
    private_broker, tmp_path
):
    private = private_broker
    bootstrap = private.bootstrap
    source, scores = unique("down-in"), unique("down-scores")
    create_topics(bootstrap, {source: _PARTITIONS, scores: _PARTITIONS})
    group = f"{source}-g"
    argv = kafkakit.worker_argv(
        bootstrap,
        modelkit.write_model_dir(tmp_path / "model"),
        source,
        group,
        scores_topic=scores,
        dlq_topic="",
        X=list(FAST_GROUP_SETTINGS),
    )
    worker = WorkerProcess(argv, tmp_path / "worker.log")
    # Events still stream in when the broker stops, so offset commits are pending.
    feeder = Feeder(bootstrap, source, 3_000, 300.0, tmp_path / "feeder.log")
    try:
        wait_until_committed(bootstrap, group, source, _PARTITIONS, 1_000, 60)
        private.stop()
        # Past the session timeout: the worker has lost its group and its
        # coordinator, the state in which leaving the group cannot finish.
        time.sleep(10)
        worker.process.send_signal(signal.SIGTERM)
        try:
            code: int | None = worker.wait(_STOP_BUDGET_S)
        except subprocess.TimeoutExpired:
            code = None
    finally:
        feeder.close()
        if worker.alive:
            worker.kill()
        private.start()

    assert code is not None, (
        f"worker still running {_STOP_BUDGET_S:.0f} s after SIGTERM:\n"
        f"{worker.log()[-3000:]}"
    )
    assert code in (0, 1), worker.log()
