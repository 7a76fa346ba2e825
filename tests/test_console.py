"""The console with a configuration: preview, send, cancel and undo typed in a terminal."""

from __future__ import annotations

from pathlib import Path

from tests.botproc import BotProcess, free_port


def write_config(tmp_path: Path, mail: str) -> Path:
    port = free_port()
    path = tmp_path / "config.toml"
    path.write_text(
        f'[bot]\ndatabase = "bot.db"\n[web]\nlisten = "127.0.0.1:{port}"\n'
        f'public_url = "http://127.0.0.1:{port}"\n[mail]\n{mail}\n'
    )
    return path


async def test_console_preview_send_cancel(tmp_path: Path) -> None:
    bot = await BotProcess(
        write_config(tmp_path, 'confirm = "new_recipients"\nundo_seconds = 0')
    ).start()
    try:
        await bot.say("/mail bob@example.com First | hello")
        await bot.expect(r"Preview of mail #1")
        await bot.expect(r"\[Send\] /send 1")
        await bot.expect(r"\[Cancel\] /cancel 1")
        assert not (tmp_path / "outbox").exists()
        await bot.say("/send")
        await bot.expect(r"Mail #1 to bob@example.com, “First”: written to")
        await bot.say("/mail carol@example.com Oops | no")
        await bot.expect(r"Preview of mail #2")
        await bot.say("/cancel")
        await bot.expect(r"Cancelled mail #2; nothing was sent")
        await bot.say("/mail bob@example.com Second | known now")
        await bot.expect(r"Mail #3 to bob@example.com, “Second”: written to")
    finally:
        assert await bot.stop() == 0
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 2


async def test_console_undo(tmp_path: Path) -> None:
    bot = await BotProcess(write_config(tmp_path, 'confirm = "never"\nundo_seconds = 5')).start()
    try:
        await bot.say("/mail bob@example.com Hasty | x")
        await bot.expect(r"Mail #1 to bob@example.com, “Hasty” goes out in 5 s")
        await bot.say("/undo")
        await bot.expect(r"Undone: mail #1 was not sent")
    finally:
        assert await bot.stop() == 0
    assert not list((tmp_path / "outbox").glob("*.eml"))
