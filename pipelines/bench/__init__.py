"""Benchmarks: each writes its figures to build/bench/<name>.json and .md."""
