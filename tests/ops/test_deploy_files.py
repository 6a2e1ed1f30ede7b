"""Compose, Dockerfiles and Kubernetes manifests agree with each other and the code.

No Docker engine or cluster is needed: the files are parsed and cross-checked, and
the worker's own settings loader reads the environment they give it.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import shutil
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from worker import app as worker_app
from worker.config import build_parser, load_settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
DOCKER = ROOT / "deploy" / "docker"


def _yaml_module() -> Any:
    return pytest.importorskip(
        "yaml", reason="PyYAML comes with the test extra: pip install -e '.[test]'"
    )


def _yaml(path: Path) -> Any:
    return _yaml_module().safe_load(path.read_text())


def _k8s(kind: str) -> dict[str, Any]:
    for path in sorted(K8S.glob("*.yaml")):
        for doc in _yaml_module().safe_load_all(path.read_text()):
            if doc and doc.get("kind") == kind:
                return doc
    raise AssertionError(f"no {kind} in {K8S}")


def _worker_env_names() -> set[str]:
    return set(re.findall(r"\b(?:FRAUD|KAFKA)_[A-Z_]+\b", build_parser().format_help()))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return _yaml(ROOT / "docker-compose.yml")


def _project() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


# --- docker-compose.yml --------------------------------------------------------------


def test_compose_runs_the_whole_stack(compose):
    assert {"kafka", "kafka-init", "trainer", "worker", "prometheus", "grafana"} <= set(
        compose["services"]
    )
    worker = compose["services"]["worker"]
    assert worker["build"]["dockerfile"] == "deploy/docker/worker.Dockerfile"
    assert compose["services"]["trainer"]["build"]["dockerfile"] == (
        "deploy/docker/trainer.Dockerfile"
    )
    assert worker["depends_on"]["kafka-init"]["condition"] == (
        "service_completed_successfully"
    )


def test_compose_kafka_is_the_release_the_local_launcher_runs(compose):
    pom = ET.parse(ROOT / "deploy" / "kafka" / "pom.xml").getroot()
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    node = pom.find("m:properties/m:kafka.version", ns)
    assert node is not None and node.text
    version = node.text.strip()

    assert compose["services"]["kafka"]["image"] == f"apache/kafka:{version}"
    environment = compose["services"]["kafka"]["environment"]
    assert environment["KAFKA_PROCESS_ROLES"] == "broker,controller"
    volumes = compose["services"]["kafka"]["volumes"]
    assert environment["KAFKA_LOG_DIRS"] in [v.split(":")[1] for v in volumes]


def test_compose_worker_settings_are_ones_the_worker_reads(compose):
    environment = compose["services"]["worker"]["environment"]

    assert set(environment) <= _worker_env_names()
    settings = load_settings(
        list(compose["services"]["worker"]["command"]),
        environ={k: str(v) for k, v in environment.items()},
    )
    assert settings.bootstrap_servers == "kafka:9092"
    assert settings.metrics_port == 9108


def test_compose_mounts_only_files_that_exist(compose):
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            if volume.startswith("${"):  # ${VAR:-default}:/target
                source = volume[2 : volume.index("}")].split(":-", 1)[1]
            else:
                source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"


def test_compose_prometheus_scrapes_the_worker_port(compose):
    config = _yaml(ROOT / "deploy" / "prometheus" / "prometheus.yml")
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "fraud-worker")
    port = int(compose["services"]["worker"]["environment"]["FRAUD_METRICS_PORT"])

    assert job["dns_sd_configs"][0]["names"] == ["worker"]
    assert job["dns_sd_configs"][0]["port"] == port


def test_grafana_provisioning_points_at_the_dashboard_and_prometheus(compose):
    grafana = compose["services"]["grafana"]
    mounts = dict(v.split(":")[:2] for v in grafana["volumes"])
    provider = _yaml(ROOT / "deploy/grafana/provisioning/dashboards/fraudstream.yml")[
        "providers"
    ][0]
    source = _yaml(ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml")

    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    assert (ROOT / "deploy/grafana/dashboards/fraudstream.json").is_file()
    assert source["datasources"][0]["url"] == "http://prometheus:9090"


# --- Dockerfiles ---------------------------------------------------------------------


def _copied_sources(dockerfile: Path) -> set[str]:
    sources = set()
    for line in dockerfile.read_text().splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            sources |= set(line.split()[1:-1])
    return sources


@pytest.mark.parametrize("image", ["worker", "trainer"])
def test_images_copy_every_package_and_their_ignore_file_lets_it_in(image):
    dockerfile = DOCKER / f"{image}.Dockerfile"
    packages = set(_project()["tool"]["setuptools"]["packages"])
    ignore = (DOCKER / f"{image}.Dockerfile.dockerignore").read_text().splitlines()

    copied = _copied_sources(dockerfile)

    assert packages <= copied
    for source in copied:
        assert (ROOT / source).exists(), f"{dockerfile.name} copies missing {source}"
        assert f"!{source}" in ignore or f"!{source}/" in ignore


def test_worker_image_installs_the_base_package_without_tensorflow():
    text = (DOCKER / "worker.Dockerfile").read_text()
    base_dependencies = " ".join(_project()["project"]["dependencies"]).lower()

    assert "pip wheel --no-cache-dir --wheel-dir /wheels ." in text
    assert "[train]" not in text
    assert "tensorflow" not in base_dependencies
    assert 'ENTRYPOINT ["fraud-worker"]' in text


def test_trainer_image_installs_the_train_extra():
    text = (DOCKER / "trainer.Dockerfile").read_text()

    assert 'pip install --no-cache-dir ".[train]"' in text
    assert 'ENTRYPOINT ["fraud-train"]' in text


# --- Kubernetes ----------------------------------------------------------------------


def test_kustomization_lists_every_manifest():
    listed = set(_yaml(K8S / "kustomization.yaml")["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}

    assert listed == present


def test_configmap_is_a_valid_worker_configuration():
    data = _k8s("ConfigMap")["data"]

    assert set(data) <= _worker_env_names()
    settings = load_settings([], environ=data)
    assert settings.input_topic == "transactions"
    assert str(settings.model_dir) == "/models/current"


def test_deployment_probes_and_port_match_the_worker_and_its_image():
    deployment = _k8s("Deployment")
    config = _k8s("ConfigMap")["data"]
    pod = deployment["spec"]["template"]
    container = pod["spec"]["containers"][0]
    port = container["ports"][0]

    assert deployment["spec"]["selector"]["matchLabels"].items() <= (
        pod["metadata"]["labels"].items()
    )
    assert port["containerPort"] == int(config["FRAUD_METRICS_PORT"])
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(
        port["containerPort"]
    )
    assert "USER 10001" in (DOCKER / "worker.Dockerfile").read_text()
    assert pod["spec"]["securityContext"]["runAsUser"] == 10001


def test_deployment_grace_period_outlasts_the_workers_longest_graceful_stop():
    pod = _k8s("Deployment")["spec"]["template"]["spec"]
    longest_stop_s = worker_app._FLUSH_TIMEOUT_S + worker_app._CLOSE_TIMEOUT_S

    # The margin covers the batch in flight and the last, synchronous commit.
    assert pod["terminationGracePeriodSeconds"] >= longest_stop_s + 10


def test_service_selects_the_worker_pods():
    service = _k8s("Service")
    labels = _k8s("Deployment")["spec"]["template"]["metadata"]["labels"]

    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"


def test_keda_scales_the_deployment_on_the_workers_group_lag():
    scaled = _k8s("ScaledObject")
    config = _k8s("ConfigMap")["data"]
    trigger = scaled["spec"]["triggers"][0]

    assert (
        scaled["spec"]["scaleTargetRef"]["name"]
        == _k8s("Deployment")["metadata"]["name"]
    )
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["consumerGroup"] == config["FRAUD_GROUP_ID"]
    assert trigger["metadata"]["topic"] == config["FRAUD_INPUT_TOPIC"]
    assert trigger["metadata"]["bootstrapServers"] == config["FRAUD_BOOTSTRAP_SERVERS"]
    assert int(trigger["metadata"]["lagThreshold"]) > 0


def _third_party_imports(package: Path) -> set[str]:
    first_party = set(_project()["tool"]["setuptools"]["packages"])
    names: set[str] = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names} - first_party


def test_worker_image_installs_every_library_the_worker_imports():
    requirement_names = {
        re.split(r"[<>=!~\[; ]", dep, maxsplit=1)[0].lower().replace("_", "-")
        for dep in _project()["project"]["dependencies"]
    }
    distributions = importlib.metadata.packages_distributions()

    imported = _third_party_imports(ROOT / "worker") | _third_party_imports(
        ROOT / "schemas"
    )
    needed = {
        module: {
            d.lower().replace("_", "-") for d in distributions.get(module, [module])
        }
        for module in imported
    }

    missing = {m: d for m, d in needed.items() if not d & requirement_names}
    assert not missing, (
        f"worker/ imports {sorted(missing)} but pyproject's base dependencies (all the "
        "slim image installs) lack them; add them to [project] dependencies"
    )


def _compose_command() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run(
            [docker, "compose", "version"], capture_output=True, check=False
        ).returncode
        == 0
    ):
        return [docker, "compose"]
    return None


def test_compose_file_passes_the_compose_tools_own_validation():
    command = _compose_command()
    if command is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")

    result = subprocess.run(
        [*command, "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )

    assert result.returncode == 0, result.stdout + result.stderr
