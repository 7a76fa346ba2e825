"""Benchmarks: ``python -m benchmarks [--quick] [--json]``; speed, concurrency and memory."""
