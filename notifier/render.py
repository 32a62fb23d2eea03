"""Turn an automation's message and an invitation into a MIME mail (text + HTML parts).

Rendering is `automations.templates.render`: placeholders only, never code. A message body
without markup is treated as text (escaped whole in the HTML part, line breaks kept); a body
with markup is the author's HTML (values escaped, markup kept) and its text part has the tags
stripped. The subject goes through `header_safe`, so no CR/LF from a value reaches a header;
text that a mail client would decode as an RFC 2047 encoded word is itself encoded, so it
shows as written.
"""

from __future__ import annotations

import binascii
import html
import itertools
import re
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from email import policy
from email.header import Header
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import format_datetime, formataddr, parseaddr
from functools import lru_cache
from typing import Any

from automations.templates import SURVEY_LINK, header_safe, placeholders, render

_TAG = re.compile(r"<[a-zA-Z/][^>]*>")
# Markup that makes a body the author's HTML; `<answer>` in prose does not.
_HTML_TAG = re.compile(r"</?(p|br|a|div|span|b|i|u|strong|em|ul|ol|li|h[1-6]|table|tr|td|"
                       r"html|body|img|hr|blockquote|pre|code)\b[^>]*>", re.IGNORECASE)
_BLOCK_END = re.compile(r"</(p|div|h[1-6]|li|tr)>|<br\s*/?>", re.IGNORECASE)
_LINK_MARKER = "\x00hookstream-survey-link\x00"
_BOUNDARIES = itertools.count(int.from_bytes(secrets.token_bytes(6), "big"))
_EMAIL_LIKE = re.compile(r"[^\s<>@]+@[^\s<>@]+")
# Where a mail client would start decoding an RFC 2047 encoded word (issue 15): such text
# is sent encoded itself, so the reader sees it literally.
_ENCODED_WORD = re.compile(r"=\?[^?\s]*\?[bBqQ]\?", re.ASCII)


class MessageError(ValueError):
    """The mail cannot be built (e.g. an address that cannot stand in a header)."""


@lru_cache(maxsize=64)
def sender_address(mail_from: str) -> str:
    """The bare address of `HOOKSTREAM_MAIL_FROM` (for the SMTP envelope)."""
    return parseaddr(mail_from)[1] or mail_from


def message_id_for(invitation_id: str, mail_from: str) -> str:
    """The Message-ID of an invitation's mail: the same for every attempt and replay."""
    domain = sender_address(mail_from).rpartition("@")[2] or "hookstream.local"
    return f"<{invitation_id}.invitation@{domain}>"


def scrub(text: str) -> str:
    """Remove anything that looks like an e-mail address (SMTP replies often quote them)."""
    return _EMAIL_LIKE.sub("<address>", text)


def is_html(body: str) -> bool:
    return _HTML_TAG.search(body) is not None


def _text_of_html(rendered: str) -> str:
    text = _BLOCK_END.sub("\n", rendered)
    return html.unescape(_TAG.sub("", text)).strip() + "\n"


def invitation_mail(*, subject: str, body: str, values: Mapping[str, Any], link: str,
                    to: str, mail_from: str, message_id: str,
                    now: datetime | None = None) -> bytes:
    values = {**values, SURVEY_LINK: link}
    needs_link = SURVEY_LINK not in placeholders(body)
    if is_html(body):
        html_part = render(body, values, html=True)
        if needs_link:
            href = html.escape(link, quote=True)
            html_part += f'\n<p><a href="{href}">{href}</a></p>'
        text_part = _text_of_html(html_part)
    else:
        text_part = render(body, values)
        if needs_link:
            text_part = text_part.rstrip("\n") + f"\n\n{link}\n"
        html_part = _html_of_text(body, values, link, needs_link)
    return _mail(subject=header_safe(render(subject, values)), to=to, mail_from=mail_from,
                 message_id=message_id, text=text_part, html_body=html_part, now=now)


def _html_of_text(body: str, values: Mapping[str, Any], link: str, needs_link: bool) -> str:
    # The author wrote text: escape it all, values included, and make the link clickable.
    # A marker stands in for the link while escaping; a value holding the marker could only
    # ever turn into this same, escaped, link.
    marker = _LINK_MARKER
    escaped = render(html.escape(body, quote=False), {**values, SURVEY_LINK: marker}, html=True)
    href = html.escape(link, quote=True)
    anchor = f'<a href="{href}">{href}</a>'
    escaped = escaped.replace(marker, anchor)
    if needs_link:
        escaped = escaped.rstrip("\n") + f"\n\n{anchor}"
    paragraphs = [p.replace("\n", "<br>\n") for p in escaped.split("\n\n")]
    inner = "\n".join(f"<p>{p}</p>" for p in paragraphs if p.strip())
    return f'<!DOCTYPE html>\n<html><body>\n{inner}\n</body></html>\n'


