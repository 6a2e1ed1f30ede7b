"""The base install is the worker, and the worker never needs TensorFlow."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_TRAINING_ONLY = ("tensorflow", "keras", "tf2onnx", "pandas", "matplotlib", "sklearn")

# Run in a child interpreter where importing any training-only library fails, as it
# would in the slim worker image.
_BLOCKER = f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {_TRAINING_ONLY!r}:
            raise ImportError(f"{{name}} is not part of the base install")
sys.meta_path.insert(0, Block())
"""


def _base_dependencies() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [str(dep) for dep in project["dependencies"]]


def test_base_dependencies_leave_out_the_training_stack():
    names = [
        dep.split(">")[0].split("=")[0].split("[")[0] for dep in _base_dependencies()
    ]
    assert names, "pyproject.toml declares no base dependencies"
    for name in names:
        assert not name.startswith(("tensorflow", "keras", "tf2onnx", "pandas")), name


@pytest.mark.parametrize(
    "module",
    ["worker.__main__", "worker.replay"],
    ids=["worker", "replay"],
)
def test_module_imports_and_shows_help_without_training_libraries(module):
    script = _BLOCKER + (
        f"import runpy; sys.argv = ['{module}', '--help']\n"
        f"try:\n    runpy.run_module('{module}', run_name='__main__')\n"
        "except SystemExit as exc:\n    assert exc.code in (0, None), exc.code\n"
        f"assert not set(sys.modules) & set({_TRAINING_ONLY!r}), sorted(sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout
