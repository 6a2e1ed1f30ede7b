"""kill -9 of worker processes mid-stream: nothing is lost, repeats only when allowed.

Each scenario streams synthetic events with the replay tool, kills workers with
SIGKILL at seeded random moments (the seed is printed; ``FRAUD_FAULT_SEED``
overrides it) and compares the scores topic with the input topic by transaction_id.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from faultkit import (
    FAST_GROUP_SETTINGS,
    Feeder,
    Tally,
    WorkerFleet,
    count_lines,
    fault_seed,
    kafkakit,
    modelkit,
    report,
    wait_until_committed,
)

pytestmark = pytest.mark.integration

_PARTITIONS = 3
# Each kill comes at least this long after the previous start. A kill may still land
# during start-up, before the worker owns partitions; the report counts the kills
# that hit a worker owning partitions (kills_while_assigned).
_MIN_GAP_S = 1.0


def _topics(make_topic: Callable[..., str]) -> dict[str, str]:
    return {
        "input_topic": make_topic(partitions=_PARTITIONS, prefix="fault-in"),
        "scores_topic": make_topic(partitions=_PARTITIONS, prefix="fault-scores"),
        "alerts_topic": make_topic(prefix="fault-alerts"),
        "dlq_topic": make_topic(prefix="fault-dlq"),
    }


def _kill_moments(rng: random.Random, kills: int, stream_s: float) -> list[float]:
    """Seconds after the first start at which to kill, spread over the stream."""
    window = stream_s / kills
    return [k * window + rng.uniform(_MIN_GAP_S, window) for k in range(kills)]


def _run_kill_scenario(
    bootstrap: str,
    make_topic: Callable[..., str],
    tmp_path: Path,
    guarantee: str,
    events: int,
    rate: float,
    kills: int,
    seed: int,
) -> Tally:
    topics = _topics(make_topic)
    group = f"{topics['input_topic']}-g"
    argv = kafkakit.worker_argv(
        bootstrap,
        modelkit.write_model_dir(tmp_path / "model"),
        topics["input_topic"],
        group,
        scores_topic=topics["scores_topic"],
        alerts_topic=topics["alerts_topic"],
        dlq_topic=topics["dlq_topic"],
        processing_guarantee=guarantee,
        instance_id="fault-kill",
        X=list(FAST_GROUP_SETTINGS),
    )
    fleet = WorkerFleet(argv, tmp_path)
    rng = random.Random(seed)
    moments = _kill_moments(rng, kills, events / rate)
    print(f"kill scenario seed={seed} guarantee={guarantee} moments={moments}")

    while_assigned = 0
    feeder = Feeder(
        bootstrap, topics["input_topic"], events, rate, tmp_path / "feeder.log", seed
    )
    try:
        started = time.monotonic()
        fleet.start()
        for moment in moments:
            time.sleep(max(moment - (time.monotonic() - started), _MIN_GAP_S))
            worker = fleet.current
            assert worker.alive, f"worker died on its own:\n{worker.log()}"
            while_assigned += "partitions assigned" in worker.log()
            worker.kill()
            fleet.start()
        feeder.wait(events / rate + 120)

        def worker_alive() -> None:
            assert fleet.current.alive, f"worker died:\n{fleet.current.log()}"

        wait_until_committed(
            bootstrap,
            group,
            topics["input_topic"],
            _PARTITIONS,
            events,
            timeout_s=events / 1000 + 120,
            also=worker_alive,
        )
        assert fleet.current.stop() == 0, fleet.current.log()
    finally:
        feeder.close()
        fleet.stop_all()

    logs = fleet.logs()
    assert count_lines(logs, "kafka fatal error") == 0, logs
    tally = Tally.of(bootstrap, topics["input_topic"], topics["scores_topic"])
    dead = kafkakit.read(bootstrap, topics["dlq_topic"], 0, timeout_s=3, settle_s=1)
    report(
        "kill -9 worker",
        guarantee,
        kills,
        tally,
        seed=seed,
        rate=rate,
        dead_letters=len(dead),
        kills_while_assigned=while_assigned,
        assignments=count_lines(logs, "partitions assigned"),
    )
    assert tally.inputs == events
    assert tally.unexpected == 0
    assert dead == []
    return tally


@pytest.mark.parametrize("guarantee", ["at-least-once", "exactly-once"])
def test_kill_9_twice_mid_stream_loses_no_event(
    kafka_bootstrap, make_topic, tmp_path, guarantee
):
    tally = _run_kill_scenario(
        kafka_bootstrap,
        make_topic,
        tmp_path,
        guarantee,
        events=8_000,
        rate=800.0,
        kills=2,
        seed=fault_seed(20261204),
    )

    assert tally.missing == 0
    if guarantee == "exactly-once":
        assert tally.duplicates == 0


@pytest.mark.slow
@pytest.mark.parametrize("guarantee", ["at-least-once", "exactly-once"])
def test_kill_9_five_times_in_100k_events_loses_no_event(
    kafka_bootstrap, make_topic, tmp_path, guarantee
):
    tally = _run_kill_scenario(
        kafka_bootstrap,
        make_topic,
        tmp_path,
        guarantee,
        events=100_000,
        rate=2_000.0,
        kills=5,
        seed=fault_seed(7),
    )

    assert tally.missing == 0
    if guarantee == "exactly-once":
        assert tally.duplicates == 0
