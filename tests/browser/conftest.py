"""Browser tests: headless Chromium (Debian's ``chromium`` + ``chromium-driver``) driven through
selenium looks at what a person sees. They skip with a how-to where the browser is missing, and
fail instead when DKD_TUNE_REQUIRE_BROWSER=1 (as .ci/run sets). Screenshots go to
test-output/browser/.

No network: selenium is given both binaries (the driver through ``Service(executable_path=…)``,
the browser as ``binary_location``), so it never runs Selenium Manager, which would otherwise
look for (and download) a driver and a browser. The fixture fails if Selenium Manager is called
all the same."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from unittest import mock

import pytest

from objectives import load_config, prepare_federation
from tuner import TuneOptions, tune

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
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


def _browser_missing(message: str) -> None:
    if os.environ.get("DKD_TUNE_REQUIRE_BROWSER") == "1":
        pytest.fail(f"browser required: {message}")
    pytest.skip(message)


@pytest.fixture(scope="session")
def browser() -> Iterator[WebDriver]:
    """One headless Chromium session (selenium's Chrome driver) for the whole test session."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    if missing:
        _browser_missing(
            f"no {' and no '.join(missing)}: run make browser (apt chromium chromium-driver)"
        )
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.common.selenium_manager import SeleniumManager
    except ImportError:
        _browser_missing("no selenium: run make install (pip install -e '.[dev]')")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # --no-sandbox: the tests may run as root (CI), where Chromium's sandbox refuses.
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
    ):
        options.add_argument(arg)
    service = Service(executable_path=CHROMEDRIVER)
    offline = AssertionError("Selenium Manager was called: it would go to the network")
    with mock.patch.object(SeleniumManager, "binary_paths", side_effect=offline):
        driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="session")
def until(browser: WebDriver) -> Callable[..., Any]:
    """``until(timeout, script, *args)``: selenium's WebDriverWait polls the JavaScript ``script``
    (a function body: use ``return``) until it returns something truthy, and returns that; it
    fails with the script's last value."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.wait import WebDriverWait

    def wait(timeout: float, script: str, *args: Any) -> Any:
        last: list[Any] = [None]

        def check(driver: WebDriver) -> Any:
            last[0] = driver.execute_script(script, *args)
            return last[0]

        try:
            return WebDriverWait(browser, timeout, poll_frequency=0.25).until(check)
        except TimeoutException:
            raise AssertionError(
                f"the page never satisfied {script!r} (last value {last[0]!r})"
            ) from None

    return wait


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
            confirm=0,  # the pages' single-trial figures (confirmed ones: tests/tuner)
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
