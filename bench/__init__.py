"""Benchmarks: `python -m bench <name>`. They start their own processes against their own database and Redis."""
