"""A small W3C WebDriver client for headless Chromium: just what the browser tests need.

chromedriver speaks the W3C WebDriver protocol over HTTP; a dozen lines of urllib drive it, so
the tests need no browser-automation package. Debian's ``chromium`` and ``chromium-driver``
provide the two binaries (``make browser`` installs them).
"""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


class WebDriverError(RuntimeError):
    """chromedriver answered with an error (its message is kept)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http(method: str, url: str, body: dict | None = None, timeout: float = 60) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read() or b"null")["value"]
    except urllib.error.HTTPError as exc:
        value = json.loads(exc.read() or b"{}").get("value", {})
        raise WebDriverError(f"{value.get('error')}: {value.get('message', '')[:300]}") from None


class Browser:
    """One headless Chromium session behind its own chromedriver process."""

    def __init__(self, width: int = 1400, height: int = 1000) -> None:
        self.port = free_port()
        self.driver = subprocess.Popen(
            [CHROMEDRIVER, f"--port={self.port}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.base = f"http://127.0.0.1:{self.port}"
        self._wait_for_driver()
        options = {
            "binary": CHROMIUM,
            # --no-sandbox: the tests may run as root (CI), where Chromium's sandbox refuses.
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                f"--window-size={width},{height}",
            ],
        }
        caps = {"capabilities": {"alwaysMatch": {"goog:chromeOptions": options}}}
        try:
            self.session = _http("POST", f"{self.base}/session", caps, timeout=120)["sessionId"]
        except Exception:
            self.driver.kill()
            raise
        self.url = f"{self.base}/session/{self.session}"

    def _wait_for_driver(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if _http("GET", f"{self.base}/status", timeout=5).get("ready"):
                    return
            except (OSError, WebDriverError):
                pass
            time.sleep(0.1)
        self.driver.kill()
        raise WebDriverError(f"chromedriver did not start within {timeout}s")

    def get(self, url: str) -> None:
        _http("POST", f"{self.url}/url", {"url": url}, timeout=120)

    def run(self, script: str, *args: Any) -> Any:
        """Run JavaScript (a function body: use ``return``) in the page."""
        return _http("POST", f"{self.url}/execute/sync", {"script": script, "args": list(args)})

    def wait_for(self, script: str, timeout: float = 60, *args: Any) -> Any:
        """Poll ``script`` until it returns something truthy; fail with its last value."""
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            value = self.run(script, *args)
            if value:
                return value
            time.sleep(0.25)
        raise AssertionError(f"the page never satisfied {script!r} (last value {value!r})")

    def text(self) -> str:
        return self.run("return document.body ? document.body.innerText : '';")

    def screenshot(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(_http("GET", f"{self.url}/screenshot")))
        return path

    def full_page_screenshot(self, path: Path, max_height: int = 6000) -> Path:
        """The whole page: the window is resized to the document's height first."""
        height = min(self.run("return document.documentElement.scrollHeight;"), max_height)
        width = self.run("return window.outerWidth;")
        _http("POST", f"{self.url}/window/rect", {"width": width, "height": height})
        time.sleep(1.0)  # responsive plots redraw after the resize
        return self.screenshot(path)

    def close(self) -> None:
        try:
            _http("DELETE", self.url, timeout=30)
        except (OSError, WebDriverError):
            pass
        finally:
            self.driver.terminate()
            try:
                self.driver.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.driver.kill()
                self.driver.wait()
