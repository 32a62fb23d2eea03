"""A throwaway local PostgreSQL server from Debian's packages, for the test suite.

`start(dir, port)` installs the `postgresql` package with apt-get when no server binary is
present (as root, as in CI), runs initdb and pg_ctl as the `postgres` OS user when we are
root (PostgreSQL refuses to run as root), listens on 127.0.0.1:PORT only, and creates a
database. `stop(dir)` ends exactly that server (the pid in its postmaster.pid).

Command line: `python -m tests.support.postgres start|stop DIR [PORT]`.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

from hookstream.local.kafka import free_port

DB_NAME = "hookstream"
SERVER_GLOB = "/usr/lib/postgresql/*/bin/postgres"


class PostgresError(RuntimeError):
    """The local PostgreSQL could not be installed, started or stopped."""


@dataclass(frozen=True)
class LocalPostgres:
    data_dir: Path
    port: int
    bin_dir: Path

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{DB_NAME}"

    @property
    def admin_url(self) -> str:
        """The `postgres` maintenance database, for CREATE/DROP DATABASE."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"


def _version_key(path: str) -> tuple[int, ...]:
    ver = Path(path).parent.parent.name
    return tuple(int(p) for p in ver.split(".") if p.isdigit())


def find_bin_dir() -> Path | None:
    servers = sorted(glob.glob(SERVER_GLOB), key=_version_key)
    return Path(servers[-1]).parent if servers else None


def ensure_installed() -> Path:
    """The bin directory of the newest installed server; installs Debian's package if none."""
    found = find_bin_dir()
    if found is not None:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise PostgresError("no PostgreSQL server under /usr/lib/postgresql and cannot install "
                            "one (needs root and apt-get); install `postgresql` or set "
                            "HOOKSTREAM_TEST_POSTGRES_URL")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"],
                ["apt-get", "install", "-y", "--no-install-recommends", "postgresql"]):
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if proc.returncode != 0:
            raise PostgresError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    found = find_bin_dir()
    if found is None:
        raise PostgresError("installed `postgresql` but found no server binary")
    return found


def _as_db_user(cmd: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root; as root we switch to the `postgres` OS user.
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(_as_db_user(cmd), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise PostgresError(f"{what} failed ({proc.returncode}): {proc.stderr[-2000:]}"
                            f"{proc.stdout[-2000:]}")


def _prepare_dir(data_dir: Path) -> None:
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if os.geteuid() == 0:
        pg = pwd.getpwnam("postgres")
        os.chown(data_dir, pg.pw_uid, pg.pw_gid)
        # The server user must be able to reach the directory through its parents.
        for parent in data_dir.parents:
            if parent == Path("/"):
                break
            mode = parent.stat().st_mode
            if not mode & 0o001:
                raise PostgresError(f"{parent} is not traversable by the postgres user; put "
                                    "the data directory elsewhere (e.g. under /tmp)")


def start(data_dir: Path, port: int, timeout: float = 60.0) -> LocalPostgres:
    bin_dir = ensure_installed()
    data_dir = data_dir.resolve()
    pgdata = data_dir / "pgdata"
    _prepare_dir(data_dir)
    if not (pgdata / "PG_VERSION").exists():
        _run([str(bin_dir / "initdb"), "-D", str(pgdata), "-U", "postgres", "--auth=trust",
              "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"], "initdb")
    opts = (f"-p {port} -c listen_addresses=127.0.0.1 -k {data_dir} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
    _run([str(bin_dir / "pg_ctl"), "-D", str(pgdata), "-l", str(data_dir / "server.log"),
          "-o", opts, "-w", "-t", str(int(timeout)), "start"], "pg_ctl start")
    pg = LocalPostgres(data_dir, port, bin_dir)
    _create_database(pg)
    return pg


def _create_database(pg: LocalPostgres) -> None:
    import psycopg

    with psycopg.connect(host="127.0.0.1", port=pg.port, user="postgres", dbname="postgres",
                         autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                              (DB_NAME,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{DB_NAME}"')


def server_pid(data_dir: Path) -> int | None:
    pidfile = data_dir / "pgdata" / "postmaster.pid"
    try:
        return int(pidfile.read_text().splitlines()[0])
    except (FileNotFoundError, IndexError, ValueError):
        return None


def stop(data_dir: Path, timeout: float = 30.0) -> bool:
    """Stop the server of `data_dir` by its pid (fast shutdown); False if it was not running."""
    pid = server_pid(data_dir.resolve())
    if pid is None:
        return False
    try:
        os.kill(pid, signal.SIGINT)  # PostgreSQL's "fast" shutdown
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    os.kill(pid, signal.SIGQUIT)  # immediate shutdown: it did not stop in time
    return True


@contextmanager
def server(prefix: str = "hookstream-pg-") -> Iterator[str]:
    """A server URL: HOOKSTREAM_TEST_POSTGRES_URL if set, else a throwaway server, stopped after."""
    named = os.environ.get("HOOKSTREAM_TEST_POSTGRES_URL")
    if named:
        yield named
        return
    # Not under pytest's tmp dir: that is private to root and the server runs as `postgres`.
    base = Path(tempfile.mkdtemp(prefix=prefix))
    base.chmod(0o755)
    try:
        pg = start(base / "pg", free_port())
        try:
            yield pg.url
        finally:
            stop(pg.data_dir)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def fresh_database(server_url: str) -> tuple[str, str]:
    """A new, empty database on the server: (its SQLAlchemy URL with psycopg, its name)."""
    url = make_url(server_url).set(drivername="postgresql+psycopg")
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(host=url.host, port=url.port, user=url.username,
                         password=url.password, dbname=url.database, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return url.set(database=name).render_as_string(hide_password=False), name


def drop_database(server_url: str, name: str) -> None:
    url = make_url(server_url)
    with psycopg.connect(host=url.host, port=url.port, user=url.username,
                         password=url.password, dbname=url.database, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in ("start", "stop"):
        print("usage: python -m tests.support.postgres start|stop DIR [PORT]",
              file=sys.stderr)
        return 2
    data_dir = Path(argv[1])
    if argv[0] == "start":
        pg = start(data_dir, int(argv[2]) if len(argv) > 2 else 5432)
        print(pg.url)
        return 0
    return 0 if stop(data_dir) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
