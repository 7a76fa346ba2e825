"""``mailbridge check --online`` against the fakes and a real Synapse, as an operator runs it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests import runtime
from tests.botproc import free_port
from tests.google_fake import GoogleFake
from tests.synapse import Synapse
from tests.telegram_fake import TelegramFake

pytestmark = pytest.mark.integration


def write(
    tmp_path: Path,
    google: GoogleFake | None = None,
    telegram: TelegramFake | None = None,
    *,
    token: str | None = None,
    redirect_uris: list[str] | None = None,
    secret: str | None = None,
    public_url: str | None = None,
    mode: str = "polling",
    matrix: str = "",
) -> Path:
    public = public_url or f"http://127.0.0.1:{free_port()}"
    text = f'[web]\npublic_url = "{public}"\n'
    if google is not None:
        client = google.client_secrets_json()
        client["web"]["redirect_uris"] = (
            [f"{public}/oauth/callback"] if redirect_uris is None else redirect_uris
        )
        if secret is not None:
            client["web"]["client_secret"] = secret
        (tmp_path / "client_secret.json").write_text(json.dumps(client))
        text += (
            f'[google]\nclient_secrets_file = "client_secret.json"\n'
            f'token_uri = "{google.token_uri}"\nrevoke_uri = "{google.revoke_uri}"\n'
            f'api_endpoint = "{google.api_endpoint}"\nauth_uri = "{google.auth_uri}"\n'
        )
    if telegram is not None:
        text += (
            f'[telegram]\ntoken = "{token or telegram.token}"\n'
            f'base_url = "{telegram.url}/bot"\nmode = "{mode}"\n'
        )
        if mode == "webhook":
            text += 'webhook_secret = "s3cret-Token"\n'
    text += matrix
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


async def check_online(config: Path) -> tuple[int, list[str]]:
    proc = await asyncio.create_subprocess_exec(
        runtime.mailbridge(),
        "check",
        "--online",
        "--config",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={k: v for k, v in runtime.env().items() if not k.startswith("MAILBRIDGE_")},
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    lines = out.decode().splitlines()
    findings = [line.strip() for line in lines if line.strip().startswith(("ok ", "FAIL "))]
    return int(proc.returncode or 0), findings


def failures(findings: list[str]) -> list[str]:
    return [f for f in findings if f.startswith("FAIL")]


@pytest.mark.telegram
async def test_a_good_setup_holds_and_exits_0(
    tmp_path: Path, google_fake: GoogleFake, telegram_fake: TelegramFake
) -> None:
    code, findings = await check_online(write(tmp_path, google_fake, telegram_fake))
    assert code == 0, findings
    assert failures(findings) == []
    assert "ok   telegram: the bot token works: @MailBridgeTestBot" in findings
    assert "ok   telegram: no webhook on file, as polling mode needs" in findings
    assert "ok   google: the client file client_secret.json is a Web application client" in (
        findings
    )
    assert any(f.startswith("ok   google: its redirect URIs include http") for f in findings)
    assert any("the token endpoint accepts the client" in f for f in findings)
    # The check asked Google with a made-up token and got invalid_grant: nothing was granted.
    assert google_fake.token_requests == ["refresh_token"]


@pytest.mark.telegram
async def test_a_bad_bot_token_is_one_line_with_its_fix(
    tmp_path: Path, telegram_fake: TelegramFake
) -> None:
    config = write(tmp_path, telegram=telegram_fake, token="123456:not-the-token")
    code, findings = await check_online(config)
    assert code == 1
    assert failures(findings) == [
        "FAIL telegram: Telegram refused the bot token (Unauthorized); copy it again from "
        "@BotFather (/mybots > API Token) into [telegram] token or $MAILBRIDGE_TELEGRAM_TOKEN"
    ]
    assert not any("not-the-token" in f for f in findings)


async def test_a_redirect_uri_missing_from_the_client_file(
    tmp_path: Path, google_fake: GoogleFake
) -> None:
    public = f"http://127.0.0.1:{free_port()}"
    config = write(
        tmp_path,
        google_fake,
        public_url=public,
        redirect_uris=[f"{public}/callback", "https://old.example.org/oauth/callback"],
    )
    code, findings = await check_online(config)
    assert code == 1
    [failure] = failures(findings)
    assert failure.startswith(
        f"FAIL google: its redirect URIs ({public}/callback, https://old.example.org/oauth/"
        f"callback) lack {public}/oauth/callback ([web] public_url + /oauth/callback): Google "
        "would answer redirect_uri_mismatch; add it exactly under Authorized redirect URIs"
    )


async def test_a_client_secret_the_token_endpoint_refuses(
    tmp_path: Path, google_fake: GoogleFake
) -> None:
    code, findings = await check_online(write(tmp_path, google_fake, secret="GOCSPX-wrong"))
    assert code == 1
    [failure] = failures(findings)
    assert failure.startswith(
        "FAIL google: the token endpoint refused the client (invalid_client): the client id or "
        "secret does not match"
    )
    assert "GOCSPX-wrong" not in "\n".join(findings)


async def test_a_desktop_client_file_is_not_a_web_client(
    tmp_path: Path, google_fake: GoogleFake
) -> None:
    config = write(tmp_path, google_fake)
    client = json.loads((tmp_path / "client_secret.json").read_text())
    (tmp_path / "client_secret.json").write_text(json.dumps({"installed": client["web"]}))
    code, findings = await check_online(config)
    assert code == 1
    assert failures(findings)[0].startswith(
        "FAIL google: the client file client_secret.json is not a Web application client "
        "(a Desktop app client)"
    )


@pytest.mark.telegram
async def test_webhook_mode_needs_an_https_public_url(
    tmp_path: Path, telegram_fake: TelegramFake
) -> None:
    config = write(tmp_path, telegram=telegram_fake, mode="webhook")
    code, findings = await check_online(config)
    assert code == 1
    [failure] = failures(findings)
    assert failure.startswith("FAIL telegram: webhook mode needs an https:// [web] public_url")


@pytest.mark.matrix
async def test_matrix_credentials_refused_and_accepted(synapse: Synapse, tmp_path: Path) -> None:
    bot = await synapse.register()
    base = f'[matrix]\nhomeserver = "{synapse.url}"\nuser_id = "{bot.user_id}"\n'
    wrong = write(tmp_path, matrix=base + 'access_token = "syt_not_a_token"\n')
    code, findings = await check_online(wrong)
    assert code == 1
    assert findings[0].startswith(f"ok   matrix: the homeserver {synapse.url} answers (spec v")
    assert failures(findings) == [
        "FAIL matrix: the homeserver refused [matrix] access_token (M_UNKNOWN_TOKEN); create a "
        "new token for the bot's account, or use [matrix] password"
    ]
    bad_password = write(tmp_path, matrix=base + 'password = "wrong"\n')
    code, findings = await check_online(bad_password)
    assert code == 1
    assert failures(findings)[0].startswith(
        f"FAIL matrix: the homeserver refused the login of {bot.user_id} (M_FORBIDDEN)"
    )
    good = write(tmp_path, matrix=base + f'password = "{bot.password}"\n')
    code, findings = await check_online(good)
    assert code == 0, findings
    assert findings[-1] == f"ok   matrix: [matrix] password logs in as {bot.user_id}"
