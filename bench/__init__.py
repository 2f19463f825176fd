"""Benchmarks: scripts run on demand that print tables; their latest results live in bench/results/."""
