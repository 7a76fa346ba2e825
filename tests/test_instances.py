"""Several instances on one PostgreSQL (issue 15): three ``mailbridge run`` processes behind a
round-robin HTTP proxy, Telegram in webhook mode (tests/instances.py)."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from tests.instances import instances

pytestmark = [pytest.mark.reliability, pytest.mark.postgres, pytest.mark.integration]


async def test_three_instances_share_the_work_and_each_mail_goes_once(
    tmp_path: Path, pg_url: str
) -> None:
    users = [3000 + n for n in range(6)]
    async with instances(tmp_path, pg_url) as s, aiohttp.ClientSession() as http:
        await s.connect(users, http)
        skip = {u: len(await s.telegram.sent(u)) for u in users}
        await asyncio.gather(
            *(s.telegram.user_sends(u, f"/mail bob@example.com Hi {u} | Body") for u in users)
        )
        await asyncio.gather(
            *(s.telegram.wait_for(u, rf"✅ Mail #\d+ to .*“Hi {u}”", skip[u]) for u in users)
        )
        stats = await s.proxy_stats()
        received = Counter(m["subject"] for m in await s.google.sent())
        assert await s.stop() == [0, 0, 0]
        logs = s.logs()
    answered = {key.split()[0] for key, n in stats.items() if key.endswith(" 200") and n}
    assert len(answered) == 3, stats  # every instance took requests
    assert received == Counter(f"Hi {u}" for u in users)
    assert "Traceback" not in logs
