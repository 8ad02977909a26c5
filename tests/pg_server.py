"""A private PostgreSQL server for tests and benches: the Debian package's binaries, a temp
folder, a free port on 127.0.0.1; stopped and deleted at the end.

Tests using it skip with a clear reason when the binaries are absent (apt-get install
postgresql). As root, initdb refuses to run: the server then runs as the ``postgres``
user (which the Debian package creates), who is given the folder.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from mqtt_broker import free_port

SERVER_USER = "postgres"


def binaries() -> Path | None:
    """The newest installed /usr/lib/postgresql/<version>/bin with initdb and pg_ctl."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    return found[-1].parent if found else None


def require_postgres() -> Path:
    folder = binaries()
    if folder is None:
        pytest.skip(
            "PostgreSQL not found in /usr/lib/postgresql/*/bin (apt-get install postgresql)"
        )
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SERVER_USER)
        except KeyError:
            pytest.skip(f"running as root and no '{SERVER_USER}' user to run PostgreSQL as")
    return folder


class PgServer:
    """``durable``: fsync as in production (benches); tests run without it."""

    def __init__(self, durable: bool = False) -> None:
        self.bin = require_postgres()
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="flowedge-pg-"))
        self.data = self.folder / "data"
        self.durable = durable
        if os.geteuid() == 0:  # the server's user needs the folder
            account = pwd.getpwnam(SERVER_USER)
            os.chown(self.folder, account.pw_uid, account.pw_gid)
            self._as = ["runuser", "-u", SERVER_USER, "--"]
        else:
            self._as = []

    def _run(self, *command: str) -> None:
        done = subprocess.run([*self._as, *command], capture_output=True, text=True, timeout=120)
        if done.returncode:
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")

    def start(self) -> PgServer:
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",
        )
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.folder / "server.log"),
            "-w",
            "start",
        )
        return self

    def dsn(self, dbname: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={dbname}"

    def create_database(self, name: str) -> str:
        """A new empty database; its connection string."""
        import psycopg

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def pids(self) -> list[int]:
        """The server's processes (the postmaster and its children), for CPU accounting."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        children = Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text().split()
        return [postmaster, *map(int, children)]

    def stop(self) -> None:
        if self.data.exists():
            subprocess.run(
                [
                    *self._as,
                    str(self.bin / "pg_ctl"),
                    "-D",
                    str(self.data),
                    "-m",
                    "immediate",
                    "stop",
                ],
                capture_output=True,
                timeout=60,
            )
        shutil.rmtree(self.folder, ignore_errors=True)
