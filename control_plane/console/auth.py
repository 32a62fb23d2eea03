"""Console sign-in: the admin token once, then a signed session cookie; CSRF on every form.

- The session cookie (`hs_console`) is HttpOnly, SameSite=Strict, Path=/console, Secure on
  HTTPS, and holds only a random session id signed (itsdangerous, with an expiry) by a key
  derived from the admin token: changing the token signs everyone out. No token in it.
- Every form carries `csrf`, an HMAC of the session id under another derived key; a POST
  without the right one is refused (403) before anything else happens. The sign-in form has
  one too, tied to a short-lived pre-session cookie (login CSRF).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

SESSION_COOKIE = "hs_console"
PRESESSION_COOKIE = "hs_console_pre"
SESSION_MAX_AGE_S = 12 * 60 * 60
PRESESSION_MAX_AGE_S = 30 * 60
COOKIE_PATH = "/console"


def new_sid() -> str:
    return secrets.token_urlsafe(24)


@dataclass(frozen=True)
class Session:
    sid: str
    csrf: str


class ConsoleAuth:
    def __init__(self, admin_token: str) -> None:
        token = admin_token.encode()
        self._expected = token
        self._signer = URLSafeTimedSerializer(
            hashlib.sha256(b"hookstream console session\x00" + token).hexdigest(),
            salt="console-session")
        self._csrf_key = hashlib.sha256(b"hookstream console csrf\x00" + token).digest()

    # --- the admin token ------------------------------------------------------------------
    def token_ok(self, given: str) -> bool:
        return hmac.compare_digest(given.encode(), self._expected)

    # --- sessions ---------------------------------------------------------------------------
    def csrf_for(self, sid: str) -> str:
        return hmac.new(self._csrf_key, sid.encode(), hashlib.sha256).hexdigest()

    def _load(self, request: Request, cookie: str, max_age: int) -> Session | None:
        raw = request.cookies.get(cookie)
        if not raw:
            return None
        try:
            sid = self._signer.loads(raw, max_age=max_age)
        except BadSignature:
            return None
        if not isinstance(sid, str):
            return None
        return Session(sid, self.csrf_for(sid))

    def session(self, request: Request) -> Session | None:
        return self._load(request, SESSION_COOKIE, SESSION_MAX_AGE_S)

    def presession(self, request: Request) -> Session | None:
        return self._load(request, PRESESSION_COOKIE, PRESESSION_MAX_AGE_S)

    def _set(self, request: Request, response: Response, cookie: str, max_age: int,
             sid: str | None = None) -> Session:
        sid = sid or new_sid()
        response.set_cookie(cookie, self._signer.dumps(sid), max_age=max_age, path=COOKIE_PATH,
                            httponly=True, samesite="strict",
                            secure=request.url.scheme == "https")
        return Session(sid, self.csrf_for(sid))

    def start_session(self, request: Request, response: Response) -> Session:
        response.delete_cookie(PRESESSION_COOKIE, path=COOKIE_PATH)
        return self._set(request, response, SESSION_COOKIE, SESSION_MAX_AGE_S)

    def start_presession(self, request: Request, response: Response, sid: str) -> Session:
        return self._set(request, response, PRESESSION_COOKIE, PRESESSION_MAX_AGE_S, sid)

    @staticmethod
    def end_session(response: Response) -> None:
        response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH)

    @staticmethod
    def csrf_ok(session: Session | None, given: str | None) -> bool:
        return (session is not None and given is not None
                and hmac.compare_digest(given.encode(), session.csrf.encode()))
