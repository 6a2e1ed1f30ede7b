"""The demo driver reads the worker's metrics right and runs end to end."""

from __future__ import annotations

import json
import math
import os
import shlex
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

_EXPOSITION = """\
# HELP fraud_worker_end_to_end_latency_seconds From Kafka timestamp to ack.
# TYPE fraud_worker_end_to_end_latency_seconds histogram
fraud_worker_end_to_end_latency_seconds_bucket{le="0.01"} 50.0
fraud_worker_end_to_end_latency_seconds_bucket{le="0.02"} 90.0
fraud_worker_end_to_end_latency_seconds_bucket{le="0.05"} 100.0
fraud_worker_end_to_end_latency_seconds_bucket{le="+Inf"} 100.0
fraud_worker_end_to_end_latency_seconds_count 100.0
fraud_worker_end_to_end_latency_seconds_sum 1.2
# HELP fraud_worker_dead_letters_total Dead letters.
# TYPE fraud_worker_dead_letters_total counter
fraud_worker_dead_letters_total{reason="not_json"} 3.0
fraud_worker_dead_letters_total{reason="empty"} 2.0
"""
_DEMO_TIMEOUT_S = 240


def test_metrics_text_is_summed_by_name_and_histograms_keep_their_buckets(demo):
    snapshot = demo.parse_metrics(_EXPOSITION)

    assert snapshot.get("fraud_worker_dead_letters_total") == 5.0
    assert snapshot.get("fraud_worker_end_to_end_latency_seconds_count") == 100.0
    assert snapshot.histogram("fraud_worker_end_to_end_latency_seconds") == (
        (0.01, 50.0),
        (0.02, 90.0),
        (0.05, 100.0),
        (math.inf, 100.0),
    )


@pytest.mark.parametrize(
    ("q", "expected"),
    [(0.5, 0.01), (0.7, 0.015), (0.9, 0.02), (0.95, 0.035), (0.25, 0.005)],
    ids=["bucket-edge", "mid-second-bucket", "second-edge", "mid-third", "first"],
)
def test_quantiles_interpolate_within_buckets_like_prometheus(demo, q, expected):
    buckets = demo.parse_metrics(_EXPOSITION).histogram(
        "fraud_worker_end_to_end_latency_seconds"
    )

    assert demo.histogram_quantile(q, buckets) == pytest.approx(expected)


def test_quantile_in_the_infinite_bucket_is_the_largest_finite_bound(demo):
    buckets = ((0.1, 10.0), (1.0, 90.0), (math.inf, 100.0))

    assert demo.histogram_quantile(0.99, buckets) == 1.0


def test_quantile_of_an_empty_histogram_is_nan(demo):
    assert math.isnan(demo.histogram_quantile(0.5, ((0.1, 0.0), (math.inf, 0.0))))
    assert math.isnan(demo.histogram_quantile(0.5, ()))


def test_bucket_growth_between_scrapes_is_what_the_phase_observed(demo):
    before = ((0.01, 40.0), (0.1, 50.0), (math.inf, 50.0))
    after = ((0.01, 41.0), (0.1, 150.0), (math.inf, 152.0))

    grown = demo.subtract_buckets(after, before)

    assert grown == ((0.01, 1.0), (0.1, 100.0), (math.inf, 102.0))


def test_verdict_counts_caught_missed_and_false_alarms_from_the_labels(demo):
    labels = {"a": 1, "b": 1, "c": 0, "d": 0, "e": 0}
    alerts = {"a": 0.9, "c": 0.7, "zz-not-replayed": 0.99}

    verdict = demo.Verdict.judge(labels, alerts)

    assert (verdict.events, verdict.frauds, verdict.alerts) == (5, 2, 2)
    assert (verdict.caught, verdict.missed, verdict.false_alarms) == (1, 1, 1)


def test_training_command_shown_is_the_one_run_and_runs_from_the_root(
    demo, tmp_path, monkeypatch, capsys
):
    ran: list[list[str]] = []

    def fake_run(command, **kwargs):
        ran.append(command)
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(demo.subprocess, "run", fake_run)

    demo.train(tmp_path / "model", None, 1000, retrain=True)

    shown = next(
        line for line in capsys.readouterr().out.splitlines() if "$ " in line
    ).split("$ ", 1)[1]
    program, *rest = shlex.split(shown)
    assert (ROOT / program).resolve() == Path(ran[0][0]).resolve()
    assert os.access(ROOT / program, os.X_OK)
    assert rest == ran[0][1:]
    assert rest[:2] == ["-m", "trainer"]


