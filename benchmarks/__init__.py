"""Benchmarks: ``python -m benchmarks [--quick] [--json]`` reports speed, concurrency and memory."""
