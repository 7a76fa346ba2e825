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

from benchmarks import scenarios
from benchmarks.harness import connect_many, start_rig, stop_rig
from bot import logs
from tests.stack import remote_google
from tests.synapse import Synapse
from tests.telegram_fake import TelegramFake


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
                await scenarios.seed_accounts(rig, 10_000)
                results.update(await scenarios.overhead(rig, "1", sequential))
                token = rig.core.backend._tokens.cached("telegram:1")  # type: ignore[attr-defined]
                results.update(await scenarios.raw_post(rig, token, 200))
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
    results["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, {scenarios.python_info()}"
    return results


def main() -> int:
    logs.setup("warning")
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a shorter run (under a minute)")
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    args = parser.parse_args()
    t0 = time.perf_counter()
    results = asyncio.run(run(args.quick))
    results["bench_wall_s"] = time.perf_counter() - t0
    for key, value in results.items():
        shown = f"{value:.3f}" if isinstance(value, float) else value
        print(f"{key:32} {shown}")
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
