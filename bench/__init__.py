"""Benchmarks and chaos runs against the whole platform started as real local processes."""
