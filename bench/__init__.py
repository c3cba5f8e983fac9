"""Benchmarks and fault injection for the billing core (issue 7). See BENCHMARKS.md.

Run the scripts as modules from the repository root (``python -m bench.throughput``),
never as files: ``bench/http.py`` would otherwise shadow the standard library's ``http``.
"""
