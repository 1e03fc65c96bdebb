"""Benchmarks: plain scripts, results in docs/performance.md."""
