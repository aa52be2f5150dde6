"""Benchmarks: `dlf bench` (runner, report) and `dlf analyze` (gradient norms, low-order probe)."""
