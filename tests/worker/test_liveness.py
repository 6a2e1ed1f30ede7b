"""``/healthz`` turns 503 when librdkafka's statistics show no steady consumer group."""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request

import pytest
from kafkakit import running_worker, wait_for, worker_argv
from prometheus_client import CollectorRegistry

from worker.app import Worker
from worker.config import load_settings
from worker.errors import ConfigError
from worker.http import MetricsServer
from worker.liveness import STATS_INTERVAL_MS, GroupLiveness
from worker.metrics import Metrics
from worker.model import load_model

_LIMIT_S = 300.0


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _stats(state: str = "up", join_state: str = "steady") -> str:
    # The shape of librdkafka's statistics, trimmed to what the check reads plus a
    # few neighbours it must ignore.
    return json.dumps(
        {
            "name": "fraud-worker#consumer-1",
            "type": "consumer",
            "brokers": {},
            "topics": {},
            "cgrp": {
                "state": state,
                "stateage": 1234,
                "join_state": join_state,
                "rebalance_age": 5678,
                "rebalance_cnt": 1,
                "rebalance_reason": "",
                "assignment_size": 0,
            },
        }
    )


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_steady_group_is_healthy_however_long_nothing_else_happens():
    clock = _Clock()
    liveness = GroupLiveness(_LIMIT_S, clock)

    for _ in range(100):
        clock.now += 60
        liveness.on_stats(_stats())

    assert liveness.problem() is None
    assert liveness.group_state == ("up", "steady")


def test_group_unsettled_past_the_limit_is_unhealthy_with_the_state_seen(caplog):
    clock = _Clock()
    liveness = GroupLiveness(_LIMIT_S, clock)
    liveness.on_stats(_stats())

    with caplog.at_level(logging.WARNING, logger="worker.liveness"):
        clock.now += 100
        liveness.on_stats(_stats("wait-coord", "init"))
        assert liveness.problem() is None
        clock.now += _LIMIT_S
        liveness.on_stats(_stats("wait-coord", "init"))
        first = liveness.problem()
        clock.now += 60
        liveness.on_stats(_stats("wait-coord", "init"))
        later = liveness.problem()

    assert first is not None and later is not None
    assert "\n" not in first
    assert "not steady for 400 s (limit 300 s)" in first
    assert "state=wait-coord join_state=init" in first
    assert "not steady for 460 s" in later
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "state=wait-coord join_state=init" in warnings[0].getMessage()


def test_short_rebalance_within_the_limit_stays_healthy():
    clock = _Clock()
    liveness = GroupLiveness(_LIMIT_S, clock)

    for join_state in ("wait-join", "wait-sync", "wait-assign-call"):
        clock.now += 5
        liveness.on_stats(_stats("up", join_state))
        assert liveness.problem() is None
    clock.now += 5
    liveness.on_stats(_stats())
    clock.now += _LIMIT_S
    assert liveness.problem() is None


def test_steady_again_after_an_unhealthy_spell_is_healthy_and_logged(caplog):
    clock = _Clock()
    liveness = GroupLiveness(_LIMIT_S, clock)
    clock.now += _LIMIT_S + 1
    liveness.on_stats(_stats("query-coord", "init"))
    assert liveness.problem() is not None
    caplog.clear()

    with caplog.at_level(logging.INFO, logger="worker.liveness"):
        clock.now += 5
        liveness.on_stats(_stats())

    assert liveness.problem() is None
    assert [r.getMessage() for r in caplog.records] == [
        "consumer group steady again; healthy"
    ]


def test_no_statistics_at_all_count_as_no_steady_group():
    clock = _Clock()
    liveness = GroupLiveness(_LIMIT_S, clock)
    clock.now += _LIMIT_S
    assert liveness.problem() is None

    clock.now += 1
    problem = liveness.problem()

    assert problem is not None
    assert "last seen no statistics yet" in problem


@pytest.mark.parametrize(
    "document",
    [
        pytest.param("{not json", id="not_json"),
        pytest.param("[1, 2]", id="not_an_object"),
        pytest.param('{"type": "consumer"}', id="no_cgrp"),
        pytest.param('{"cgrp": {"state": "up"}}', id="no_join_state"),
        pytest.param('{"cgrp": {"state": 1, "join_state": "steady"}}', id="not_str"),
        pytest.param('{"cgrp": null}', id="cgrp_null"),
    ],
)
def test_malformed_statistics_are_ignored_with_a_debug_line(document, caplog):
    clock = _Clock()
    liveness = GroupLiveness(_LIMIT_S, clock)
    liveness.on_stats(_stats("wait-coord", "init"))

    with caplog.at_level(logging.DEBUG, logger="worker.liveness"):
        liveness.on_stats(document)

    assert liveness.group_state == ("wait-coord", "init")
    debug = [r for r in caplog.records if r.levelno == logging.DEBUG]
    assert len(debug) == 1
    assert "librdkafka statistics ignored" in debug[0].getMessage()
    clock.now += _LIMIT_S + 1
    assert liveness.problem() is not None


def test_limit_zero_turns_the_check_off():
    clock = _Clock()
    liveness = GroupLiveness(0, clock)
    liveness.on_stats(_stats("wait-coord", "init"))
    clock.now += 10 * 86_400

    assert not liveness.enabled
    assert liveness.problem() is None


