"""Throughput and latency benchmark of the worker against its baselines."""
