"""Benchmarks: throughput against the carrier bound and against the legacy shape (``./run bench``)."""
