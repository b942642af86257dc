"""The layering rule of README "Layout" holds: import-linter's contracts (pyproject.toml) are all kept.

`./dev lint` runs the same check; this test makes CI (`./dev test`) enforce it too.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_layering_contract_is_kept_and_there_are_no_import_cycles() -> None:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout
    assert "no import cycles between sibling modules KEPT" in done.stdout


def test_the_cli_loads_no_chat_sdk_until_serve_runs() -> None:
    # The static contract lets bot.cli reach bot.app only indirectly (`serve` imports it when it runs):
    # every other command, its parser and the whole bot.cli package leave the chat SDKs unloaded.
    probe = (
        "import pkgutil, importlib, sys, bot.cli\n"
        "for m in pkgutil.iter_modules(bot.cli.__path__): importlib.import_module('bot.cli.' + m.name)\n"
        "from bot.cli.main import build_parser\n"
        "build_parser()\n"
        "loaded = sorted(n for n in sys.modules if n.split('.')[0] in {'slack_bolt', 'slack_sdk', 'microsoft_agents'}"
        " or n.startswith(('adapters.slack', 'adapters.teams', 'bot.app')))\n"
        "print(len(sys.modules), loaded)\n"
        "sys.exit(1 if loaded else 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    assert int(done.stdout.split()[0]) > 50  # the probe did import the CLI
