"""`python -m benchmarks --quick --json` runs and reports every figure (it asserts no timing)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KEYS = [
    "overhead_ms_median",
    "overhead_ms_p99",
    "gmail_call_ms_median",
    "raw_post_ms_median",
    "concurrent_wall_s",
    "concurrent_ratio",
    "baseline_concurrent_wall_s",
    "help_p99_ms_under_load",
    "help_p99_ms_under_link_check",
    "link_check_requests_per_s",
    "peak_rss_mb",
    "ready_s",
]


def test_quick_benchmark_prints_every_figure_as_a_number() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    for key in KEYS:
        assert isinstance(figures[key], int | float), key
        assert figures[key] > 0, key
