"""Text for a terminal from an untrusted storage (docs/design.md §10): study names, federation
names and attrs come from a database anyone on the cluster may write, so a name holding ESC, BEL
or CR could clear the screen, set the window title or overwrite a line of whoever reads it.
Every text view and every line the CLI prints goes through :func:`printable`."""

from __future__ import annotations

import unicodedata

#: Unicode categories shown escaped: controls (C0, DEL, C1), format characters (the bidi
#: overrides that show a name reversed, zero-width ones), line and paragraph separators, and
#: lone surrogates (which would not even encode).
_HIDDEN = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})


def printable(text: object) -> str:
    """``text`` with every control or format character escaped as Python writes it (``\\x1b``,
    ``\\r``, ``\\u202e``); everything else, non-ASCII letters included, as it is."""
    s = str(text)
    if s.isprintable():  # the usual case, at C speed (spaces count as printable, \t does not)
        return s
    return "".join(ascii(c)[1:-1] if unicodedata.category(c) in _HIDDEN else c for c in s)
