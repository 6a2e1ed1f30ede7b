"""Prometheus config, rules and dashboard are valid and query what the worker exports.

The checks use Debian's ``prometheus`` package (``promtool`` and ``prometheus``);
``deploy/prometheus/ensure-prometheus.sh`` installs it when missing.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from worker.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "fraudstream.json"

# The metric names of the shared contract: what dashboards and rules may rely on.
CONTRACT_COUNTERS = (
    "fraud_worker_events_consumed_total",
    "fraud_worker_alerts_total",
    "fraud_worker_dead_letters_total",
    "fraud_worker_batches_total",
    "fraud_worker_commits_total",
    "fraud_worker_produce_errors_total",
)
CONTRACT_HISTOGRAMS = (
    "fraud_worker_batch_size_events",
    "fraud_worker_inference_seconds",
    "fraud_worker_end_to_end_latency_seconds",
)
CONTRACT_GAUGES = (
    "fraud_worker_consumer_lag_events",
    "fraud_worker_model_info",
    "fraud_worker_ready",
)
# Series Prometheus itself writes for every scrape target.
SCRAPE_SERIES = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})

_PROMQL_WORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool"}
    | {"and", "or", "unless", "inf", "nan", "atan2"}
)
# Waits, not speed checks: each returns as soon as its answer comes (seconds when
# idle), and is long enough for a machine whose load average is well above its cores.
_START_TIMEOUT_S = 90.0
_SCRAPE_TIMEOUT_S = 90.0
# Rule groups are first evaluated at an offset within their interval (1 s here).
_RULES_TIMEOUT_S = 90.0
_EVENTS = 300


def _histogram_series(name: str) -> set[str]:
    return {f"{name}_bucket", f"{name}_count", f"{name}_sum"}


def contract_series() -> set[str]:
    names = set(CONTRACT_COUNTERS) | set(CONTRACT_GAUGES)
    for name in CONTRACT_HISTOGRAMS:
        names |= _histogram_series(name)
    return names


def registered_series() -> set[str]:
    """Series names the worker's metrics object registers, read from a registry."""
    registry = CollectorRegistry()
    Metrics(registry)
    names: set[str] = set()
    for family in registry.collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names |= _histogram_series(family.name)
        else:
            names.add(family.name)
    return names


