"""Profile the worker's hot path while it drains a backlog, with py-spy.

Fills a private topic, starts ``python -m worker``, attaches ``py-spy record`` once
its metrics answer (imports and model load done; raw collapsed stacks, 250
samples/s, idle time left out), waits until every event is
retired, and prints the functions with the most samples: self (the leaf frame) and
inclusive (anywhere on the stack). Needs ``pip install py-spy`` and permission to
trace child processes (root, or ptrace_scope 0).

Usage::

    python -m bench.profile --events 200000 [--batch 512x5] [--model DIR]
"""

from __future__ import annotations

import argparse
import collections
import logging
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bench.broker import Topics, broker, encode_events, fill_topic
from bench.errors import BenchError
from bench.measure import measure_drain, start_subject

__all__ = ["main", "summarise"]

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
_RATE_HZ = 250
_TOP = 25
# "function (path/file.py:123)" -> "function (file.py)"
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]*?)(?::\d+)?\)$")


def _name(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    return f"{match['func']} ({Path(match['file']).name})"


def summarise(collapsed: str, top: int = _TOP) -> str:
    """Self and inclusive sample shares per function of py-spy's raw output."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_name(f) for f in stack.split(";") if f]
        if frames and frames[0].startswith("process "):
            frames = frames[1:]
        if frames and frames[0].startswith("thread "):
            frames = frames[1:]
        if not frames:
            continue
        samples += count
        own[frames[-1]] += count
        for name in set(frames):
            total[name] += count
    if not samples:
        return "no samples"
    lines = [f"{samples} samples", "", "self (leaf frame):"]
    for name, count in own.most_common(top):
        lines.append(f"  {count / samples:6.1%}  {name}")
    lines += ["", "inclusive:"]
    for name, count in total.most_common(top):
        lines.append(f"  {count / samples:6.1%}  {name}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Fill, drain under py-spy, print the summary; return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", default="", help="SIZExWAIT_MS, e.g. 512x5")
    parser.add_argument("--model", type=Path, default=ROOT / "bench/results/model")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/profile")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        print("profile: py-spy not found; pip install py-spy", file=sys.stderr)
        return 1
    batch = None
    if args.batch:
        size, _, wait = args.batch.partition("x")
        batch = (int(size), int(wait))
    args.out.mkdir(parents=True, exist_ok=True)
    raw = args.out / "worker.collapsed.txt"
    try:
        with broker() as bootstrap:
            topics = Topics(bootstrap)
            try:
                backlog = topics.create("profile-backlog", 3)
                alerts = topics.create("profile-alerts", 3)
                dlq = topics.create("profile-dlq", 1)
                fill_topic(bootstrap, backlog, encode_events(args.events, seed=2))
                with start_subject(
                    "worker-profiled", "worker", bootstrap,
                    f"bench-{topics.run_id}-profile", backlog, alerts, dlq,
                    args.out / "worker.log", model_dir=args.model, batch=batch,
                ) as subject:  # fmt: skip
                    while subject.try_scrape() is None:  # imports and model load
                        time.sleep(0.02)
                    recorder = subprocess.Popen(
                        [spy, "record", "--pid", str(subject.process.pid),
                         "--rate", str(_RATE_HZ), "--format", "raw",
                         "--output", str(raw), "--nonblocking"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                    )  # fmt: skip
                    drain = measure_drain(subject, args.events)
                    recorder.send_signal(signal.SIGINT)
                    recorder.wait(30)
                    time.sleep(0.2)
            finally:
                topics.close()
    except BenchError as exc:
        print(f"profile: {exc}", file=sys.stderr)
        return 1
    print(
        f"drained {drain.events:,} in {drain.seconds:.2f} s = {drain.eps:,.0f} "
        f"events/s under py-spy ({drain.cpu_s_per_million:.1f} CPU-s/M)\n"
    )
    print(summarise(raw.read_text() if raw.exists() else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
