"""The import layers of the code (docs/design.md §8): each room of ``tuner`` says in its package
docstring which other rooms it may import ("May import: ..."), and this test holds every module to
it, function-local imports included. ``objectives`` never imports ``tuner`` or optuna, and
``studies`` holds data only."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUNER = ROOT / "tuner"
#: Modules every room may import: errors, the two shared formatters, and the run's settings.
BASE = ("tuner.errors", "tuner.formats", "tuner.options")
#: A base module's one exception: a run's settings (``options``) take a strategy's defaults from
#: the strategy that owns them. tuner.strategies imports only tuner.search, which imports no room.
BASE_MAY_IMPORT = {"tuner.options": {"tuner.strategies"}}
#: The top of the package: the CLI and the public names may import every room.
TOP = ("tuner", "tuner.__main__", "tuner.cli")


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path, root: Path = ROOT) -> set[str]:
    """Every module a file imports, at any depth of its code, with relative imports resolved."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            # "from tuner.worker import heartbeat" imports the module tuner.worker.heartbeat
            folder = root.joinpath(*module.split("."))
            for alias in node.names:
                if (folder / f"{alias.name}.py").exists() or (folder / alias.name).is_dir():
                    found.add(f"{module}.{alias.name}")
                else:
                    found.add(module)
    return found


def rooms(root: Path = ROOT) -> dict[str, set[str]]:
    """Each room of tuner with the rooms its docstring allows it to import."""
    table = {}
    for init in sorted((root / "tuner").glob("*/__init__.py")):
        room = f"tuner.{init.parent.name}"
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        line = re.search(r"May import:\s*(.*?)(?:\n\n|$)", doc, re.S)
        assert line, f"{room}'s docstring does not say what it may import (a 'May import:' line)"
        table[room] = set(re.findall(r"tuner\.\w+", line.group(1))) - set(BASE)
    return table


def room_of(module: str) -> str | None:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 and parts[0] == "tuner" else None


def test_every_room_says_what_it_may_import() -> None:
    table = rooms()
    assert {"tuner.store", "tuner.kinds", "tuner.worker", "tuner.run"} <= set(table)
    for room, allowed in table.items():
        assert room not in allowed
        assert allowed <= set(table), (
            f"{room} names rooms that do not exist: {allowed - set(table)}"
        )


def violations(root: Path = ROOT) -> list[str]:
    """Each import of a tuner module against its room's rule, as "module imports target"."""
    table = rooms(root)
    found = []
    for path in sorted((root / "tuner").rglob("*.py")):
        name = module_name(path, root)
        if name in TOP or room_of(name) in TOP:
            continue
        own = room_of(name)
        allowed = (set(BASE) | BASE_MAY_IMPORT.get(name, set()) if name in BASE
                   else {own, *table.get(own, ())})  # fmt: skip
        for target in imported(path, root):
            if not target.startswith("tuner"):
                continue
            if target in BASE and name not in BASE:
                continue
            if target == "tuner" or (room_of(target) not in allowed and target not in allowed):
                found.append(f"{name} imports {target}")
    return found


def test_tuner_modules_import_only_what_their_room_allows() -> None:
    assert violations() == []


def test_the_check_catches_an_import_against_the_layers(tmp_path: Path) -> None:
    """The rule can fail: in a copy of the package, a store module that imports the worker room
    inside a function, and a base module that imports a room, are both reported."""
    shutil.copytree(TUNER, tmp_path / "tuner", ignore=shutil.ignore_patterns("__pycache__"))
    probe = tmp_path / "tuner" / "store" / "probe.py"
    probe.write_text("def f():\n    from tuner.worker.pool import WorkerSpec\n")
    with (tmp_path / "tuner" / "formats.py").open("a") as f:
        f.write("\nfrom tuner.store import db\n")
    assert violations(tmp_path) == [
        "tuner.formats imports tuner.store.db",
        "tuner.store.probe imports tuner.worker.pool",
    ]


@pytest.mark.parametrize("package", ["objectives", "studies"])
def test_science_and_data_never_import_the_service(package: str) -> None:
    for path in (ROOT / package).rglob("*.py"):
        for target in imported(path):
            top = target.split(".")[0]
            assert top not in ("tuner", "optuna"), f"{module_name(path)} imports {target}"


def test_the_package_names_resolve_lazily() -> None:
    """``import tuner`` loads no room; each public name is importable and comes from its room."""
    code = (
        "import sys, tuner\n"
        "assert not [m for m in sys.modules if m.startswith('tuner.')], sorted(sys.modules)\n"
        "for name in tuner.__all__:\n"
        "    assert getattr(tuner, name).__module__.startswith('tuner.'), name\n"
        "assert sorted(tuner.__all__) == sorted(tuner._PUBLIC)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
