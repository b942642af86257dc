"""`./dev` sets up what the suite needs, or names what it could not and the tests say so when they skip."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _dev_function(name: str) -> str:
    text = (ROOT / "dev").read_text()
    match = re.search(rf"^{name}\(\) \{{\n.*?^\}}\n", text, re.S | re.M)
    assert match, f"./dev has no {name}()"
    return match.group(0)


def test_without_root_dev_names_why_chromium_is_missing_instead_of_failing(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"  # a PATH with no chromium, and an `id` that answers a normal user's uid
    bin_dir.mkdir()
    (bin_dir / "id").write_text("#!/bin/sh\necho 1000\n")
    (bin_dir / "id").chmod(0o755)
    script = _dev_function("setup_chromium") + 'setup_chromium; echo "reason=$JITPASS_TEST_NO_CHROMIUM"\n'
    done = subprocess.run(["/bin/bash", "-c", script], cwd=tmp_path, env={"PATH": str(bin_dir)},
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "reason=not root, so ./dev could not apt-get install chromium" in done.stdout
    assert "Chromium unavailable: not root" in done.stderr and "will be skipped" in done.stderr


def test_the_browser_tests_skip_with_the_reason_dev_gave() -> None:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["JITPASS_TEST_NO_CHROMIUM"] = "apt-get install chromium failed (see .venv/apt.log)"
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "tests/e2e/test_report_html.py"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SKIPPED" in done.stdout
    assert "Chromium unavailable: apt-get install chromium failed (see .venv/apt.log)" in done.stdout
    assert " passed" not in done.stdout.splitlines()[-1]
