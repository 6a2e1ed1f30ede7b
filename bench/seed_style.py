"""Variant b, the original notebook's way: Keras scores one event per call.

Runs in its own process so that TensorFlow's threads and memory stay out of the
other measurements. Prints one JSON object on stdout.

The network is the trainer's (``trainer.model.build``: scaling, Dense 128 relu,
Dense 1 sigmoid) with freshly initialised weights; the time of a forward pass does
not depend on the weights' values.

Usage::

    python -m bench.seed_style --events 200
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence

__all__ = ["main"]

logger = logging.getLogger("bench.seed_style")

# Calls before timing starts: the first ones trace and compile the graph.
_WARMUP_CALLS = 5
_SEED = 3


def main(argv: Sequence[str] | None = None) -> int:
    """Time ``model.predict`` and ``model(x, training=False)`` on single events."""
    parser = argparse.ArgumentParser(prog="python -m bench.seed_style")
    parser.add_argument("--events", type=int, default=200)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

    import numpy as np
    import psutil

    from trainer.model import build
    from trainer.synthetic import generate

    data = generate(max(args.events, 1_000), seed=_SEED)
    rows = data.features.astype(np.float32)
    model = build(rows, seed=_SEED)
    count = args.events
    result: dict[str, float | int] = {"events": count}

    for _ in range(_WARMUP_CALLS):
        model.predict(rows[:1], verbose=0)
    started = time.perf_counter()
    for i in range(count):
        model.predict(rows[i : i + 1], verbose=0)
    predict_s = time.perf_counter() - started
    result["predict_eps"] = count / predict_s
    result["predict_ms_per_event"] = predict_s / count * 1000.0

    for _ in range(_WARMUP_CALLS):
        model(rows[:1], training=False)
    started = time.perf_counter()
    for i in range(count):
        model(rows[i : i + 1], training=False)
    call_s = time.perf_counter() - started
    result["call_eps"] = count / call_s
    result["call_ms_per_event"] = call_s / count * 1000.0

    process = psutil.Process()
    times = process.cpu_times()
    result["process_cpu_s"] = times.user + times.system
    result["rss_mb"] = process.memory_info().rss / 1e6
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
