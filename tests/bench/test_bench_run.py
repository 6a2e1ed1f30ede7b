"""Smoke test of ``fraud-bench --quick`` against the session's real broker.

Timings on a shared CI machine say nothing, so no rate is compared with a target
here: the test checks that a quick run completes, that the result file holds every
key the benchmark promises with positive values, and that the chart is written.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench import run as bench_run

pytestmark = [pytest.mark.integration, pytest.mark.slow]

_RATES = ("passthrough_eps", "seed_style_eps", "per_event_eps", "worker_eps")


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def quick_result(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[int, Path]:
    out = tmp_path_factory.mktemp("bench")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
        code = bench_run.main(["--quick", "--out", str(out)])
    return code, out


def test_quick_run_exits_zero(quick_result: tuple[int, Path]) -> None:
    code, _ = quick_result
    assert code == 0


def test_quick_run_reports_every_rate_as_a_positive_number(
    quick_result: tuple[int, Path],
) -> None:
    result = json.loads((quick_result[1] / "latest.json").read_text())
    for key in _RATES:
        assert _positive(result[key]), f"{key}={result[key]!r}"
    assert _positive(result["worker_rss_mb"])
    assert _positive(result["worker_cpu_s_per_million"])
    assert result["cpu_count"] >= 1
    assert result["commit"] and result["commit"] != "unknown"


def test_quick_run_reports_p99_at_20k_or_says_the_worker_saturated(
    quick_result: tuple[int, Path],
) -> None:
    result = json.loads((quick_result[1] / "latest.json").read_text())
    at20 = [p for p in result["variants"]["d"]["latency"] if p["offered_eps"] == 20_000]
    assert len(at20) == 1
    if at20[0]["saturated"]:
        assert result["p99_ms_at_20k"] is None
    else:
        assert _positive(result["p99_ms_at_20k"])
        assert at20[0]["p50_ms"] <= at20[0]["p95_ms"] <= at20[0]["p99_ms"]


def test_quick_run_measures_the_consume_only_latency_floor(
    quick_result: tuple[int, Path],
) -> None:
    result = json.loads((quick_result[1] / "latest.json").read_text())
    assert _positive(result["floor_p99_ms_at_20k"])
    offered = [p["offered_eps"] for p in result["variants"]["floor"]["latency"]]
    assert offered == list(bench_run.QUICK.loads)


def test_quick_run_holds_ratios_targets_and_sweep(
    quick_result: tuple[int, Path],
) -> None:
    result = json.loads((quick_result[1] / "latest.json").read_text())
    assert set(result["ratios"]) == {"d_over_a", "d_over_b", "d_over_c"}
    assert all(_positive(v) for v in result["ratios"].values())
    assert [t["name"] for t in result["targets"]] == [
        "d throughput",
        "d / a",
        "d p99 at 20k ev/s",
        "d peak RSS",
    ]
    assert len(result["sweep"]) == len(bench_run.QUICK.sweep)
    for point in result["sweep"]:
        assert _positive(point["eps"]) and _positive(point["cpu_s_per_million"])


def test_quick_run_writes_the_latency_chart(quick_result: tuple[int, Path]) -> None:
    result = json.loads((quick_result[1] / "latest.json").read_text())
    png = Path(result["png"])
    assert png.is_file()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
