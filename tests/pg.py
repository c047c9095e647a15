"""A throwaway PostgreSQL server for tests: initdb in a temporary folder, loopback only, free port.

The Debian package's binaries live in ``/usr/lib/postgresql/VERSION/bin`` (``scripts/system-deps.sh``
installs them in CI). PostgreSQL refuses to run as root, so when the tests run as root the server
runs as the ``postgres`` system user (``runuser -u postgres --``) in a data folder it owns.
Authentication is ``trust`` on 127.0.0.1 only; the server is stopped and its folder removed on exit.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator


def pg_bin() -> Path:
    """The newest installed PostgreSQL ``bin`` folder; raises ``RuntimeError`` if there is none."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if not found:
        on_path = shutil.which("initdb")
        if on_path:
            return Path(on_path).parent
        raise RuntimeError(
            "PostgreSQL server binaries not found (no /usr/lib/postgresql/*/bin/initdb and no initdb on PATH); "
            "install them with `bash scripts/system-deps.sh` (Debian package 'postgresql')"
        )
    return Path(found[-1]).parent


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_user(cmd: list[str], user: str | None) -> list[str]:
    return ["runuser", "-u", user, "--", *cmd] if user else cmd


@contextlib.contextmanager
def postgres_server(timeout: float = 60.0) -> Iterator[str]:
    """Start a fresh server and yield its SQLAlchemy URL (``postgresql+psycopg2://...``)."""
    bindir = pg_bin()
    user = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise RuntimeError("running as root needs a 'postgres' system user to own the server; none exists") from None
        user = "postgres"
    root = Path(tempfile.mkdtemp(prefix="reglab-pg-"))
    data = root / "data"
    log = root / "server.log"
    if user:
        ent = pwd.getpwnam(user)
        os.chown(root, ent.pw_uid, ent.pw_gid)
    started = False
    try:
        subprocess.run(
            _as_user([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"], user),
            check=True,
            capture_output=True,
            text=True,
        )
        for attempt in range(3):
            port = _free_port()
            opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off -c max_connections=50"
            proc = subprocess.run(
                _as_user([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", opts, "-w", "-t", str(int(timeout)), "start"], user),
                capture_output=True,
                text=True,
            )
            if proc.returncode == 0:
                started = True
                break
            time.sleep(0.5)
        if not started:
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"PostgreSQL did not start: {proc.stderr.strip()} {tail}")
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
    finally:
        if started:
            subprocess.run(_as_user([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"], user), capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
