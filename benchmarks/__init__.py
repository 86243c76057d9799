"""Benchmarks for privchat_tcp: micro (pytest-benchmark), baseline server, load generator."""
