"""Issue 15, item 9: the one documented window in which an invitation is mailed twice (a
notifier killed after the SMTP server accepted the mail and before it recorded that) sends
the repeat with the same Message-ID. Real broker, aiosmtpd and SQLite."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from core.settings import Settings
from hookstream.local.smtp_sink import SmtpSink
from notifier.app import Notifier
from notifier.models import SENDING, Invitation
from notifier.render import message_id_for
from notifier.store import EPOCH, Db

from .conftest import Bus, invitation, make_snapshot, wait_for

pytestmark = pytest.mark.kafka


async def test_a_mail_sent_again_after_a_crash_carries_the_same_message_id(
        bus: Bus, notifier: Notifier, settings: Settings, smtp: SmtpSink) -> None:
    snap = make_snapshot()
    await bus.snapshot(snap)
    req = invitation(snap)
    await bus.due(req)
    [first] = await bus.outcomes(1)
    assert first["status"] == "sent"

    # What a notifier killed between the SMTP server's 250 and its own record leaves behind:
    # the row still `sending` under a dead owner, the record not committed (redelivered).
    db = Db(settings.database_url)
    try:
        with db.sessions() as s:
            s.execute(update(Invitation).where(Invitation.id == req["invitation_id"])
                      .values(status=SENDING, claimed_by="notifier-killed", claimed_at=EPOCH,
                              finished_at=None, outcome_published=False))
            s.commit()
    finally:
        db.engine.dispose()
    await bus.due(req)
    second = (await bus.outcomes(2))[1]
    assert second["status"] == "sent"  # taken over after the dead owner's lease, sent again

    mails = await wait_for(lambda: len(smtp.messages()) == 2 and smtp.messages(),
                           what="both mails")
    expected = message_id_for(req["invitation_id"], settings.mail_from)
    assert [m["Message-ID"] for m in mails] == [expected, expected]
    assert first["message_id"] == second["message_id"] == expected
    assert mails[0]["Date"] is not None and mails[0]["Subject"] == mails[1]["Subject"]
