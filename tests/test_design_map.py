"""docs/design.md is the code's map: every module of a room is named in the room table of §8, and
the claims it makes about branching hold (no module below ``run`` compares a kind's name; the
strategies' claim is tests/tuner/test_strategies_contract.py's)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DESIGN = (ROOT / "docs" / "design.md").read_text()
#: The rooms below the composition of a run: they serve every kind through the contract.
CONTRACT_ONLY = ("store", "search", "strategies", "worker", "read", "views")


def room_rows() -> dict[str, str]:
    """Each room's row of the §8 table, by room name."""
    return {m[1]: m[2] for m in re.finditer(r"^\| `(\w+)` \| (.*)$", DESIGN, re.M)}


def test_every_module_is_in_its_rooms_row() -> None:
    rows = room_rows()
    missing = []
    for init in sorted((ROOT / "tuner").glob("*/__init__.py")):
        room = init.parent.name
        assert room in rows, f"room {room} has no row in docs/design.md §8"
        for module in sorted(init.parent.glob("*.py")):
            if module.stem != "__init__" and f"`{module.stem}`" not in rows[room]:
                missing.append(f"{room}.{module.stem}")
    assert missing == []


def kind_names_compared(tree: ast.AST) -> list[str]:
    """Kind names a module compares with (``kind == "pair"``, ``opts.mode != "neighbourhood"``)."""
    from tuner.kinds import KINDS

    names = set(KINDS) | {"neighbourhood"}
    return [
        c.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Compare)
        for c in (node.left, *node.comparators)
        if isinstance(c, ast.Constant) and c.value in names
    ]


def test_no_module_below_the_run_compares_a_kinds_name() -> None:
    found = {
        str(p.relative_to(ROOT)): names
        for room in CONTRACT_ONLY
        for p in (ROOT / "tuner" / room).rglob("*.py")
        if (names := kind_names_compared(ast.parse(p.read_text())))
    }
    assert found == {}
    assert kind_names_compared(ast.parse('if task.kind == "pair": pass')) == ["pair"]
