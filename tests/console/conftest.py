"""The console's browser tests: one whole stack for the module, and Debian's Chromium.

The stack is `hookstream up` as a newcomer runs it (admin app with the console, ingress,
streams worker, notifier, the aiosmtpd SMTP sink writing .eml files), against the session's
real broker, on free ports, in a temporary directory; it is stopped with Ctrl-C (SIGINT) by
pid, and it stops its children by pid. Chromium is Debian's package, installed by
`tests/support/ensure_chromium.sh` when missing; Playwright drives it by its path.

Screenshots go to `$HOOKSTREAM_SCREENSHOTS_DIR` when set (`make console-screenshots`), else
to `console-screenshots/` under the test run's temporary directory.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from hookstream.local.kafka import free_port

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
TOKEN = "console-test-admin-token"


@dataclass
class Stack:
    admin: str  # http://127.0.0.1:PORT
    ingress: str
    mail_dir: Path
    token: str

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.admin, timeout=30,
                            headers={"Authorization": f"Bearer {self.token}"})


@pytest.fixture(scope="module")
def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("console-stack")
    ports = {name: free_port() for name in ("ingress", "admin", "worker", "notifier", "smtp")}
    env = {
        **os.environ,
        "HOOKSTREAM_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "HOOKSTREAM_TOPIC_PREFIX": f"tconsole{os.getpid()}{int(time.time()) % 100000}.",
        "HOOKSTREAM_TOPIC_PARTITIONS": "1",
        "HOOKSTREAM_INGRESS_PORT": str(ports["ingress"]),
        "HOOKSTREAM_ADMIN_PORT": str(ports["admin"]),
        "HOOKSTREAM_ADMIN_URL": f"http://127.0.0.1:{ports['admin']}",
        "HOOKSTREAM_SURVEY_BASE_URL": f"http://127.0.0.1:{ports['admin']}/s",
        "HOOKSTREAM_WORKER_PORT": str(ports["worker"]),
        "HOOKSTREAM_NOTIFIER_PORT": str(ports["notifier"]),
        "HOOKSTREAM_SMTP_URL": f"smtp://127.0.0.1:{ports['smtp']}",
        "HOOKSTREAM_ADMIN_TOKEN": TOKEN,
    }
    up = subprocess.Popen([sys.executable, "-m", "hookstream.cli", "up"], cwd=workdir, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(up.stdout.readline, "")),
                              daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        deadline = time.monotonic() + 180
        while not any(line.startswith("curl ") for line in lines):
            assert up.poll() is None, "hookstream up exited:\n" + "".join(lines)
            assert time.monotonic() < deadline, "the stack did not start:\n" + "".join(lines)
            time.sleep(0.2)
        yield Stack(admin=f"http://127.0.0.1:{ports['admin']}",
                    ingress=f"http://127.0.0.1:{ports['ingress']}",
                    mail_dir=workdir / "var" / "mail", token=TOKEN)
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGINT)  # `up` stops its children by pid, newest first
        try:
            up.wait(90)
        except subprocess.TimeoutExpired:
            up.kill()
            up.wait()
            raise


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's Chromium, installed by the project's script when missing."""
    if not CHROMIUM.exists():
        subprocess.run(["bash", str(ROOT / "tests" / "support" / "ensure_chromium.sh")],
                       check=True, timeout=900)
    assert CHROMIUM.exists(), "tests/support/ensure_chromium.sh did not install chromium"
    return CHROMIUM


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    named = os.environ.get("HOOKSTREAM_SCREENSHOTS_DIR")
    folder = Path(named) if named else tmp_path_factory.getbasetemp() / "console-screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def browser(chromium: Path) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(chromium), args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()
