"""Benchmarks: ``python -m bench <name>``. Figures are recorded in docs/benchmarks.md."""