def test_healthz_answers_503_with_the_reason_then_200_once_steady():
    clock = _Clock()
    liveness = GroupLiveness(_LIMIT_S, clock)
    server = MetricsServer(
        "127.0.0.1", 0, CollectorRegistry(), lambda: True, liveness.problem
    )
    server.start()
    url = f"http://127.0.0.1:{server.port}/healthz"
    try:
        healthy = _get(url)
        clock.now += _LIMIT_S + 1
        liveness.on_stats(_stats("wait-coord", "init"))
        unhealthy = _get(url)
        liveness.on_stats(_stats())
        recovered = _get(url)
    finally:
        server.stop()

    assert healthy == (200, "ok\n")
    status, body = unhealthy
    assert status == 503
    assert body.startswith("unhealthy: consumer group not steady for 301 s")
    assert body.count("\n") == 1
    assert recovered == (200, "ok\n")


def test_unhealthy_after_flag_and_env_with_default_300():
    assert load_settings(["--model", "m"], environ={}).unhealthy_after_s == 300
    env = {"FRAUD_UNHEALTHY_AFTER_S": "120"}
    assert load_settings(["--model", "m"], environ=env).unhealthy_after_s == 120
    flag = ["--model", "m", "--unhealthy-after-s", "0"]
    assert load_settings(flag, environ=env).unhealthy_after_s == 0


def test_limit_shorter_than_two_statistics_intervals_is_refused():
    argv = ["--model", "m", "--unhealthy-after-s", "5"]

    with pytest.raises(ConfigError, match=r"at least two statistics intervals"):
        load_settings(argv, environ={})
    shorter = [*argv, "-X", "consumer.statistics.interval.ms=1000"]
    assert load_settings(shorter, environ={}).unhealthy_after_s == 5


def _worker(model_dir, *extra: str) -> Worker:
    argv = ["--model", str(model_dir), "--bootstrap-servers", "127.0.0.1:1", *extra]
    settings = load_settings(argv, environ={})
    return Worker(settings, load_model(model_dir), Metrics(CollectorRegistry()))


def test_consumer_gets_the_statistics_interval_and_callback_a_user_value_wins(
    model_dir,
):
    created: list[dict] = []

    def factory(config: dict) -> object:
        created.append(config)
        return object()

    for extra in ((), ("-X", "consumer.statistics.interval.ms=750")):
        argv = ["--model", str(model_dir), *extra]
        settings = load_settings(argv, environ={})
        worker = Worker(
            settings,
            load_model(model_dir),
            Metrics(CollectorRegistry()),
            consumer_factory=factory,
            producer_factory=lambda config: object(),
        )
        assert created[-1]["stats_cb"] == worker.liveness.on_stats

    assert created[0]["statistics.interval.ms"] == STATS_INTERVAL_MS
    assert created[1]["statistics.interval.ms"] == "750"


def test_statistics_turned_off_turn_the_check_off_with_a_warning(model_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="worker.app"):
        worker = _worker(model_dir, "-X", "statistics.interval.ms=0")

    assert not worker.liveness.enabled
    assert "group liveness check off" in caplog.text


def test_real_client_without_a_broker_turns_unhealthy_after_the_limit(model_dir):
    # Real librdkafka statistics from a consumer that cannot reach its coordinator
    # (nothing listens on 127.0.0.1:1): the group never settles.
    worker = _worker(
        model_dir,
        "--unhealthy-after-s",
        "1",
        "-X",
        "consumer.statistics.interval.ms=100",
        "--metrics-port",
        "-1",
    )
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        wait_for(
            lambda: worker.liveness.problem() is not None, 20, "an unhealthy verdict"
        )
    finally:
        worker.stop()
        thread.join(30)

    assert not thread.is_alive()
    state = worker.liveness.group_state
    assert state is not None and state != ("up", "steady")


@pytest.mark.integration
@pytest.mark.parametrize("protocol", ["classic", "consumer"])
def test_running_worker_gets_statistics_and_healthz_stays_200(
    kafka_bootstrap, make_topic, model_dir, protocol
):
    source = make_topic(prefix="tx")
    argv = worker_argv(
        kafka_bootstrap,
        model_dir,
        source,
        f"{source}-g",
        unhealthy_after_s=1,
        X=[
            "consumer.statistics.interval.ms=100",
            f"consumer.group.protocol={protocol}",
        ],
    )

    with running_worker(argv) as run:
        liveness = run.worker.liveness
        server = MetricsServer(
            "127.0.0.1", 0, run.registry, lambda: run.worker.ready, liveness.problem
        )
        server.start()
        try:
            wait_for(
                lambda: liveness.group_state == ("up", "steady"), 60, "a steady group"
            )
            url = f"http://127.0.0.1:{server.port}/healthz"
            # Three limits long: without fresh steady statistics every 100 ms the
            # answer would turn 503 after 1 s.
            answers = []
            deadline = time.monotonic() + 3.0
            while time.monotonic() < deadline:
                answers.append(_get(url))
                time.sleep(0.2)
        finally:
            server.stop()

    assert len(answers) >= 5
    assert set(answers) == {(200, "ok\n")}
    assert run.outcome == {"code": 0}


@pytest.mark.integration
def test_extra_worker_without_partitions_is_steady_and_healthy(
    kafka_bootstrap, make_topic, model_dir
):
    source = make_topic(partitions=1, prefix="tx")
    argv = worker_argv(
        kafka_bootstrap,
        model_dir,
        source,
        f"{source}-g",
        unhealthy_after_s=1,
        X=["consumer.statistics.interval.ms=100"],
    )

    with running_worker(argv) as first, running_worker(argv) as second:
        workers = (first.worker, second.worker)
        wait_for(
            lambda: (
                sum(w.ready for w in workers) == 1
                and all(w.liveness.group_state == ("up", "steady") for w in workers)
            ),
            60,
            "one worker with the partition, both in a steady group",
        )
        time.sleep(2.0)
        problems = [w.liveness.problem() for w in workers]
        idle = [w for w in workers if not w.ready]

    assert problems == [None, None]
    assert len(idle) == 1
