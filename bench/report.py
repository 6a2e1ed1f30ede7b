"""Targets, the printed table and the latency-against-throughput chart."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Target", "format_table", "plot", "targets"]

logger = logging.getLogger(__name__)

TARGET_EPS = 65_000.0
TARGET_SHARE_OF_PASSTHROUGH = 0.8
TARGET_P99_MS_AT_20K = 25.0
TARGET_RSS_MB = 300.0


@dataclass(frozen=True)
class Target:
    """One goal of the benchmark and whether this run met it."""

    name: str
    goal: str
    value: float | None
    met: bool


def _ratio(top: float | None, bottom: float | None) -> float | None:
    if top is None or bottom is None or bottom <= 0:
        return None
    return top / bottom


def ratios(result: dict[str, Any]) -> dict[str, float | None]:
    """d/a, d/b and d/c of the drain rates (b: Keras predict per event)."""
    d = result["worker_eps"]
    return {
        "d_over_a": _ratio(d, result["passthrough_eps"]),
        "d_over_b": _ratio(d, result["seed_style_eps"]),
        "d_over_c": _ratio(d, result["per_event_eps"]),
    }


def targets(result: dict[str, Any]) -> list[Target]:
    """Judge the run against the four targets."""
    d = result["worker_eps"]
    share = _ratio(d, result["passthrough_eps"])
    p99 = result["p99_ms_at_20k"]
    rss = result["worker_rss_mb"]
    return [
        Target("d throughput", f">= {TARGET_EPS:,.0f} ev/s", d, d >= TARGET_EPS),
        Target(
            "d / a",
            f">= {TARGET_SHARE_OF_PASSTHROUGH}",
            share,
            share is not None and share >= TARGET_SHARE_OF_PASSTHROUGH,
        ),
        Target(
            "d p99 at 20k ev/s",
            f"<= {TARGET_P99_MS_AT_20K:g} ms",
            p99,
            p99 is not None and p99 <= TARGET_P99_MS_AT_20K,
        ),
        Target("d peak RSS", f"<= {TARGET_RSS_MB:g} MB", rss, rss <= TARGET_RSS_MB),
    ]


def _num(value: float | None, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.{digits}f}"


def format_table(result: dict[str, Any]) -> str:
    """The summary printed at the end of a run."""
    variants = result["variants"]
    lines = [
        "",
        f"fraudstream benchmark ({result['mode']}, {result['events']:,} events, "
        f"{result['cpu_count']} CPUs, commit {result['commit']})",
        "load average (1/5/15 min) at start "
        + "/".join(f"{x:.1f}" for x in result["loadavg_at_start"])
        + ", at end "
        + "/".join(f"{x:.1f}" for x in result["loadavg_at_end"]),
        "",
        f"{'variant':<34}{'events/s':>11}{'CPU-s/M':>9}{'RSS MB':>8}"
        f"{'p50 ms':>8}{'p99 ms':>8}  (latency at 20k/s)",
    ]
    names = {
        "a": "a passthrough (no decode, no model)",
        "b": "b Keras predict, 1 event/call",
        "c": "c worker, max_batch_size=1",
        "d": "d worker, defaults",
    }
    for key in ("a", "b", "c", "d"):
        v = variants[key]
        at20 = next(
            (p for p in v.get("latency", []) if p["offered_eps"] == 20_000), None
        )
        p50 = at20["p50_ms"] if at20 and not at20["saturated"] else None
        p99 = at20["p99_ms"] if at20 and not at20["saturated"] else None
        lines.append(
            f"{names[key]:<34}{_num(v.get('eps')):>11}"
            f"{_num(v.get('cpu_s_per_million'), 1):>9}{_num(v.get('rss_mb')):>8}"
            f"{_num(p50, 1):>8}{_num(p99, 1):>8}"
        )
    b = variants["b"]
    if b.get("call_eps"):
        lines.append(
            f"{'  b with model(x, training=False)':<34}{_num(b['call_eps']):>11}"
        )
    r = result["ratios"]
    lines += [
        "",
        f"ratios   d/a {_num(r['d_over_a'], 2)}   d/b {_num(r['d_over_b'], 0)}   "
        f"d/c {_num(r['d_over_c'], 1)}",
        "",
        "latency at offered loads (worker histogram; p50/p95/p99 ms)",
    ]
    for key in ("floor", "a", "c", "d"):
        parts = []
        for p in variants.get(key, {}).get("latency", []):
            if p["saturated"]:
                parts.append(f"{p['offered_eps'] / 1000:g}k: saturated")
            else:
                parts.append(
                    f"{p['offered_eps'] / 1000:g}k: {_num(p['p50_ms'], 1)}/"
                    f"{_num(p['p95_ms'], 1)}/{_num(p['p99_ms'], 1)}"
                )
        lines.append(f"  {key:<6}" + "   ".join(parts))
    lines += ["", "sweep (max_batch_size x max_batch_wait_ms: events/s, CPU-s/M)"]
    for s in result["sweep"]:
        lines.append(
            f"  {s['max_batch_size']:>5} x {s['max_batch_wait_ms']:>3} ms"
            f"{_num(s['eps']):>10}{_num(s['cpu_s_per_million'], 1):>8}"
            + (f"   ({s['note']})" if s.get("note") else "")
        )
    lines += ["", "targets"]
    for t in result["targets"]:
        value = _num(t["value"], 2 if t["name"] == "d / a" else 1)
        verdict = "met" if t["met"] else "NOT MET"
        lines.append(f"  {t['name']:<20}{t['goal']:<18}{value:>12}   {verdict}")
    floor = result.get("floor_p99_ms_at_20k")
    if floor is not None:
        lines.append(
            f"  (consume-only floor on this machine now: p99 {floor:,.1f} ms at 20k/s)"
        )
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> bool:
    """Draw p50 and p99 latency against achieved throughput; False if no matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib not installed; no chart written")
        return False
    fig, ax = plt.subplots(figsize=(8, 5))
    colours = {
        "floor": "tab:green",
        "a": "tab:grey",
        "c": "tab:orange",
        "d": "tab:blue",
    }
    labels = {
        "floor": "consume-only floor",
        "a": "a passthrough",
        "c": "c batch=1",
        "d": "d defaults",
    }
    for key, colour in colours.items():
        variant = result["variants"].get(key, {})
        points = [p for p in variant.get("latency", []) if not p["saturated"]]
        if points:
            xs = [p["achieved_eps"] for p in points]
            ax.plot(xs, [p["p50_ms"] for p in points], "o--", color=colour,
                    label=f"{labels[key]} p50")  # fmt: skip
            ax.plot(xs, [p["p99_ms"] for p in points], "s-", color=colour,
                    label=f"{labels[key]} p99")  # fmt: skip
        if variant.get("eps"):
            ax.axvline(variant["eps"], color=colour, linestyle=":", linewidth=1)
    ax.axhline(TARGET_P99_MS_AT_20K, color="red", linewidth=0.8, label="p99 target")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("achieved throughput, events/s (dotted: drain rate)")
    ax.set_ylabel("end-to-end latency, ms")
    ax.set_title(f"fraudstream latency vs throughput ({result['commit']})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
