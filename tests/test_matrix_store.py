"""The Matrix store folder belongs to its device: the bot refuses to start a device afresh
from a folder that is not the one the device began with (with several instances, a leader on
a volume of its own)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.synapse import Synapse, create_dm, send_text, wait_for_message
from tests.test_matrix import from_bot

pytestmark = pytest.mark.matrix


async def test_a_store_folder_that_is_not_the_devices_is_refused(
    synapse: Synapse, tmp_path: Path
) -> None:
    from bot import app
    from bot.errors import ConfigError
    from tests.running import bot_config, running

    bot, alice = await synapse.register(), await synapse.register()
    matrix = {
        "homeserver": synapse.url,
        "user_id": bot.user_id,
        "access_token": bot.access_token,
        "store_path": "store-a",
    }
    config = bot_config(tmp_path, matrix=matrix)
    async with running(config), synapse.client(alice, encrypted=True) as client:
        room = await create_dm(client, bot.user_id, encrypted=True)
        await wait_for_message(client, room, from_bot(bot, "Hello"), timeout=30)
    # The same device from another folder (an instance on a volume of its own, say): its
    # keys are on the homeserver, not here; starting it afresh would lock Alice out.
    elsewhere = bot_config(tmp_path, matrix={**matrix, "store_path": "store-b"})
    with pytest.raises(ConfigError) as refused:
        await asyncio.wait_for(app.run(elsewhere, console=False), 30)
    assert f"store_path: {tmp_path / 'store-b'} holds no encryption keys" in str(refused.value)
    assert bot.device_id in str(refused.value)
    assert not list((tmp_path / "store-b").glob("*.db"))  # nothing made up under the device
    async with running(config), synapse.client(alice, encrypted=True) as client:
        command = await send_text(client, room, "!help")  # the right folder still works
        said = await wait_for_message(client, room, from_bot(bot, "!help"), timeout=30)
        assert said.in_reply_to == command
        assert said.encrypted
