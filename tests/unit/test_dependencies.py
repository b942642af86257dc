"""pyproject.toml declares exactly what the code imports, and requirements.lock satisfies pyproject.

The other half of "honest floors" (that the LOWEST allowed versions work) is `./dev floors`, run by CI.
"""

from __future__ import annotations

import ast
import sys
import tomllib
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
OWN_PACKAGES = {"bot", "adapters", "storage", "tests", "bench", "tools"}
# Runs in its own environment (.venv-mongo, pinned in tests/support/mongoeco-requirements.txt).
OTHER_ENVIRONMENT = {Path("tests/support/mongoeco_server.py")}


def _project() -> dict[str, list[Requirement]]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    groups = {"runtime": [Requirement(r) for r in data["dependencies"]]}
    for extra, reqs in data["optional-dependencies"].items():
        groups[extra] = [Requirement(r) for r in reqs if canonicalize_name(Requirement(r).name) != "jitpass"]
    return groups


def _locked() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line[0].isspace() and not line.startswith("#"):
            name, _, rest = line.partition("==")
            pins[canonicalize_name(name)] = rest.split()[0].rstrip("\\").strip()
    return pins


def _imports(folders: tuple[str, ...]) -> Iterator[tuple[Path, str]]:
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT)
            if "node_modules" in rel.parts or rel in OTHER_ENVIRONMENT:
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(rel))):
                if isinstance(node, ast.Import):
                    for alias in node.names:
                        yield rel, alias.name
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    yield rel, node.module


def _module_owners() -> dict[str, str]:
    """Dotted module or package name -> the installed distribution whose files provide it."""
    owners: dict[str, str] = {}
    for dist in metadata.distributions():
        for file in dist.files or ():
            parts = file.parts
            if not parts or parts[0].endswith((".dist-info", ".data")) or parts[0] == "..":
                continue
            if parts[-1] == "__init__.py":
                owners.setdefault(".".join(parts[:-1]), dist.metadata["Name"])
            elif parts[-1].endswith((".py", ".so", ".pyd")):
                owners.setdefault(".".join([*parts[:-1], parts[-1].split(".")[0]]), dist.metadata["Name"])
    return owners


def _distributions_imported(folders: tuple[str, ...]) -> dict[str, set[str]]:
    owners = _module_owners()
    found: dict[str, set[str]] = {}
    unresolved: list[str] = []
    for rel, module in _imports(folders):
        top = module.split(".")[0]
        if top in OWN_PACKAGES or top in sys.stdlib_module_names:
            continue
        parts = module.split(".")
        dist = next((owners[".".join(parts[:n])] for n in range(len(parts), 0, -1) if ".".join(parts[:n]) in owners),
                    None)
        if dist is None:
            unresolved.append(f"{rel}: {module}")
        else:
            found.setdefault(canonicalize_name(dist), set()).add(str(rel))
    assert not unresolved, f"imports no installed distribution provides: {unresolved}"
    return found


def test_every_distribution_the_product_imports_is_declared_and_nothing_else() -> None:
    declared = {canonicalize_name(r.name) for r in _project()["runtime"]}
    imported = _distributions_imported(("bot", "adapters", "storage"))
    undeclared = {d: sorted(files)[:3] for d, files in imported.items() if d not in declared}
    assert not undeclared, f"imported but not in pyproject's dependencies: {undeclared}"
    assert declared - imported.keys() == set(), "declared in pyproject but never imported directly"


def test_every_distribution_the_tests_import_is_declared() -> None:
    groups = _project()
    declared = {canonicalize_name(r.name) for g in ("runtime", "test") for r in groups[g]}
    imported = _distributions_imported(("tests", "bench"))
    undeclared = {d: sorted(files)[:3] for d, files in imported.items() if d not in declared}
    assert not undeclared, f"the tests import these but the `test` extra does not declare them: {undeclared}"


def test_the_lock_file_satisfies_every_requirement_in_pyproject() -> None:
    pins = _locked()
    stale = []
    for group, reqs in _project().items():
        for req in reqs:
            version = pins.get(canonicalize_name(req.name))
            if version is None or not req.specifier.contains(version, prereleases=True):
                stale.append(f"{group}: {req} (locked: {version})")
    assert not stale, f"requirements.lock is stale — run ./dev lock and commit both files: {stale}"


def test_the_lock_file_pins_every_package_with_a_hash() -> None:
    text = (ROOT / "requirements.lock").read_text()
    entries = [e for e in text.split("\n") if e and not e[0].isspace() and not e.startswith("#")]
    assert len(entries) > 20
    blocks = text.split("\n")
    for i, line in enumerate(blocks):
        if line in entries:
            assert "==" in line, line
            assert blocks[i + 1].strip().startswith("--hash=sha256:"), f"no hash for {line}"
