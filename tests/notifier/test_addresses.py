"""Issue 15, item 8: every address accepted is deliverable. Real aiosmtpd servers, with and
without SMTPUTF8, and the notifier end to end on a real broker."""

from __future__ import annotations

from collections.abc import Iterator
from email import policy
from email.parser import BytesParser
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from hookstream.local.kafka import free_port
from hookstream.local.smtp_sink import SmtpSink
from notifier.alerts import counts_toward_disable
from notifier.app import Notifier
from notifier.mailer import SMTPUTF8_UNSUPPORTED, SendError, SmtpPool
from notifier.render import invitation_mail
from notifier.smtp_config import SmtpConfig

from .conftest import Bus, invitation, make_snapshot, wait_for

FROM = "Hookstream <no-reply@hookstream.local>"


class Recorder:
    """Keeps each accepted envelope: sender, recipients, MAIL options and the bytes."""

    def __init__(self) -> None:
        self.envelopes: list[dict[str, Any]] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.envelopes.append({"from": envelope.mail_from, "to": list(envelope.rcpt_tos),
                               "options": list(envelope.mail_options),
                               "data": envelope.original_content or envelope.content})
        return "250 OK"


@pytest.fixture(params=[True, False], ids=["smtputf8", "ascii-only"])
def server(request: pytest.FixtureRequest) -> Iterator[tuple[Recorder, int, bool]]:
    rec, port = Recorder(), free_port()
    controller = Controller(rec, hostname="127.0.0.1", port=port, ready_timeout=10.0,
                            enable_SMTPUTF8=request.param, decode_data=False)
    controller.start()
    try:
        yield rec, port, request.param
    finally:
        controller.stop()


def _mail(to: str) -> bytes:
    return invitation_mail(subject="Hi", body="b {{ survey_link }}", values={}, link="l",
                           to=to, mail_from=FROM, message_id="<m@hookstream.local>")


async def test_idna_domains_always_and_utf8_local_parts_with_smtputf8(
        server: tuple[Recorder, int, bool]) -> None:
    rec, port, utf8 = server
    pool = SmtpPool(SmtpConfig.from_url(f"smtp://127.0.0.1:{port}?timeout=5"), 1)
    try:
        await pool.send(_mail("ann@bücher.example"), "no-reply@hookstream.local",
                        ["ann@bücher.example"])
        [idna] = rec.envelopes
        assert idna["to"] == ["ann@xn--bcher-kva.example"]
        assert "SMTPUTF8" not in idna["options"]  # only where it is needed
        if utf8:
            await pool.send(_mail("jürgen@bücher.example"), "no-reply@hookstream.local",
                            ["jürgen@bücher.example"])
            sent = rec.envelopes[1]
            assert sent["to"] == ["jürgen@xn--bcher-kva.example"]
            assert "SMTPUTF8" in sent["options"]
            mail = BytesParser(policy=policy.default).parsebytes(sent["data"])
            assert mail["To"] == "jürgen@xn--bcher-kva.example"
        else:
            with pytest.raises(SendError) as exc:
                await pool.send(_mail("jürgen@example.com"), "no-reply@hookstream.local",
                                ["jürgen@example.com"])
            assert exc.value.kind == SMTPUTF8_UNSUPPORTED and not exc.value.transient
            assert "SMTPUTF8" in exc.value.reason and "jürgen" not in exc.value.reason
            assert len(rec.envelopes) == 1
            # Not the automation's fault: it does not count toward auto-disable.
            assert not counts_toward_disable({"kind": exc.value.kind, "source": "notifier"})
            assert not counts_toward_disable({"kind": "unsupported_email", "source": "streams"})
            # The connection is usable afterwards.
            await pool.send(_mail("bob@example.com"), "no-reply@hookstream.local",
                            ["bob@example.com"])
            assert rec.envelopes[-1]["to"] == ["bob@example.com"]
    finally:
        await pool.close()


@pytest.mark.kafka
async def test_the_notifier_delivers_an_idna_domain_and_a_utf8_local_part(
        bus: Bus, notifier: Notifier, smtp: SmtpSink) -> None:
    # The sink (aiosmtpd's Controller) offers SMTPUTF8; the pool test above covers a server
    # that does not.
    snap = make_snapshot()
    await bus.snapshot(snap)
    idna = invitation(snap, email="ann@bücher.example")
    utf8 = invitation(snap, email="jürgen@example.com")
    await bus.due(idna)
    await bus.due(utf8)
    outs = await bus.outcomes(2)
    assert [o["status"] for o in outs] == ["sent", "sent"]
    mails = await wait_for(lambda: len(smtp.messages()) == 2 and smtp.messages(),
                           what="both mails")
    assert sorted(str(m["To"]) for m in mails) == ["ann@xn--bcher-kva.example",
                                                  "jürgen@example.com"]
