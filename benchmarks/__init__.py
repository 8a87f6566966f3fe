"""Benchmarks (not tests): `make bench` runs `benchmarks.bench_layers`."""
