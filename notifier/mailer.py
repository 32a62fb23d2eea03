"""A pool of SMTP connections (aiosmtplib) and the transient/permanent verdict on failures.

Connections are opened lazily and reused: one SMTP session carries many mails, which is
what makes the notifier fast (see bench/notifier.py). A connection that saw any error is
closed and reopened on next use, so a 421 or a dropped socket never poisons the pool.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage

import aiosmtplib

from notifier.metrics import SMTP_SECONDS
from notifier.smtp_config import SmtpConfig

log = logging.getLogger(__name__)


class SendError(Exception):
    """A mail was not accepted.

    `transient`: worth retrying (connection trouble, 4xx). `infrastructure`: the failure is
    the server's or the configuration's (down, refused login), not this mail's, so it is
    retried however long it lasts. A permanent failure (5xx to this mail) is final.
    """

    def __init__(self, reason: str, *, transient: bool, code: int | None = None,
                 infrastructure: bool = False, kind: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transient = transient
        self.code = code
        self.infrastructure = infrastructure
        self._kind = kind

    @property
    def kind(self) -> str:
        if self._kind is not None:
            return self._kind
        if self.infrastructure:
            return "connection"
        return "smtp_transient" if self.transient else "smtp_permanent"


def classify(exc: BaseException) -> SendError:
    """The verdict on an aiosmtplib (or socket) failure."""
    if isinstance(exc, SendError):
        return exc
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused) and exc.recipients:
        exc = exc.recipients[0]
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError | aiosmtplib.SMTPHeloError
                  | aiosmtplib.SMTPConnectResponseError | aiosmtplib.SMTPNotSupported):
        # A server or configuration problem: every mail would fail the same way.
        code = getattr(exc, "code", None)
        return SendError(f"SMTP session refused ({code}): {_short(exc)}", transient=True,
                         code=code, infrastructure=True)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        code = exc.code
        permanent = 500 <= code < 600
        return SendError(f"SMTP {code}: {_short(exc.message)}", transient=not permanent,
                         code=code)
    if isinstance(exc, aiosmtplib.SMTPException | OSError | asyncio.TimeoutError):
        return SendError(f"SMTP connection failed: {type(exc).__name__}: {_short(exc)}",
                         transient=True, infrastructure=True)
    raise exc  # a bug, not an SMTP failure: let it surface


def _short(value: object, limit: int = 200) -> str:
    return " ".join(str(value).split())[:limit]


@dataclass(frozen=True)
class SendResult:
    code: int
    response: str
    seconds: float


class SmtpPool:
    def __init__(self, config: SmtpConfig, size: int, local_hostname: str | None = None) -> None:
        self.config = config
        self.size = size
        self.local_hostname = local_hostname
        self._idle: asyncio.Queue[aiosmtplib.SMTP | None] = asyncio.Queue()
        for _ in range(size):
            self._idle.put_nowait(None)  # a slot; the connection opens on first use
        self._closed = False
        # Does the server take a session? Set by every send and by `check`; None: not known.
        self._usable: bool | None = None
        self._verdict_at = 0.0

    def _verdict(self, usable: bool, why: str = "") -> None:
        if usable != self._usable:
            if usable:
                log.info("SMTP %s takes sessions", self.config.safe_url())
            else:
                log.warning("SMTP %s is not usable: %s", self.config.safe_url(), why)
        self._usable = usable
        self._verdict_at = time.monotonic()

    async def check(self, max_age: float = 5.0) -> bool:
        """Whether the server takes a session (for readiness): the verdict of the sends and
        checks of the last `max_age` seconds, else a NOOP on an idle connection (opened, with
        its login, if there is none). With every connection busy, the sends will tell."""
        if self._closed:
            return False
        if self._usable is not None and time.monotonic() - self._verdict_at < max_age:
            return self._usable
        try:
            client = self._idle.get_nowait()
        except asyncio.QueueEmpty:
            return bool(self._usable)
        try:
            if client is not None and client.is_connected:
                try:
                    await client.noop()
                    self._verdict(True)
                    return True
                except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                    # An idle connection the server dropped: a fresh one below decides.
                    log.debug("NOOP on an idle SMTP connection failed: %s", _short(exc))
                    await _close_quietly(client)
                    client = None
            client = await self._connect()
            self._verdict(True)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            await _close_quietly(client)
            client = None
            self._verdict(False, classify(exc).reason)
        finally:
            self._idle.put_nowait(client)
        return bool(self._usable)

    async def _connect(self) -> aiosmtplib.SMTP:
        c = self.config
        client = aiosmtplib.SMTP(
            hostname=c.host, port=c.port, username=c.username, password=c.password,
            use_tls=c.use_tls, start_tls=c.start_tls, validate_certs=c.validate_certs,
            timeout=c.timeout, local_hostname=self.local_hostname)
        await client.connect()
        return client

    async def send(self, message: bytes | EmailMessage, sender: str,
                   recipients: Sequence[str]) -> SendResult:
        """Send one mail on a pooled connection; raises SendError with the verdict."""
        if self._closed:
            raise SendError("the SMTP pool is closed", transient=True, infrastructure=True)
        client = await self._idle.get()
        t0 = time.perf_counter()
        try:
            if client is None or not client.is_connected:
                client = await self._connect()
            if isinstance(message, bytes):
                errors, response = await _transaction(client, sender, recipients, message)
            else:
                errors, response = await client.send_message(message, sender=sender,
                                                             recipients=list(recipients))
            if errors:  # the mail went out, some (not all) recipients were refused
                log.warning("the SMTP server refused %d of %d recipients (%s)", len(errors),
                            len(recipients), ", ".join(str(r.code) for r in errors.values()))
            seconds = time.perf_counter() - t0
            SMTP_SECONDS.observe(seconds)
            if self._usable is not True:
                self._verdict(True)
            return SendResult(code=250, response=_short(response), seconds=seconds)
        except BaseException as exc:
            await _close_quietly(client)
            client = None
            if isinstance(exc, asyncio.CancelledError):
                raise
            verdict = classify(exc)
            if verdict.infrastructure:
                self._verdict(False, verdict.reason)
            raise verdict from exc
        finally:
            self._idle.put_nowait(client)

    async def close(self) -> None:
        self._closed = True
        while not self._idle.empty():
            await _close_quietly(self._idle.get_nowait())


async def _transaction(client: aiosmtplib.SMTP, sender: str, recipients: Sequence[str],
                       message: bytes) -> tuple[dict[str, aiosmtplib.SMTPResponse], str]:
    """MAIL, RCPT..., DATA on an open session, like `SMTP.sendmail` but without re-parsing
    addresses that rendering already checked (a third of the client's CPU per mail). A
    recipient refused among several is reported; all refused raises.

    Issue 15: domains go IDNA-encoded; an address with a non-ASCII local part goes with
    SMTPUTF8 when the server offers it, else the mail fails as `smtputf8_unsupported` (the
    deployment's SMTP setup, not the automation: it does not count toward auto-disable)."""
    utf8 = not all(_local_ascii(a) for a in (sender, *recipients))
    options = b""
    if utf8:
        if client.is_ehlo_or_helo_needed:  # a plain session may not have said EHLO yet
            await client.ehlo()
        if not client.supports_extension("smtputf8"):
            raise SendError("the mail server does not offer SMTPUTF8, which an address with "
                            "non-ASCII characters before the @ needs", transient=False,
                            kind=SMTPUTF8_UNSUPPORTED)
        options = b" SMTPUTF8"
    r = await client.execute_command(b"MAIL", b"FROM:<" + _addr(sender) + b">" + options)
    if r.code != 250:
        raise aiosmtplib.SMTPSenderRefused(r.code, r.message, sender)
    refused: dict[str, aiosmtplib.SMTPResponse] = {}
    for rcpt in recipients:
        r = await client.execute_command(b"RCPT", b"TO:<" + _addr(rcpt) + b">")
        if r.code not in (250, 251):
            refused[rcpt] = r
    if len(refused) == len(recipients):
        raise aiosmtplib.SMTPRecipientsRefused([
            aiosmtplib.SMTPRecipientRefused(r.code, r.message, a) for a, r in refused.items()])
    response = await client.data(message)
    return refused, response.message


SMTPUTF8_UNSUPPORTED = "smtputf8_unsupported"


def _local_ascii(address: str) -> bool:
    return address.isascii() or address.rpartition("@")[0].isascii()


def _addr(address: str) -> bytes:
    """The envelope form: the domain IDNA-encoded (`bücher.example` ->
    `xn--bcher-kva.example`), the local part as UTF-8 (sent only with SMTPUTF8)."""
    local, at, domain = address.rpartition("@")
    if (not address or not at or not local or not domain
            or any(c in address for c in "<>\r\n\x00 ")):
        raise aiosmtplib.SMTPRecipientRefused(553, "address not allowed in an envelope",
                                              address)
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            raise aiosmtplib.SMTPRecipientRefused(553, "the domain is not a valid domain "
                                                  "name", address) from None
    return f"{local}@{domain}".encode()


async def _close_quietly(client: aiosmtplib.SMTP | None) -> None:
    if client is None or not client.is_connected:
        return
    try:
        await asyncio.wait_for(client.quit(), 2.0)
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        log.debug("closing an SMTP connection: %s", exc)  # it is going away either way
        client.close()
