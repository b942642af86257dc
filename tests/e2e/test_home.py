"""Where jitpass lives: one home for `serve` and every CLI command, whatever the working directory.

Commands that need a store never create one (they say where they looked and exit 2); an empty file is
refused; the demo policy belongs to a store `serve --demo` created, and the CLI sees it too.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from bot.bootstrap import open_runtime
from bot.demo import DEMO_POLICY
from bot.domain.config import Settings, parse_policy
from tests.e2e.test_cli import _free_port

JITPASS = str(Path(sys.executable).parent / "jitpass")
READ_COMMANDS = [
    ("audit", "verify"),
    ("audit", "export"),
    ("items", "list"),
    ("items", "show", "acme-zendesk"),
    ("report",),
    ("retention", "purge", "--dry-run"),
    ("keys", "rotate"),
]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JITPASS_", "SLACK_", "CONNECTIONS__", "XDG_"))}
    env.update({"HOME": str(tmp_path / "user"), "JITPASS_DOTENV": str(tmp_path / "none.env"),
                "JITPASS_ADMIN": "admin-alice", **extra})
    return env


def _run(env: dict[str, str], cwd: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run([JITPASS, *args], input=stdin, capture_output=True, text=True, env=env, cwd=cwd, timeout=60)


def test_every_command_finds_the_same_home_from_any_directory(tmp_path: Path) -> None:
    env = _env(tmp_path, JITPASS_HOME=str(tmp_path / "home"))
    added = _run(env, tmp_path / "here", "items", "add", "acme-zendesk", "--vault", "acme", stdin="pw-123456\n\n")
    assert added.returncode == 0, added.stderr
    verified = _run(env, tmp_path / "somewhere" / "else", "audit", "verify")
    assert verified.returncode == 0 and "1 event(s)" in verified.stdout, verified.stdout + verified.stderr
    assert {"jitpass.db", "jitpass.key", "jitpass-audit.key"} == {p.name for p in (tmp_path / "home").iterdir()}
    assert not list((tmp_path / "here").iterdir()) and not list((tmp_path / "somewhere" / "else").iterdir())
    assert (tmp_path / "home").stat().st_mode & 0o777 == 0o700


def test_without_jitpass_home_the_default_is_under_the_users_data_directory(tmp_path: Path) -> None:
    env = _env(tmp_path)
    added = _run(env, tmp_path / "a", "items", "add", "acme-zendesk", "--vault", "acme", stdin="pw-123456\n\n")
    assert added.returncode == 0, added.stderr
    home = tmp_path / "user" / ".local" / "share" / "jitpass"
    assert (home / "jitpass.db").is_file() and (home / "jitpass.key").is_file()
    listed = _run(env, tmp_path / "b", "items", "list", "--json")
    assert [i["name"] for i in json.loads(listed.stdout)] == ["acme-zendesk"]
    xdg = _run(_env(tmp_path, XDG_DATA_HOME=str(tmp_path / "xdg")), tmp_path / "b", "items", "list")
    assert xdg.returncode == 2 and f"no jitpass store at {tmp_path / 'xdg' / 'jitpass' / 'jitpass.db'}" in xdg.stderr


@pytest.mark.parametrize("command", READ_COMMANDS, ids=" ".join)
def test_commands_on_a_missing_store_create_nothing_and_say_where_they_looked(tmp_path: Path,
                                                                            command: tuple[str, ...]) -> None:
    home = tmp_path / "home"
    done = _run(_env(tmp_path, JITPASS_HOME=str(home)), tmp_path / "cwd", *command)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"Looked in: jitpass home {home} (JITPASS_HOME)" in done.stderr
    assert command == ("keys", "rotate") or f"no jitpass store at {home / 'jitpass.db'}" in done.stderr
    assert "intact" not in done.stdout and "Traceback" not in done.stderr
    assert not home.exists() and not list((tmp_path / "cwd").iterdir())


def test_a_zero_length_store_file_is_refused_not_taken_for_a_new_store(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "jitpass.db").touch()
    env = _env(tmp_path, JITPASS_HOME=str(home))
    for args, stdin in ((("audit", "verify"), ""), (("items", "add", "x1", "--vault", "acme"), "pw-123456\n\n")):
        done = _run(env, tmp_path, *args, stdin=stdin)
        assert done.returncode == 2 and "is empty (zero bytes), not a jitpass store" in done.stderr, done.stderr
    assert (home / "jitpass.db").stat().st_size == 0


async def test_the_demo_policy_belongs_to_a_store_created_with_demo(tmp_path: Path) -> None:
    demo_policy = parse_policy(DEMO_POLICY, "built-in demo policy")
    demo = Settings.from_env({"JITPASS_HOME": str(tmp_path / "demo"), "JITPASS_DOTENV": str(tmp_path / "no")})
    created = await open_runtime(demo, mark_demo=True, demo_policy=demo_policy)
    await created.close()
    reopened = await open_runtime(demo, demo_policy=demo_policy, must_exist=True)  # as the CLI opens it
    await reopened.close()
    assert created.demo and reopened.demo and reopened.policy is demo_policy
    plain = Settings.from_env({"JITPASS_HOME": str(tmp_path / "plain"), "JITPASS_DOTENV": str(tmp_path / "no")})
    first = await open_runtime(plain, demo_policy=demo_policy)
    await first.close()
    later = await open_runtime(plain, mark_demo=True, demo_policy=demo_policy)  # --demo on an existing store
    await later.close()
    assert not later.demo and later.policy is not demo_policy and later.policy.retention.keep_days is None


async def test_serve_demo_and_the_cli_agree_on_the_policy(tmp_path: Path) -> None:
    env = _env(tmp_path, JITPASS_HOME=str(tmp_path / "home"), PORT=str(_free_port()))
    proc = subprocess.Popen([JITPASS, "serve", "--demo"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(150):
                try:
                    async with http.get(f"http://127.0.0.1:{env['PORT']}/healthz") as response:
                        assert response.status == 200
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.1)
    finally:
        proc.terminate()
        err = proc.communicate(timeout=20)[1]
    assert "demo_store=true" in err
    dry = _run(env, tmp_path / "elsewhere", "retention", "purge", "--dry-run")
    assert dry.returncode == 0 and "400" in dry.stdout, dry.stdout + dry.stderr