def _write_rows(path: Path, rows: int) -> Path:
    columns = ["Time", *(f"V{i}" for i in range(1, 29)), "Amount", "Class"]
    lines = [",".join(columns)]
    lines += [",".join(["0"] * (len(columns) - 1) + [str(i % 2)]) for i in range(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_file_is_replayed_with_its_real_row_count_under_one_id_prefix(demo, tmp_path):
    data = _write_rows(tmp_path / "cards.csv", 30)

    rows = demo.count_file_rows(data)
    backlog, paced = demo.plan_phases(data, rows, 200_000, 20_000, 2000.0, tmp_path)

    assert rows == 30
    assert (backlog.events, paced.events) == (30, 30)
    assert backlog.id_prefix == paced.id_prefix
    assert backlog.source_args == paced.source_args == ("--data", str(data))


def test_synthetic_phases_replay_different_rows_under_different_prefixes(
    demo, tmp_path
):
    backlog, paced = demo.plan_phases(None, 0, 5000, 1500, 1000.0, tmp_path)

    assert (backlog.events, paced.events) == (5000, 1500)
    assert backlog.id_prefix != paced.id_prefix
    assert backlog.source_args != paced.source_args


def test_a_file_replayed_twice_is_judged_once_per_transaction(demo, tmp_path):
    paths = []
    for name in ("backlog", "paced"):
        path = tmp_path / f"labels-{name}.csv"
        path.write_text("transaction_id,Class\nd-1,1\nd-2,0\nd-3,0\n")
        paths.append(path)
    phases = [
        demo.Phase("backlog", 3, 0.0, paths[0], busy_s=2.0),
        demo.Phase("paced", 3, 100.0, paths[1]),
    ]

    verdict = demo.Verdict.judge(demo.read_labels(paths), {"d-1": 0.9, "d-2": 0.8})
    text = demo.format_summary(
        verdict, phases, demo.parse_metrics(""), "http://x/metrics", tmp_path, 0.5, 1.0
    )

    assert (verdict.events, verdict.frauds, verdict.caught) == (3, 1, 1)
    assert "events scored   6  (rows of one file replayed in 2 phases" in text
    assert "transactions    3  (1 fraud, 2 legitimate" in text


@pytest.mark.parametrize(
    ("busy_s", "expected"),
    [(0.14, "throughput      not measured"), (2.0, "throughput      2,500 events/s")],
    ids=["too-short", "timed"],
)
def test_throughput_is_given_only_for_a_drain_long_enough_to_time(
    demo, tmp_path, busy_s, expected
):
    labels = {"s-1": 0}
    phases = [demo.Phase("backlog", 5000, 0.0, tmp_path / "l.csv", busy_s=busy_s)]

    text = demo.format_summary(
        demo.Verdict.judge(labels, {}), phases, demo.parse_metrics(""),
        "http://x/metrics", tmp_path, 0.5, 1.0,
    )  # fmt: skip

    assert expected in text


def test_demo_only_flags_can_be_set_from_the_environment(demo, monkeypatch, tmp_path):
    monkeypatch.setenv("DEMO_HOLD", "1")
    monkeypatch.setenv("DEMO_RETRAIN", "yes")
    monkeypatch.setenv("DEMO_MODEL", str(tmp_path / "model"))
    monkeypatch.setenv("DEMO_OUT", str(tmp_path / "out"))

    args = demo.build_parser().parse_args([])

    assert args.hold and args.retrain
    assert (args.model, args.out) == (tmp_path / "model", tmp_path / "out")


def test_demo_flags_default_off_and_a_bad_flag_value_is_refused(demo, monkeypatch):
    for name in ("DEMO_HOLD", "DEMO_RETRAIN", "DEMO_MODEL", "DEMO_OUT"):
        monkeypatch.delenv(name, raising=False)
    args = demo.build_parser().parse_args([])
    assert not args.hold and not args.retrain and args.model is None
    assert args.out == ROOT / "out" / "demo"

    monkeypatch.setenv("DEMO_HOLD", "maybe")
    with pytest.raises(demo.DemoError, match="DEMO_HOLD must be 1 or 0"):
        demo.build_parser()


class _FakeLauncher:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def stop(self, broker: object) -> bool:
        self.calls.append("stop")
        return True

    def down(self, broker: object) -> bool:
        self.calls.append("down")
        return True


@pytest.mark.parametrize(
    ("data_ours", "call"), [(True, "down"), (False, "stop")], ids=["ours", "older"]
)
def test_a_broker_the_demo_started_loses_its_data_only_if_the_demo_made_it(
    demo, tmp_path, data_ours, call
):
    launcher = _FakeLauncher()
    broker = demo.load_launcher().Broker(1, 2, tmp_path)

    demo.stop_broker(launcher, broker, data_ours)

    assert launcher.calls == [call]


def _free_port_pair() -> int:
    for _ in range(50):
        with socket.socket() as a, socket.socket() as b:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            try:
                b.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return int(port)
    raise RuntimeError("no two consecutive free ports on 127.0.0.1")


def _check_summary(out: Path, events: int, backlog: int) -> dict:
    result = json.loads((out / "summary.json").read_text())
    verdict = result["verdict"]
    assert verdict["events"] == events + backlog
    assert result["consumed"] == events + backlog
    assert verdict["caught"] + verdict["missed"] == verdict["frauds"]
    assert verdict["caught"] + verdict["false_alarms"] == verdict["alerts"]
    assert verdict["alerts"] == result["alerts_counted"]
    backlog_phase, paced = result["phases"]
    assert backlog_phase["name"] == "backlog"
    if backlog_phase["busy_s"] >= 1.0:
        assert backlog_phase["throughput"] > 0
    else:
        assert backlog_phase["throughput"] is None
    assert result["events_scored"] == events + backlog
    assert 0 < paced["latency_p50_s"] <= paced["latency_p99_s"]
    return result


@pytest.mark.integration
def test_demo_on_a_given_broker_uses_private_topics_and_deletes_them(
    demo, tiny_model_dir, kafka_bootstrap, kafka_admin, tmp_path
):
    out = tmp_path / "demo"
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
    topics_before = set(kafka_admin.list_topics(timeout=10).topics)

    result = subprocess.run(
        [
            sys.executable, str(ROOT / "deploy" / "demo.py"),
            "--model", str(tiny_model_dir), "--out", str(out),
            "--events", "1500", "--rate", "1000", "--backlog-events", "5000",
        ],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=_DEMO_TIMEOUT_S,
    )  # fmt: skip

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "frauds caught" in result.stdout and "false alarms" in result.stdout
    assert "worker stopped (exit code 0)" in result.stdout
    assert "broker stopped" not in result.stdout
    _check_summary(out, events=1500, backlog=5000)
    leftover = set(kafka_admin.list_topics(timeout=10).topics) - topics_before
    assert not {name for name in leftover if name.startswith("demo-")}


@pytest.mark.integration
def test_demo_from_scratch_trains_starts_a_broker_and_stops_it(demo, tmp_path):
    launcher = demo.load_launcher()
    port = _free_port_pair()
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    env["KAFKA_PORT"] = str(port)
    out = tmp_path / "demo"
    broker = launcher.Broker(port, port + 1, launcher.Broker.from_env().home)

    try:
        result = subprocess.run(
            [
                sys.executable, str(ROOT / "deploy" / "demo.py"), "--out", str(out),
                "--train-rows", "20000", "--events", "1000", "--rate", "1000",
                "--backlog-events", "10000",
            ],
            env=env, cwd=ROOT, capture_output=True, text=True,
            timeout=_DEMO_TIMEOUT_S,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert f"started the local broker at 127.0.0.1:{port}" in result.stdout
        assert "local Kafka broker stopped and its data deleted" in result.stdout
        assert not launcher.answers(f"127.0.0.1:{port}")
        assert not broker.data_dir.exists()
        assert (out / "model" / "model.onnx").is_file()
        _check_summary(out, events=1000, backlog=10000)
    finally:
        launcher.down(broker)


def test_an_unreachable_given_broker_is_reported_with_advice(demo):
    with pytest.raises(demo.DemoError, match="unset it to let the demo start"):
        demo.check_broker("127.0.0.1:1", timeout_s=1.0)


@pytest.mark.integration
def test_sigterm_while_holding_stops_the_worker_and_deletes_the_topics(
    tiny_model_dir, kafka_bootstrap, kafka_admin, tmp_path
):
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
    env.pop("PYTHONUNBUFFERED", None)  # the demo must flush its own lines
    topics_before = set(kafka_admin.list_topics(timeout=10).topics)
    process = subprocess.Popen(
        [
            sys.executable, str(ROOT / "deploy" / "demo.py"),
            "--model", str(tiny_model_dir), "--out", str(tmp_path / "demo"),
            "--events", "200", "--rate", "1000", "--backlog-events", "0", "--hold",
        ],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    output: list[str] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line)
            if line.startswith("Worker still running"):
                process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=_DEMO_TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
    text = "".join(output)

    # SIGTERM ends the hold the way Ctrl-C does: through the normal cleanup.
    assert code == 0, text
    assert "7. stopping" in text and "worker stopped (exit code 0)" in text
    leftover = set(kafka_admin.list_topics(timeout=10).topics) - topics_before
    assert not {name for name in leftover if name.startswith("demo-")}