def plain_mail(*, subject: str, text: str, to: list[str], mail_from: str,
               message_id: str | None = None) -> bytes:
    """An operational mail (error alert) with a text part only; marked auto-generated."""
    return _mail(subject=header_safe(subject), to=", ".join(to), mail_from=mail_from,
                 message_id=message_id, text=text, html_body=None,
                 extra=[("Auto-Submitted", "auto-generated")])


# The MIME text is written directly rather than by `email.generator`, which costs about
# 3 ms of CPU per multipart mail, more than the whole SMTP exchange (see bench/notifier.py).
# Bodies are always quoted-printable: QP output never contains "=_", so the boundary below
# can never occur inside a part.

def _mail(*, subject: str, to: str, mail_from: str, message_id: str | None, text: str,
          html_body: str | None, now: datetime | None = None,
          extra: list[tuple[str, str]] | None = None) -> bytes:
    headers = [("From", _header_from(mail_from)), ("To", _header_address(to)),
               ("Subject", _header_text(subject))]
    if message_id:
        headers.append(("Message-ID", _header_token(message_id)))
    headers += [("Date", format_datetime(now or datetime.now(UTC))), ("MIME-Version", "1.0")]
    headers += [(k, _header_text(v)) for k, v in extra or ()]
    # UTF-8 only in an address with a non-ASCII local part (RFC 6532; the pool sends such a
    # mail with SMTPUTF8); every other header is ASCII by construction.
    head = "".join(f"{k}: {v}\r\n" for k, v in headers).encode("utf-8")
    if html_body is None:
        return head + _part("plain", text)
    boundary = f"=_hookstream_{next(_BOUNDARIES)}"  # unique per mail; never inside QP text
    return (head + f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'
            f"--{boundary}\r\n".encode() + _part("plain", text)
            + f"\r\n--{boundary}\r\n".encode() + _part("html", html_body)
            + f"\r\n--{boundary}--\r\n".encode())


def _part(subtype: str, body: str) -> bytes:
    data = body.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8")
    qp = binascii.b2a_qp(data, quotetabs=False, istext=True).replace(b"\n", b"\r\n")
    return (f'Content-Type: text/{subtype}; charset="utf-8"\r\n'
            "Content-Transfer-Encoding: quoted-printable\r\n\r\n").encode() + qp


def _header_text(value: str) -> str:
    """Unstructured header text: CR/LF impossible, non-ASCII as RFC 2047 encoded words."""
    value = header_safe(value)
    if value.isascii() and len(value) <= 900 and _ENCODED_WORD.search(value) is None:
        return value
    return Header(value, "utf-8", maxlinelen=76).encode(linesep="\r\n")


def _header_token(value: str) -> str:
    if not value.isascii() or any(c in value for c in "\r\n\x00"):
        raise MessageError("the Message-ID contains characters a header cannot carry")
    return value


@lru_cache(maxsize=64)
def _header_from(mail_from: str) -> str:
    name, address = parseaddr(mail_from)
    if not address:
        raise MessageError("HOOKSTREAM_MAIL_FROM is not an e-mail address")
    return formataddr((header_safe(name), _ascii_address(address)), charset="utf-8")


def _header_address(to: str) -> str:
    if any(c in to for c in "\r\n\x00"):
        raise MessageError("the recipient address contains a line break")
    return ", ".join(_ascii_address(part.strip()) for part in to.split(","))


def _ascii_address(address: str) -> str:
    """The address for a header: the domain IDNA-encoded; a non-ASCII local part stays as it
    is (it can only travel with SMTPUTF8, which the pool checks for)."""
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain or any(c in address for c in ' <>(),;:"[]\\'):
        raise MessageError("the recipient is not an e-mail address")
    if any(c in address for c in "\r\n\x00"):
        raise MessageError("the recipient address contains a line break")
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise MessageError("the address's domain is not a valid domain name") from exc
    return f"{local}@{domain}"


def parse(raw: bytes) -> EmailMessage:
    """A mail's bytes back as a message (tests and debugging)."""
    msg = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(msg, EmailMessage)
    return msg
