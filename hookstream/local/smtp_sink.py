"""A local SMTP server (aiosmtpd) that keeps every mail it receives as an `.eml` file.

`make run` points the notifier at it so invitations and alerts can be opened in any mail
program; tests and the benchmark use it as the real SMTP server. It runs in its own thread
(aiosmtpd's Controller), so it also works beside a running asyncio loop.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from hookstream.local.kafka import free_port

log = logging.getLogger(__name__)

OnMessage = Callable[[Envelope, float], None]


class EmlWriter:
    """aiosmtpd handler: each accepted mail becomes `<folder>/<ns>-<n>.eml` (written whole,
    then renamed, so a reader never sees half a file)."""

    def __init__(self, folder: Path | None, on_message: OnMessage | None = None) -> None:
        self.folder = folder
        self.on_message = on_message
        self.count = 0
        self._seq = itertools.count()
        self._lock = threading.Lock()
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        received = time.time()
        if self.folder is not None:
            name = f"{time.time_ns()}-{next(self._seq)}.eml"
            tmp = self.folder / f".{name}.tmp"
            tmp.write_bytes(_as_bytes(envelope.original_content or envelope.content))
            os.replace(tmp, self.folder / name)
        with self._lock:
            self.count += 1
        if self.on_message is not None:
            self.on_message(envelope, received)
        return "250 Message accepted for delivery"


def _new_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed (it comes with uvicorn[standard]): about a third less CPU per
    mail than the default loop (see bench/notifier.py)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _as_bytes(content: bytes | str | None) -> bytes:
    if content is None:
        return b""
    return content if isinstance(content, bytes) else content.encode("utf-8")


class _Authenticator:
    def __init__(self, username: str, password: str) -> None:
        self._username = username.encode()
        self._password = password.encode()

    def __call__(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                 auth_data: Any) -> AuthResult:
        ok = (isinstance(auth_data, LoginPassword) and auth_data.login == self._username
              and auth_data.password == self._password)
        return AuthResult(success=ok, handled=False)


class SmtpSink:
    """Start/stop an SMTP server on `host:port` (port 0: a free one) writing `.eml` files.

    `handler` replaces the default EmlWriter (tests inject failures that way);
    `auth=(user, password)` makes the server check AUTH (plain text; local use only), and
    `auth_required` refuses mail from a client that did not authenticate."""

    def __init__(self, folder: Path | str | None = Path("var/mail"), host: str = "127.0.0.1",
                 port: int = 0, handler: Any = None, on_message: OnMessage | None = None,
                 auth: tuple[str, str] | None = None, auth_required: bool = False) -> None:
        self.folder = Path(folder) if folder is not None else None
        self.host = host
        self.port = port or free_port()
        self.handler = handler if handler is not None else EmlWriter(self.folder, on_message)
        self._auth = auth
        self._auth_required = auth_required
        self._controller: Controller | None = None

    def start(self) -> SmtpSink:
        kwargs: dict[str, Any] = {}
        if self._auth is not None:
            # AUTH offered over plain text: a local test server, never a real relay.
            kwargs.update(authenticator=_Authenticator(*self._auth),
                          auth_required=self._auth_required,
                          auth_require_tls=False)
        self._controller = Controller(self.handler, hostname=self.host, port=self.port,
                                      ready_timeout=10.0, loop=_new_loop(), **kwargs)
        self._controller.start()
        log.info("SMTP sink listening on %s:%d, writing to %s", self.host, self.port,
                 self.folder)
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    @property
    def running(self) -> bool:
        return self._controller is not None

    @property
    def url(self) -> str:
        creds = f"{quote(self._auth[0], safe='')}:{quote(self._auth[1], safe='')}@" \
            if self._auth else ""
        return f"smtp://{creds}{self.host}:{self.port}"

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def files(self) -> list[Path]:
        if self.folder is None or not self.folder.exists():
            return []
        return sorted(self.folder.glob("*.eml"))

    def messages(self) -> list[EmailMessage]:
        """Every mail received so far, parsed, oldest first."""
        return [read_eml(p) for p in self.files()]


def read_eml(path: Path) -> EmailMessage:
    with path.open("rb") as fh:
        msg = BytesParser(policy=policy.default).parse(fh)
    assert isinstance(msg, EmailMessage)
    return msg
