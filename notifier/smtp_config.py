"""`HOOKSTREAM_SMTP_URL` parsed into what aiosmtplib needs.

    smtp://host:25                      plain, STARTTLS when the server offers it
    smtp://user:pass@host:587?starttls=1  STARTTLS required, then AUTH
    smtps://user:pass@host:465           implicit TLS
Query options: `starttls=1|0` (required | never; absent: when offered), `verify=0` (do not
check the server certificate; for a local test server only), `timeout=SECONDS`.
The password is kept out of `repr` and out of `safe_url()`, which is what logs show.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class SmtpUrlError(ValueError):
    """HOOKSTREAM_SMTP_URL cannot be used; the message names the part that is wrong."""


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    use_tls: bool = False
    start_tls: bool | None = None  # None: upgrade when the server offers STARTTLS
    validate_certs: bool = True
    timeout: float = 30.0

    @classmethod
    def from_url(cls, url: str) -> SmtpConfig:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps"):
            raise SmtpUrlError(f"SMTP URL scheme must be smtp or smtps, not {parts.scheme!r}")
        if not parts.hostname:
            raise SmtpUrlError("SMTP URL has no host")
        implicit_tls = parts.scheme == "smtps"
        try:
            port = parts.port or (465 if implicit_tls else 25)
        except ValueError as exc:
            raise SmtpUrlError("SMTP URL port is not a number between 0 and 65535") from exc
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        start_tls = _flag(query, "starttls")
        if implicit_tls and start_tls:
            raise SmtpUrlError("smtps:// is already TLS; starttls=1 cannot be combined with it")
        verify = _flag(query, "verify")
        try:
            timeout = float(query.get("timeout", 30.0))
        except ValueError as exc:
            raise SmtpUrlError("SMTP URL option timeout must be a number of seconds") from exc
        return cls(
            host=parts.hostname, port=port,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            use_tls=implicit_tls, start_tls=False if implicit_tls else start_tls,
            validate_certs=verify is not False, timeout=timeout)

    def safe_url(self) -> str:
        """The URL without the password, for logs."""
        user = f"{self.username}:***@" if self.username else ""
        scheme = "smtps" if self.use_tls else "smtp"
        return f"{scheme}://{user}{self.host}:{self.port}"


def _flag(query: dict[str, str], name: str) -> bool | None:
    if name not in query:
        return None
    value = query[name].lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise SmtpUrlError(f"SMTP URL option {name} must be 1 or 0, not {query[name]!r}")
