"""Headless Chromium for report tests (Debian's chromium, installed by scripts/system-deps.sh)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        raise RuntimeError("chromium not found: run `make test` (scripts/system-deps.sh installs it)")
    return exe


def _run(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [chromium(), *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=120, check=True,
    )


def dump_dom(html_path: Path, profile: Path) -> str:
    """The DOM after load (scripts run, virtual time advanced so images decode)."""
    return _run(["--virtual-time-budget=5000", "--dump-dom", html_path.resolve().as_uri()], profile).stdout


def screenshot(html_path: Path, png_path: Path, profile: Path, size: str = "1200,2400") -> Path:
    _run([f"--window-size={size}", f"--screenshot={png_path}", "--virtual-time-budget=5000",
          html_path.resolve().as_uri()], profile)
    return png_path
