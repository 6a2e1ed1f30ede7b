"""``fraud-bench``: throughput and latency of the worker against its baselines.

One run, one broker, one backlog, one machine:

a. passthrough ceiling: consume and produce the same bytes (``bench.passthrough``),
   and its consume-only mode for latency: the floor the broker, the load generator
   and the machine set under every subject;
b. the notebook's way: Keras ``model.predict`` on one event per call, on a short
   sample, rate extrapolated (``bench.seed_style``, its own process);
c. the worker with ``max_batch_size=1`` (one onnxruntime call per event);
d. the worker with its defaults, plus a sweep of batch size and batch wait.

a, c, d and every sweep point drain the same pre-filled input topic, each with a
fresh consumer group; a, c and d then run again on an empty topic of their own while
a paced producer offers fixed loads, for latency. Results go to
``bench/results/latest.json`` and ``latency_vs_throughput.png``, and a table of
rates, ratios and targets is printed.

Usage::

    fraud-bench            # full: 200,000 events, loads 5k/20k/50k, 12-point sweep
    fraud-bench --quick    # smoke run for CI, about a minute
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import report
from bench.broker import LoadGenerator, Topics, broker, encode_events, fill_topic
from bench.errors import BenchError, SubjectError
from bench.measure import (
    Drain,
    LoadPoint,
    measure_drain,
    measure_load,
    start_subject,
)

__all__ = ["Mode", "main", "run"]

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"

_INPUT_PARTITIONS = 3
# The model is trained once and kept in the results directory; its weights do not
# change any timing, so a small, short training is enough.
_TRAIN_ROWS = 30_000
_TRAIN_EPOCHS = 2
_BACKLOG_SEED = 2
_LOAD_SEED = 4
# The paced load cycles through this many distinct events.
_LOAD_POOL = 20_000
# An offered load above this multiple of the drain rate cannot be kept up with; it is
# reported as saturated instead of being run. Loads a little above the drain rate are
# still run: the drain rate is itself a noisy estimate.
_SATURATION_SHARE = 1.5
# Offered for this long, unmeasured, after a latency subject is ready.
_WARMUP_S = 1.0


@dataclass(frozen=True)
class Mode:
    """Sizes of one run."""

    name: str
    events: int
    loads: tuple[float, ...]
    load_seconds: float
    seed_style_events: int
    sweep: tuple[tuple[int, int], ...]
    # Drains of a and d, best kept: other work on a shared machine only ever slows
    # a drain down, so the fastest of a few is the closest to the code's own rate.
    repeats: int


FULL = Mode(
    name="full",
    events=200_000,
    loads=(5_000.0, 20_000.0, 50_000.0),
    load_seconds=8.0,
    seed_style_events=200,
    sweep=tuple((s, w) for s in (64, 256, 512, 2048) for w in (1, 5, 20)),
    repeats=3,
)
QUICK = Mode(
    name="quick",
    events=20_000,
    loads=(5_000.0, 20_000.0),
    load_seconds=1.5,
    seed_style_events=20,
    sweep=((64, 1), (2048, 20)),
    repeats=1,
)


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=10"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def _worker_defaults() -> tuple[int, int]:
    from worker.config import load_settings

    settings = load_settings(["--model", "unused"], environ={})
    return settings.max_batch_size, settings.max_batch_wait_ms


def ensure_model(model_dir: Path) -> Path:
    """Return ``model_dir``, training a small synthetic model into it if empty.

    Raises:
        BenchError: training failed (the trainer needs the ``train`` extra).
    """
    if (model_dir / "model.json").is_file() and (model_dir / "model.onnx").is_file():
        return model_dir
    command = [
        sys.executable, "-m", "trainer",
        "--synthetic", str(_TRAIN_ROWS),
        "--epochs", str(_TRAIN_EPOCHS),
        "--out", str(model_dir),
        "--log-level", "WARNING",
    ]  # fmt: skip
    print(f"training a model: {' '.join(command[1:])}", flush=True)
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise BenchError(
            f"expected fraud-train to write {model_dir}, it exited with "
            f"{result.returncode}:\n{result.stderr[-2000:]}\ninstall the train extra "
            "(pip install -e '.[train]') or pass --model DIR"
        )
    return model_dir


def run_seed_style(events: int) -> dict[str, Any]:
    """Variant b in its own process; an empty result with a note if it fails."""
    command = [sys.executable, "-m", "bench.seed_style", "--events", str(events)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        logger.warning("Keras baseline failed: %s", result.stderr[-2000:])
        return {"eps": None, "note": "Keras baseline failed; see the log"}
    data: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return {
        "eps": data["predict_eps"],
        "call_eps": data["call_eps"],
        "ms_per_event": data["predict_ms_per_event"],
        "call_ms_per_event": data["call_ms_per_event"],
        "sample_events": data["events"],
        "rss_mb": data["rss_mb"],
        "cpu_s_per_million": None,
        "note": "rate extrapolated from a sample; untrained weights of the same "
        "network (timing does not depend on weight values)",
    }


class Bench:
    """One benchmark run on one broker."""

    def __init__(self, mode: Mode, bootstrap: str, model_dir: Path, out: Path) -> None:
        self.mode = mode
        self.bootstrap = bootstrap
        self.model_dir = model_dir
        self.out = out
        self.topics = Topics(bootstrap)
        self.run_id = self.topics.run_id
        self.backlog = ""
        self.alerts = ""
        self.dlq = ""
        self.passthrough_out = ""
        self.pool: list[tuple[bytes, bytes]] = []

    def prepare(self) -> None:
        """Create the topics and pre-fill the backlog."""
        mode = self.mode
        self.backlog = self.topics.create("backlog", _INPUT_PARTITIONS)
        self.alerts = self.topics.create("alerts", _INPUT_PARTITIONS)
        self.dlq = self.topics.create("dlq", 1)
        self.passthrough_out = self.topics.create("passthrough-out", _INPUT_PARTITIONS)
        started = time.monotonic()
        events = encode_events(mode.events, seed=_BACKLOG_SEED)
        size = sum(len(v) for _, v in events) / len(events)
        fill_topic(self.bootstrap, self.backlog, events)
        del events
        print(
            f"backlog: {mode.events:,} events of {size:.0f} bytes in {self.backlog} "
            f"({_INPUT_PARTITIONS} partitions), {time.monotonic() - started:.1f} s",
            flush=True,
        )
        self.pool = encode_events(min(_LOAD_POOL, max(mode.events, 1_000)), _LOAD_SEED)

    def _subject(
        self, name: str, kind: str, input_topic: str, batch: tuple[int, int] | None
    ) -> Any:
        output = self.alerts if kind == "worker" else self.passthrough_out
        return start_subject(
            name,
            kind,
            self.bootstrap,
            f"bench-{self.run_id}-{name}",
            input_topic,
            output,
            self.dlq,
            self.out / "logs" / f"{name}.log",
            model_dir=self.model_dir,
            batch=batch,
        )

    def drain(self, label: str, kind: str, batch: tuple[int, int] | None) -> Drain:
        """Time one drain of the backlog by a new subject with a fresh group."""
        with self._subject(label, kind, self.backlog, batch) as subject:
            drain = measure_drain(subject, self.mode.events)
        print(
            f"  {label}: drained {drain.events:,} in {drain.seconds:.2f} s = "
            f"{drain.eps:,.0f} events/s, {drain.cpu_s_per_million:.1f} CPU-s/M, "
            f"peak RSS {drain.rss_mb:.0f} MB",
            flush=True,
        )
        return drain

    def latency(
        self, name: str, kind: str, batch: tuple[int, int] | None, capacity: float
    ) -> tuple[list[LoadPoint], float]:
        """Run the paced loads against a fresh subject; return points and peak RSS."""
        topic = self.topics.create(f"load-{name}", _INPUT_PARTITIONS)
        points: list[LoadPoint] = []
        runnable = [r for r in self.mode.loads if r <= capacity * _SATURATION_SHARE]
        for rate in self.mode.loads:
            if rate not in runnable:
                points.append(
                    LoadPoint(
                        rate,
                        0,
                        0.0,
                        None,
                        None,
                        None,
                        True,
                        f"offered load above {_SATURATION_SHARE:.0%} of the "
                        f"drain rate {capacity:,.0f}/s: not run",
                    )  # fmt: skip
                )
        if not runnable:
            return sorted(points, key=lambda p: p.offered_eps), 0.0
        with self._subject(f"{name}-load", kind, topic, batch) as subject:
            subject.wait_ready()
            load = LoadGenerator(self.bootstrap, topic)
            measure_load(subject, load, self.pool, runnable[0], _WARMUP_S)
            for rate in runnable:
                point = measure_load(
                    subject, load, self.pool, rate, self.mode.load_seconds
                )
                points.append(point)
                print(
                    f"  {name}: {rate:,.0f}/s offered -> p50 {point.p50_ms} ms, "
                    f"p95 {point.p95_ms} ms, p99 {point.p99_ms} ms"
                    + (f" ({point.note})" if point.note else ""),
                    flush=True,
                )
            rss = subject.peak_rss_mb()
            load.close()
        return sorted(points, key=lambda p: p.offered_eps), rss


def _variant(
    drains: list[Drain], points: list[LoadPoint], load_rss: float
) -> dict[str, Any]:
    drain = drains[0]
    return {
        "eps": round(drain.eps, 1),
        "drain_repeats_eps": [round(d.eps, 1) for d in drains],
        "drain_seconds": round(drain.seconds, 3),
        "cpu_s": round(drain.cpu_s, 3),
        "cpu_s_per_million": round(drain.cpu_s_per_million, 2),
        "rss_mb": round(max(load_rss, *(d.rss_mb for d in drains)), 1),
        "latency": [dataclasses.asdict(p) for p in points],
    }


def run(mode: Mode, out: Path, model_dir: Path | None) -> dict[str, Any]:
    """Run every variant and the sweep; write and return the result."""
    wall = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    load_start = os.getloadavg()
    defaults = _worker_defaults()
    variants: dict[str, Any] = {}
    sweep: list[dict[str, Any]] = []
    with broker() as bootstrap:
        model = ensure_model(model_dir or out / "model")
        bench = Bench(mode, bootstrap, model, out)
        try:
            bench.prepare()

            print("b: Keras predict, one event per call", flush=True)
            variants["b"] = run_seed_style(mode.seed_style_events)
            print(f"  b: {variants['b']['eps'] or 0:,.1f} events/s", flush=True)

            plan: list[tuple[str, str, tuple[int, int] | None]] = [
                ("a", "passthrough", None),
                ("c", "worker", (1, defaults[1])),
                ("d", "worker", None),
            ]
            # a and d take turns, so that both meet the same spells of other load.
            print(f"a and d: {mode.repeats} drains each, taking turns", flush=True)
            drains: dict[str, list[Drain]] = {"a": [], "d": []}
            for run in range(mode.repeats):
                for name, kind, batch in (plan[0], plan[2]):
                    suffix = f"-{run + 1}" if mode.repeats > 1 else ""
                    drains[name].append(
                        bench.drain(f"{name}-drain{suffix}", kind, batch)
                    )
            print("c: drain", flush=True)
            drains["c"] = [bench.drain("c-drain", plan[1][1], plan[1][2])]
            for name, kind, batch in plan:
                print(f"{name}: paced loads", flush=True)
                ranked = sorted(drains[name], key=lambda d: d.eps, reverse=True)
                points, rss = bench.latency(name, kind, batch, ranked[0].eps)
                variants[name] = _variant(ranked, points, rss)
                if name == "d":
                    variants[name]["batch"] = list(defaults)

            print("floor: consume only, paced loads", flush=True)
            points, _ = bench.latency("floor", "floor", None, math.inf)
            variants["floor"] = {"latency": [dataclasses.asdict(p) for p in points]}

            print("sweep: max_batch_size x max_batch_wait_ms", flush=True)
            for size, wait in mode.sweep:
                note = ""
                if (size, wait) == defaults:
                    d = variants["d"]
                    eps, cpu, rss = d["eps"], d["cpu_s_per_million"], d["rss_mb"]
                    note = f"variant d (best of {mode.repeats})"
                else:
                    drain = bench.drain(f"sweep-{size}x{wait}", "worker", (size, wait))
                    eps, cpu = round(drain.eps, 1), round(drain.cpu_s_per_million, 2)
                    rss = round(drain.rss_mb, 1)
                sweep.append(
                    {
                        "max_batch_size": size,
                        "max_batch_wait_ms": wait,
                        "eps": eps,
                        "cpu_s_per_million": cpu,
                        "rss_mb": rss,
                        "note": note,
                    }
                )
        finally:
            bench.topics.close()

    at20 = next(
        (p for p in variants["d"]["latency"] if p["offered_eps"] == 20_000), None
    )
    result: dict[str, Any] = {
        "mode": mode.name,
        "events": mode.events,
        "commit": _commit(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "loadavg_at_start": [round(x, 2) for x in load_start],
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        "passthrough_eps": variants["a"]["eps"],
        "seed_style_eps": variants["b"]["eps"],
        "seed_style_call_eps": variants["b"].get("call_eps"),
        "per_event_eps": variants["c"]["eps"],
        "worker_eps": variants["d"]["eps"],
        "p99_ms_at_20k": None if at20 is None or at20["saturated"] else at20["p99_ms"],
        "floor_p99_ms_at_20k": next(
            (
                p["p99_ms"]
                for p in variants["floor"]["latency"]
                if p["offered_eps"] == 20_000
            ),
            None,
        ),
        "worker_rss_mb": variants["d"]["rss_mb"],
        "worker_cpu_s_per_million": variants["d"]["cpu_s_per_million"],
        "variants": variants,
        "sweep": sweep,
        "method": {
            "drain": f"best of {mode.repeats} drains for a and d (taking turns), "
            "one for c and each sweep point; events retired / seconds between the "
            "first scrape showing events consumed and the scrape showing every "
            "event's outputs acknowledged (scrapes every 20 ms near start and end, "
            f"250 ms between); input topic of {mode.events:,} events in "
            f"{_INPUT_PARTITIONS} partitions, fresh consumer group each",
            "latency": "growth of fraud_worker_end_to_end_latency_seconds (Kafka "
            "timestamp at produce() -> output acknowledged) over each paced load, "
            "quantiles interpolated within its buckets; load generator linger 1 ms",
            "cpu": "user+system seconds of the subject process (psutil) over the "
            "drain window, per million events",
            "rss": "VmHWM of the subject process (drain and load runs)",
        },
    }
    result["ratios"] = report.ratios(result)
    result["targets"] = [dataclasses.asdict(t) for t in report.targets(result)]
    png = out / "latency_vs_throughput.png"
    result["png"] = str(png) if report.plot(result, png) else None
    result["wall_seconds"] = round(time.monotonic() - wall, 1)
    (out / "latest.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print the table; return 0 when it completed."""
    parser = argparse.ArgumentParser(
        prog="fraud-bench",
        description="Throughput and latency of the worker against its baselines.",
    )
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--events", type=int, help="backlog size (default by mode)")
    parser.add_argument(
        "--out", type=Path, default=RESULTS, help="results directory (%(default)s)"
    )
    parser.add_argument(
        "--model", type=Path, help="model directory (default: train one into OUT)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    mode = QUICK if args.quick else FULL
    if args.events:
        mode = dataclasses.replace(mode, events=args.events)
    try:
        result = run(mode, args.out, args.model)
    except (BenchError, SubjectError) as exc:
        print(f"fraud-bench: {exc}", file=sys.stderr)
        return 1
    print(report.format_table(result))
    print(f"\nwrote {args.out / 'latest.json'} in {result['wall_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
