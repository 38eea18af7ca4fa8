"""docs/design.md is the code's map: every module of a room is named in the room table of §8, and
the claims it makes about branching hold (no module outside the kinds' table, tuner/kinds/,
compares a kind's or a mode's name; the strategies' claim is
tests/tuner/test_strategies_contract.py's)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DESIGN = (ROOT / "docs" / "design.md").read_text()
#: Where kinds and modes are named and their behaviour owned: the kinds' table.
KINDS_TABLE = ROOT / "tuner" / "kinds"


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
    """Kind and mode names a module compares with (``kind == "pair"``,
    ``opts.mode != "neighbourhood"``, ``t.kind in ("pair", "confirm")``)."""
    from tuner.kinds import KINDS
    from tuner.options import MODES

    names = set(KINDS) | set(MODES)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare):
            continue
        for c in (node.left, *node.comparators):
            items = c.elts if isinstance(c, ast.Tuple | ast.List | ast.Set) else [c]
            found += [e.value for e in items if isinstance(e, ast.Constant) and e.value in names]
    return found


def test_no_module_outside_the_kinds_table_compares_a_kind_or_mode_name() -> None:
    modules = [p for p in (ROOT / "tuner").rglob("*.py") if KINDS_TABLE not in p.parents]
    assert {p.parent.name for p in modules} >= {"run", "cli", "views", "store", "tuner"}
    found = {
        str(p.relative_to(ROOT)): names
        for p in modules
        if (names := kind_names_compared(ast.parse(p.read_text())))
    }
    assert found == {}
    for branch in ('if task.kind == "pair": pass', 'x = opts.mode != "neighbourhood"',
                   'y = t.kind in ("pair", "confirm")'):  # fmt: skip
        assert kind_names_compared(ast.parse(branch)), branch
