"""The admin API's reads of what the pipeline did: respondents, invitations, outcomes, dead
letters. Included in `/v1` (same admin token); the console is built on the same functions.

Respondents and invitations are the notifier's tables, read through column lists
(`store/models.py`); outcomes combine the worker's counts (`automations.counts`, followed by
`activity.Activity`) with the mails the notifier recorded.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Query
from sqlalchemy.orm import Session

from control_plane import api_models as m
from control_plane import listing, service
from control_plane.activity import Activity
from control_plane.topic_reads import replay_dead_letters, waiting_invitations

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": m.ErrorOut,
                                                     "description": "Unknown id"}}
Limit = Query(default=listing.DEFAULT_LIMIT, ge=1, le=listing.MAX_LIMIT,
              description="Items per page")
Cursor = Query(default=None, max_length=500,
               description="`next_cursor` of the previous page")


def respondent_out(r: Any) -> m.RespondentOut:
    return m.RespondentOut(id=r.id, survey_id=r.survey_id, email=r.email,
                           variables=dict(r.variables or {}), values_at=r.values_at,
                           created_at=r.created_at, updated_at=r.updated_at)


def invitation_out(i: Any) -> m.InvitationOut:
    return m.InvitationOut(
        id=i.id, automation_id=i.automation_id, survey_id=i.survey_id, email=i.email,
        status=i.status, reason=i.reason, smtp_code=i.smtp_code, attempts=i.attempts or 0,
        event_id=i.event_id, record_index=i.record_index, received_at=i.received_at,
        due_at=i.due_at, created_at=i.created_at, finished_at=i.finished_at)


def outcomes(s: Session, activity: Activity, automation_id: str,
             now: datetime | None = None) -> m.AutomationOutcomes:
    """The automation's last 24 hours (raises NotFound for an unknown automation)."""
    service.get_automation(s, automation_id)
    now = now or datetime.now(UTC)
    since = listing.day_ago(now)
    counts = activity.counts.last_day(automation_id, int(now.timestamp() * 1000))
    mails = listing.mail_counts(s, automation_id, since)
    return m.AutomationOutcomes(
        automation_id=automation_id, since=since, accepted=counts.accepted,
        filtered=counts.filtered, failed=counts.failed, invited=counts.invited,
        mailed=mails.get("sent", 0), mail_failed=mails.get("failed", 0),
        suppressed=mails.get("suppressed", 0), throttled=mails.get("throttled", 0),
        held=listing.held_count(s, automation_id), expired=mails.get("expired", 0),
        filtered_by=[m.ReasonCount(reason=r, count=n)
                     for r, n in counts.filtered_by.most_common()],
        failed_by=[m.ReasonCount(reason=r, count=n) for r, n in counts.failed_by.most_common()],
        dead_letters=sum(activity.dead_letters.of(automation_id).values()),
        counts_complete=activity.caught_up.is_set())


def router(cp: Any, activity: Activity) -> APIRouter:
    """`cp` is the admin app's `AdminBackend` (read, settings, topics)."""
    r = APIRouter()

    @r.get("/respondents", response_model=m.RespondentList, tags=["respondents"])
    async def list_respondents(
            survey_id: str | None = Query(default=None, max_length=64),
            email: str | None = Query(default=None, max_length=320,
                                      description="Exact address (any case)"),
            limit: int = Limit, cursor: str | None = Cursor) -> m.RespondentList:
        def work(s: Session) -> m.RespondentList:
            page = listing.respondents(s, limit=limit, cursor=cursor, survey_id=survey_id,
                                       email=email)
            return m.RespondentList(items=[respondent_out(x) for x in page.items],
                                    next_cursor=page.next_cursor)
        return await cp.read(work)

    @r.get("/invitations", response_model=m.InvitationList, tags=["invitations"])
    async def list_invitations(
            automation_id: str | None = Query(default=None, max_length=64),
            survey_id: str | None = Query(default=None, max_length=64),
            email: str | None = Query(default=None, max_length=320,
                                      description="Exact address (any case)"),
            status: m.InvitationStatus | None = Query(default=None),
            limit: int = Limit, cursor: str | None = Cursor) -> m.InvitationList:
        """Invitations that were due (sending, sent, failed, suppressed, throttled, held,
        expired), newest
        first; those still waiting for their delay or send window are at
        `/automations/{id}/invitations/waiting`."""
        def work(s: Session) -> m.InvitationList:
            page = listing.invitations(s, limit=limit, cursor=cursor,
                                       automation_id=automation_id, survey_id=survey_id,
                                       email=email, status=status)
            return m.InvitationList(items=[invitation_out(x) for x in page.items],
                                    next_cursor=page.next_cursor)
        return await cp.read(work)

    @r.get("/automations/{automation_id}/invitations/waiting",
           response_model=m.WaitingInvitationList, tags=["invitations"], responses=NOT_FOUND)
    async def list_waiting(automation_id: str,
                           email: str = Query(min_length=3, max_length=320,
                                              description="The respondent's address")
                           ) -> m.WaitingInvitationList:
        """Invitations to this address that wait for the automation's delay or send window."""
        await cp.read(lambda s: service.get_automation(s, automation_id))
        found = await waiting_invitations(cp.kafka, cp.topics,
                                          automation_id, email)
        return m.WaitingInvitationList(
            items=[m.WaitingInvitationOut(invitation_id=w.invitation_id, email=w.email,
                                          due_at=w.due_at, received_at=w.received_at)
                   for w in found.items], complete=found.complete)

    @r.get("/automations/{automation_id}/outcomes", response_model=m.AutomationOutcomes,
           tags=["automations"], responses=NOT_FOUND)
    async def get_outcomes(automation_id: str) -> m.AutomationOutcomes:
        return await cp.read(lambda s: outcomes(s, activity, automation_id))

    @r.post("/automations/{automation_id}/dead-letters/replay", response_model=m.ReplayOut,
            tags=["automations"], responses=NOT_FOUND)
    async def replay(automation_id: str) -> m.ReplayOut:
        """Put the automation's dead-letter records back on `webhooks.raw` (after fixing the
        cause); invitations already made are not made twice."""
        await cp.read(lambda s: service.get_automation(s, automation_id))
        n = await replay_dead_letters(cp.kafka, cp.topics, automation_id)
        return m.ReplayOut(replayed=n)

    return r
