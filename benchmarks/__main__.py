"""``python -m benchmarks [--quick] [--json]``: figures for speed, concurrency and memory.

It drives the real core, real SQLite and the real Gmail backend (Google's client libraries)
against the Google fake, and reports; it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import instances, scenarios
from benchmarks.harness import connect_many, start_rig, stop_rig
from bot import logs
from tests.stack import remote_google
from tests.synapse import Synapse
from tests.telegram_fake import TelegramFake


async def several_instances() -> dict[str, float | str]:
    """The several-instances figures alone (part of the full run)."""
    with tempfile.TemporaryDirectory(prefix="mailbridge-bench-") as tmp_name:
        results: dict[str, float | str] = dict(await instances.several(Path(tmp_name)))
    results["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, {scenarios.python_info()}"
    return results


async def run(quick: bool) -> dict[str, float | str]:
    results: dict[str, float | str] = {}
    sequential = 300 if quick else 2000
    crowd = 200
    with tempfile.TemporaryDirectory(prefix="mailbridge-bench-") as tmp_name:
        tmp = Path(tmp_name)
        async with remote_google() as fake:
            rig = await start_rig(tmp, fake)
            try:
                users = [str(1000 + i) for i in range(crowd)]
                t0 = time.perf_counter()
                await connect_many(rig, ["1", "2", *users])
                results["connect_s_per_user"] = (time.perf_counter() - t0) / (crowd + 2)
                # Before the seeded accounts, whose made-up tokens Google would refuse.
                results.update(await scenarios.help_under_link_check(rig, "2", 1.0))
                results.update(
                    await scenarios.help_under_link_check(rig, "2", 100.0, suffix="_at_100_per_s")
                )
                await scenarios.seed_accounts(rig, 10_000)
                token = rig.core.backend._tokens.cached("telegram:1")  # type: ignore[attr-defined]
                results.update(await scenarios.overhead(rig, "1", sequential, tmp, token))
                results.update(await scenarios.help_idle(rig, "2"))
                results.update(await scenarios.concurrent(rig, users, helper_user="2"))
                tokens = {
                    u: rig.core.backend._tokens.cached(f"telegram:{u}")  # type: ignore[attr-defined]
                    for u in users
                }
                naive_users = users[:40] if quick else users
                results.update(await scenarios.baseline(rig, naive_users, tokens))
                results["baseline_users"] = float(len(naive_users))
            finally:
                await stop_rig(rig)
            results["peak_rss_mb"] = scenarios.peak_rss_mb()
        synapse = Synapse(tmp / "synapse")
        await asyncio.to_thread(synapse.start)
        try:
            async with TelegramFake() as telegram:
                results["ready_s"] = await scenarios.ready(
                    tmp, telegram.url, telegram.token, synapse
                )
        finally:
            await asyncio.to_thread(synapse.stop)
        if not quick:  # a minute or so more: each instance, the fakes and the proxy a process
            results.update(await instances.several(tmp / "instances"))
    results.update(ratios(results))
    results["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, {scenarios.python_info()}"
    return results


def ratios(r: dict[str, float | str]) -> dict[str, float]:
    """Each figure against its floor, all measured in this run."""
    f = {k: v for k, v in r.items() if isinstance(v, float)}
    users = f["concurrent_users"]
    floor = f["concurrent_latency_s"] + users * f["cpu_ms_per_mail"] / 1000
    # The naive way is serial: in a quick run (fewer users) its wall scales to the same crowd.
    naive = f["baseline_concurrent_wall_s"] * users / f["baseline_users"]
    return {
        "gmail_call_ratio": f["gmail_call_ms_median"] / f["raw_post_ms_median"],
        "concurrent_floor_s": floor,
        "concurrent_floor_ratio": f["concurrent_wall_s"] / floor,
        "concurrent_naive_ratio": naive / f["concurrent_wall_s"],
        "help_ratio": f["help_p99_ms_under_load"] / f["help_p99_ms_idle"],
        "help_link_check_ratio": f["help_p99_ms_under_link_check"] / f["help_p99_ms_idle"],
        "help_link_check_100_ratio": f["help_p99_ms_under_link_check_at_100_per_s"]
        / f["help_p99_ms_idle"],
        "overhead_ratio": f["overhead_ms_median"] / f["overhead_floor_ms"],
    }


GOALS = [  # key, limit, above (True: the figure must be at least the limit)
    ("gmail_call_ratio", 1.2, False),
    ("concurrent_floor_ratio", 1.2, False),
    ("concurrent_naive_ratio", 30.0, True),
    ("help_ratio", 3.0, False),
    ("overhead_ratio", 2.0, False),
    ("peak_rss_mb", 110.0, False),
]


def main() -> int:
    logs.setup("warning")
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a shorter run (under a minute)")
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    parser.add_argument(
        "--instances", action="store_true", help="only 1-3 instances on PostgreSQL vs SQLite"
    )
    args = parser.parse_args()
    t0 = time.perf_counter()
    results = asyncio.run(several_instances() if args.instances else run(args.quick))
    results["bench_wall_s"] = time.perf_counter() - t0
    for key, value in results.items():
        shown = f"{value:.3f}" if isinstance(value, float) else value
        print(f"{key:32} {shown}")
    for key, limit, above in GOALS:
        if key not in results:
            continue  # not measured in this run (--instances)
        value = float(results[key])
        met = value >= limit if above else value <= limit
        sign = ">=" if above else "<="
        print(f"goal {key:27} {value:8.2f} {sign} {limit:g}  {'met' if met else 'MISSED'}")
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
