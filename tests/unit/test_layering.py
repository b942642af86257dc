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
