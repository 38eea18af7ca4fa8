"""Browser tests: headless Chromium (Debian's ``chromium`` + ``chromium-driver``) looks at what a
person sees. They skip with a how-to where the browser is missing, and fail instead when
DKD_TUNE_REQUIRE_BROWSER=1 (as .ci/run sets). Screenshots go to test-output/browser/."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from objectives import load_config, prepare_federation
from tuner import TuneOptions, tune

# pytest imports test files in importlib mode: the WebDriver client beside this file is found
# through sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from webdriver import CHROMEDRIVER, CHROMIUM, Browser

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "test-output" / "browser"

TINY = """\
name = "tiny-browser"
[data]
dataset = "synthetic"
train_size = 900
test_size = 300
[federation]
participants = 3
public_size = 240
min_size = 50
[pretrain]
epochs = 2
batch_size = 32
[kd]
batch_size = 64
eval_points = 2
"""


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    if missing:
        message = f"no {' and no '.join(missing)}: run make browser (apt chromium chromium-driver)"
        if os.environ.get("DKD_TUNE_REQUIRE_BROWSER") == "1":
            pytest.fail(f"browser required: {message}")
        pytest.skip(message)
    b = Browser()
    try:
        yield b
    finally:
        b.close()


@pytest.fixture(scope="session")
def shots() -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    return SHOTS


@pytest.fixture(scope="session")
def run_db(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A finished run on a three-participant synthetic federation (every pair, notes written)."""
    root = tmp_path_factory.mktemp("browser")
    config = root / "tiny.toml"
    config.write_text(TINY)
    bundles = root / "bundles"
    prepare_federation(load_config(config), directory=bundles)
    url = f"sqlite:///{root / 'run.db'}"
    tune(
        TuneOptions(
            config=str(config),
            bundles=str(bundles),
            storage=url,
            pairs="all",
            trials=4,
            sampler="random",
            pruner="none",
            progress="quiet",
        ),
        say=lambda _m: None,
    )
    return {
        "url": url,
        "root": root,
        "studies": ["tiny-browser/0-1", "tiny-browser/0-2", "tiny-browser/1-2"],
    }
