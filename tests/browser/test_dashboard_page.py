"""``dkd-tune dashboard`` as a real process on a free localhost port, looked at in headless
Chromium: the pair studies are listed and a pair's note is shown on its page."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator

import optuna
import pytest

LISTED = "return arguments[0].every(n => document.body.innerText.includes(n));"
BODY_TEXT = "return document.body ? document.body.innerText : '';"


@pytest.fixture
def dashboard(run_db) -> Iterator[str]:
    """The dashboard's address; the server process is stopped afterwards."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tuner", "dashboard", "--storage", run_db["url"], "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()  # the first line is the address, printed once listening
        match = re.search(r"http://127\.0\.0\.1:\d+/dashboard", line)
        assert match, (line, proc.poll(), proc.stderr.read() if proc.poll() is not None else "")
        yield match.group(0)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_dashboard_lists_pairs_and_shows_a_note(browser, until, run_db, dashboard, shots) -> None:
    browser.get(dashboard)
    until(60, LISTED, run_db["studies"])
    browser.save_screenshot(shots / "dashboard-studies.png")
    name = run_db["studies"][1]
    study_id = optuna.storages.RDBStorage(run_db["url"]).get_study_id_from_name(name)
    browser.get(f"{dashboard}/studies/{study_id}/note")
    heading = f"Pair {name.split('/')[1]} of tiny-browser"
    until(60, "return document.body.innerText.includes(arguments[0]);", heading)
    text = browser.execute_script(BODY_TEXT)
    assert "What dkd-tune export gives for this pair" in text and "default" in text
    # The markdown was rendered (a table and a heading), not shown as raw text.
    assert browser.execute_script(
        "return [...document.querySelectorAll('h2')].some(h => h.innerText === arguments[0]) "
        "&& document.querySelectorAll('table td').length >= 8;",
        heading,
    )
    browser.save_screenshot(shots / "dashboard-note.png")