def metric_names(expr: str) -> set[str]:
    """Names of the series a PromQL expression selects.

    Strings, label matchers, ranges, grouping clauses and Grafana variables are
    dropped first; what is left and is neither a function call nor a keyword is a
    metric name.
    """
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"'(?:[^'\\]|\\.)*'", "''", text)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(
        r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text
    )
    text = re.sub(r"\$\{?\w+\}?", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w:.])([A-Za-z_:][\w:]*)(\s*\()?", text):
        name, call = match.groups()
        if call is None and name.lower() not in _PROMQL_WORDS:
            names.add(name)
    return names


def rule_groups() -> list[dict[str, Any]]:
    yaml = pytest.importorskip(
        "yaml", reason="PyYAML comes with the test extra: pip install -e '.[test]'"
    )
    groups: list[dict[str, Any]] = yaml.safe_load(
        (PROMETHEUS_DIR / "rules.yml").read_text()
    )["groups"]
    return groups


def rule_exprs() -> list[str]:
    return [rule["expr"] for group in rule_groups() for rule in group["rules"]]


def recorded_names() -> set[str]:
    return {
        rule["record"]
        for group in rule_groups()
        for rule in group["rules"]
        if "record" in rule
    }


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


@pytest.fixture(scope="session")
def prometheus_tools() -> dict[str, str]:
    """Paths of ``promtool`` and ``prometheus``, installed if missing."""
    if not (shutil.which("promtool") and shutil.which("prometheus")):
        script = PROMETHEUS_DIR / "ensure-prometheus.sh"
        result = subprocess.run(
            ["sh", str(script)], capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            pytest.fail(
                f"{script} could not install Prometheus:\n{result.stdout}"
                f"{result.stderr}"
            )
    tools = {name: shutil.which(name) for name in ("promtool", "prometheus")}
    missing = [name for name, path in tools.items() if path is None]
    assert not missing, f"still not on PATH after ensure-prometheus.sh: {missing}"
    return {name: str(path) for name, path in tools.items()}


def rules_in_file(tools: dict[str, str]) -> int:
    """How many rules ``promtool check rules`` counts in rules.yml."""
    result = _promtool(tools, "check", "rules", "rules.yml")
    found = re.search(r"SUCCESS: (\d+) rules found", result.stdout)
    assert found, result.stdout + result.stderr
    return int(found.group(1))


def _promtool(tools: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tools["promtool"], *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=PROMETHEUS_DIR,
    )


# --- static checks -------------------------------------------------------------------


def test_promtool_accepts_the_prometheus_config(prometheus_tools):
    result = _promtool(prometheus_tools, "check", "config", "prometheus.yml")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_accepts_the_rules(prometheus_tools):
    result = _promtool(prometheus_tools, "check", "rules", "rules.yml")

    assert result.returncode == 0, result.stdout + result.stderr
    assert rules_in_file(prometheus_tools) == len(rule_exprs())


def test_rules_fire_as_their_unit_tests_expect(prometheus_tools):
    result = _promtool(prometheus_tools, "test", "rules", "rules_test.yml")

    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("sum by (job, le) (rate(a_total[5m]))", {"a_total"}),
        ('up{job="fraud-worker"} == 0', {"up"}),
        ("b / on (x) group_left (y) c > 0.5", {"b", "c"}),
        (
            "histogram_quantile(0.99, sum(rate(d_bucket[$__rate_interval])))",
            {"d_bucket"},
        ),
        ("avg_over_time(job:e:rate10m[1d] offset 1d) > 3e2", {"job:e:rate10m"}),
    ],
    ids=["grouping", "matcher", "vector-matching", "grafana-variable", "recorded"],
)
def test_metric_names_are_read_out_of_promql(expr, expected):
    assert metric_names(expr) == expected


def test_the_worker_registers_every_metric_of_the_contract():
    assert contract_series() <= registered_series()


@pytest.mark.parametrize(
    "source", ["rules", "dashboard"], ids=["alert-rules", "grafana-dashboard"]
)
def test_every_queried_metric_is_one_the_worker_exports(source):
    exprs = rule_exprs() if source == "rules" else dashboard_exprs()
    allowed = (contract_series() & registered_series()) | SCRAPE_SERIES
    allowed |= recorded_names()

    queried = set().union(*(metric_names(expr) for expr in exprs))

    assert queried, f"no metric found in the {source}"
    assert queried <= allowed, f"unknown metrics: {sorted(queried - allowed)}"


def test_dashboard_shows_rates_batch_size_latency_and_lag_per_partition():
    exprs = dashboard_exprs()
    queried = set().union(*(metric_names(expr) for expr in exprs))

    assert {
        "fraud_worker_events_consumed_total",
        "fraud_worker_alerts_total",
        "fraud_worker_dead_letters_total",
        "fraud_worker_batch_size_events_bucket",
        "fraud_worker_end_to_end_latency_seconds_bucket",
        "fraud_worker_consumer_lag_events",
    } <= queried
    assert any("by (topic, partition)" in expr for expr in exprs)
    assert any("histogram_quantile(0.99" in expr for expr in exprs)


def test_alert_rules_cover_down_lag_latency_dead_letters_and_alert_rate():
    alerts = {
        rule["alert"]
        for group in rule_groups()
        for rule in group["rules"]
        if "alert" in rule
    }

    assert {
        "FraudWorkerDown",
        "FraudWorkerLagGrowing",
        "FraudWorkerLatencyOverBudget",
        "FraudWorkerDeadLetterRate",
        "FraudAlertRateAnomaly",
    } <= alerts


# --- a real Prometheus scraping a real worker -----------------------------------------


