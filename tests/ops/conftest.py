"""Fixtures of the operations tests: the demo driver, a tiny model, a live worker."""

from __future__ import annotations

import importlib.util
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str, path: Path) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def demo() -> ModuleType:
    """``deploy/demo.py`` as a module; it is a script, not part of the package."""
    return _load("fraudstream_demo", ROOT / "deploy" / "demo.py")


@pytest.fixture(scope="session")
def modelkit() -> ModuleType:
    """The worker tests' kit of tiny ONNX models, which needs no TensorFlow."""
    return _load("fraudstream_modelkit", ROOT / "tests" / "worker" / "modelkit.py")


@pytest.fixture
def tiny_model_dir(modelkit: ModuleType, tmp_path: Path) -> Path:
    """A valid model directory: logistic regression over the 29 features."""
    return modelkit.write_model_dir(tmp_path / "model", threshold=0.5)


@pytest.fixture
def running_worker(
    demo: ModuleType, tiny_model_dir: Path, kafka_bootstrap: str, make_topic, tmp_path
) -> Iterator[tuple[object, object]]:
    """A ``fraud-worker`` subprocess on private topics, ready; stopped afterwards."""
    topics = demo.Topics(
        input=make_topic(partitions=2, prefix="ops-in"),
        alerts=make_topic(partitions=1, prefix="ops-alerts"),
        dlq=make_topic(partitions=1, prefix="ops-dlq"),
    )
    worker = demo.start_worker(
        tiny_model_dir,
        kafka_bootstrap,
        topics,
        f"ops-{uuid.uuid4().hex[:8]}",
        tmp_path / "worker.log",
    )
    try:
        worker.wait_ready()
        yield worker, topics
    finally:
        code = worker.stop()
        assert code == 0, f"worker exit code {code}:\n{demo._tail(worker.log_path)}"
