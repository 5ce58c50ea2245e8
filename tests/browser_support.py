"""Headless Chromium for page tests: Debian's chromium and chromium-driver, driven by Selenium; a
test skips without them, unless VARIANTCTL_REQUIRE_BROWSER=1 (CI), where it fails. Screenshots go to
VARIANTCTL_TEST_ARTIFACTS (default: build/test-artifacts), kept after the run."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
REQUIRE_BROWSER = os.environ.get("VARIANTCTL_REQUIRE_BROWSER") == "1"


def browser() -> Any:
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        reason = "no headless Chromium here (apt-get install chromium chromium-driver; `make test` does)"
        if REQUIRE_BROWSER:
            pytest.fail(reason)
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,2400"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))


def screenshot(driver: Any, name: str) -> Path:
    folder = Path(
        os.environ.get("VARIANTCTL_TEST_ARTIFACTS")
        or Path(__file__).parent.parent / "build" / "test-artifacts"
    )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    assert driver.save_screenshot(str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return path


@contextmanager
def page_elsewhere(page: bytes) -> Iterator[str]:
    """`page` served from another origin than the servers under test (another port, and the name
    `localhost`), as an attacker's site would be; yields its URL."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://localhost:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
