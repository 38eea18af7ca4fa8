"""Secrets in a storage URL never show, and export files are whole and private."""

from __future__ import annotations

import stat
from pathlib import Path

from tuner.cli import main
from tuner.store.storage import mask


def test_mask_hides_query_passwords() -> None:
    """?password= and libpq's other secret keys are masked like user:password@."""
    shown = mask(
        "postgresql://u:pw1@h/db?password=pw2&sslpassword=pw3&passfile=/x/pw4&application_name=a"
    )
    for secret in ("pw1", "pw2", "pw3", "pw4"):
        assert secret not in shown
    assert "application_name=a" in shown


def test_export_out_atomic_and_private(tmp_path: Path) -> None:
    """export --out replaces the file whole (no temp left) with mode 0600."""
    import optuna

    db = tmp_path / "o.db"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.create_study(storage=f"sqlite:///{db}", study_name="not-dkd")
    out = tmp_path / "best.json"
    out.write_text("previous")
    # Through the entry point in this process (export as a real process:
    # tests/security/test_read_only.py).
    code = main(["export", "--storage", f"sqlite:///{db}", "--format", "json", "--out", str(out)])
    assert code == 0
    assert out.read_text().strip() == "[]"
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
