"""Headless Chromium for screenshots of the leaderboard page (and for the test that the page renders).

Chromium comes from the distribution (`apt-get install -y chromium` on Debian). Every call uses a fresh
profile folder and the flags that keep a headless browser from reaching the network or updating itself.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
INSTALL_HINT = "install it with: apt-get install -y chromium"


def find_chromium() -> str | None:
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def run_chromium(*arguments: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
    chromium = find_chromium()
    if chromium is None:
        raise FileNotFoundError(f"no Chromium found (looked for {', '.join(CANDIDATES)}); {INSTALL_HINT}")
    with tempfile.TemporaryDirectory(prefix="leaderboard-chromium-") as profile:
        command = [chromium, *FLAGS, f"--user-data-dir={profile}", *arguments]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"chromium failed ({result.returncode}): {result.stderr.strip()[-2000:]}")
    return result


def screenshot(page: Path, png: Path, *, width: int = 1400, height: int = 5000) -> Path:
    """Save a PNG of the page as a `width` x `height` window shows it."""
    page, png = Path(page).resolve(), Path(png).resolve()
    run_chromium(f"--window-size={width},{height}", f"--screenshot={png}", page.as_uri())
    if not png.exists():
        raise RuntimeError(f"chromium wrote no screenshot to {png}")
    return png


def dump_dom(page: Path, *, budget_ms: int = 10_000) -> str:
    """The page's DOM after it loaded and ran its scripts (virtual time, so no sleeping)."""
    page = Path(page).resolve()
    return run_chromium(f"--virtual-time-budget={budget_ms}", "--dump-dom", page.as_uri()).stdout