def _get(base: str, path: str, **params: str) -> dict[str, Any]:
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    with urllib.request.urlopen(f"{base}{path}{query}", timeout=5) as response:
        body: dict[str, Any] = json.loads(response.read())
    return body


def _wait_for(what: str, check: Callable[[], Any], timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except OSError as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}; last answer: {last!r}")


@pytest.fixture
def prometheus_server(
    prometheus_tools, running_worker, demo, tmp_path
) -> Iterator[tuple[str, Any, Any]]:
    """A Prometheus process on a free port, scraping the running worker every second."""
    worker, topics = running_worker
    worker_address = worker.metrics_url.split("/")[2]
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(PROMETHEUS_DIR / "rules.yml")],
        "scrape_configs": [
            {
                "job_name": "fraud-worker",
                "static_configs": [{"targets": [worker_address]}],
            }
        ],
    }
    config_path = tmp_path / "prometheus.yml"
    config_path.write_text(json.dumps(config))  # JSON is valid YAML
    port = demo.free_port()
    log_path = tmp_path / "prometheus.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                prometheus_tools["prometheus"],
                f"--config.file={config_path}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            assert process.poll() is None, log_path.read_text()[-2000:]
            with urllib.request.urlopen(f"{base}/-/ready", timeout=2) as response:
                return bool(response.status == 200)

        _wait_for("Prometheus to be ready", ready, _START_TIMEOUT_S)
        yield base, worker, topics
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.integration
def test_prometheus_scrapes_the_worker_and_loads_the_rules(
    prometheus_server, prometheus_tools, kafka_bootstrap
):
    from worker import replay

    base, worker, topics = prometheus_server

    # 1. the worker is a healthy target
    def target_up() -> dict[str, Any] | None:
        targets = _get(base, "/api/v1/targets")["data"]["activeTargets"]
        return next((t for t in targets if t["health"] == "up"), None)

    target = _wait_for("the worker target to be up", target_up, _SCRAPE_TIMEOUT_S)
    assert target["labels"]["job"] == "fraud-worker"
    assert target["scrapeUrl"] == worker.metrics_url

    # 2. events replayed through the worker show up in a Prometheus query
    code = replay.main(
        [
            "--synthetic", str(_EVENTS), "--topic", topics.input,
            "--bootstrap-servers", kafka_bootstrap, "--no-progress",
        ]
    )  # fmt: skip
    assert code == 0

    def consumed() -> float | None:
        result = _get(
            base, "/api/v1/query", query="sum(fraud_worker_events_consumed_total)"
        )["data"]["result"]
        value = float(result[0]["value"][1]) if result else 0.0
        return value if value >= _EVENTS else None

    assert _wait_for("the consumed count", consumed, _SCRAPE_TIMEOUT_S) == _EVENTS
    ready = _get(base, "/api/v1/query", query="fraud_worker_ready")["data"]["result"]
    assert [float(sample["value"][1]) for sample in ready] == [1.0]

    # 3. every rule loaded and evaluates without error
    def rules_evaluated() -> list[dict[str, Any]] | None:
        groups = _get(base, "/api/v1/rules")["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        done = rules and all(rule.get("lastEvaluation", "").startswith("20")
                             for rule in rules)  # fmt: skip
        return rules if done else None

    rules = _wait_for("every rule to be evaluated", rules_evaluated, _RULES_TIMEOUT_S)
    assert len(rules) == rules_in_file(prometheus_tools)
    assert {rule["name"] for rule in rules} >= {
        "FraudWorkerDown",
        "FraudAlertRateAnomaly",
    }
    assert [rule["name"] for rule in rules if rule["health"] != "ok"] == []
    firing = _get(base, "/api/v1/alerts")["data"]["alerts"]
    assert [a["labels"]["alertname"] for a in firing if a["state"] == "firing"] == []

    # 4. every dashboard query is valid PromQL on this server
    for expr in dashboard_exprs():
        answer = _get(
            base, "/api/v1/query", query=expr.replace("$__rate_interval", "1m")
        )
        assert answer["status"] == "success", (expr, answer)
