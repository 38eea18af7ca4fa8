"""Who learns from whom in the neighbourhood mode: the clients' graph and its neighbour sets.

A topology is undirected (the Molo et al. setting: every client is both a student and a teacher
of each neighbour): ``complete`` (every other client, the poster's 3 clients), ``ring`` (the two
clients next to it) or ``edges`` (an explicit list of pairs). Validation names the first bad
edge or client in one line, so a typo in ``[topology]`` never silently drops a teacher.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .errors import ConfigError

TOPOLOGIES = ("complete", "ring", "edges")

Edge = tuple[int, int]


def parse_edges(raw: Any, where: str = "[topology].edges") -> tuple[Edge, ...]:
    """TOML's ``[[0, 1], [1, 2]]`` as a tuple of int pairs; anything else is one ConfigError."""
    example = "write pairs of client numbers, e.g. edges = [[0, 1], [1, 2]]"
    if not isinstance(raw, list | tuple):
        raise ConfigError(f"{where} must be a list of pairs, got {raw!r}: {example}")
    edges = []
    for item in raw:
        ok = isinstance(item, list | tuple) and len(item) == 2
        if not ok or any(isinstance(v, bool) or not isinstance(v, int) for v in item):
            raise ConfigError(f"{where}: {item!r} is not a pair of client numbers: {example}")
        edges.append((int(item[0]), int(item[1])))
    return tuple(edges)


def neighbours(
    kind: str, participants: int, edges: Iterable[Edge] = ()
) -> tuple[tuple[int, ...], ...]:
    """Each client's neighbours, sorted: ``result[k]`` are the teachers of client ``k``.

    Raises ConfigError for an unknown kind, an edge naming a client that does not exist, a
    self-loop, edges given with a kind that ignores them, and a client without any neighbour
    (it would have no teacher, and the round's KD term would be empty).
    """
    where = "[topology]"
    if kind not in TOPOLOGIES:
        raise ConfigError(
            f"{where}.kind = {kind!r} is invalid: must be one of {', '.join(TOPOLOGIES)}"
        )
    edges = tuple(edges)
    if kind != "edges" and edges:
        raise ConfigError(
            f'{where}.edges is only read with kind = "edges" (kind is {kind!r}): '
            'drop the edges or set kind = "edges"'
        )
    sets: list[set[int]] = [set() for _ in range(participants)]
    if kind == "complete":
        for k in range(participants):
            sets[k] = set(range(participants)) - {k}
    elif kind == "ring":
        for k in range(participants):
            sets[k] = {(k - 1) % participants, (k + 1) % participants} - {k}
    else:
        for a, b in edges:
            for c in (a, b):
                if not 0 <= c < participants:
                    raise ConfigError(
                        f"{where}.edges: [{a}, {b}] names client {c}, which does not exist: "
                        f"the federation has clients 0..{participants - 1}"
                    )
            if a == b:
                raise ConfigError(
                    f"{where}.edges: [{a}, {b}] is a self-loop: a client cannot be its own "
                    "teacher, drop that edge"
                )
            sets[a].add(b)
            sets[b].add(a)
    isolated = [k for k, s in enumerate(sets) if not s]
    if isolated:
        raise ConfigError(
            f"{where}: client {isolated[0]} has no neighbour"
            + (f" (nor {', '.join(map(str, isolated[1:]))})" if len(isolated) > 1 else "")
            + ': add an edge to it, or use kind = "complete" or "ring"'
        )
    return tuple(tuple(sorted(s)) for s in sets)
