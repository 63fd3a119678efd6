"""Benchmark scripts printing side-by-side ratios (`RESULT <name> ratio=...` lines).

Run them from the repository root, e.g. `/work/venv/bin/python bench/engine_reuse.py`.
"""
