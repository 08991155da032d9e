"""Benchmark scripts; each prints a markdown snippet for BENCHMARKS.md."""
