"""The console's pages. Reads and writes go through `control_plane.service`, `listing` and
`api_reads` (the admin API's own functions), inside the AdminBackend's read/write (so every
change is committed, then published on the config topic, exactly as through the API)."""

from __future__ import annotations

import json
import logging
import shlex
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError
from sqlalchemy.orm import Session as DbSession

from automations.paths import flatten
from automations.snapshot import Variable
from automations.templates import SURVEY_LINK, placeholders, render
from automations.validation import validate_email_field, validate_fields, validate_filters
from automations.validation import validate_message as _validate_message
from control_plane import api_models as m
from control_plane import api_reads, listing, service, views
from control_plane.activity import Activity
from control_plane.console import filter_form as ff
from control_plane.console.auth import ConsoleAuth, Session, new_sid
from control_plane.console.discovery import discover, records_of
from control_plane.console.wizard import (
    DRAFT_REASON,
    STEP_NAMES,
    STEPS,
    Wizards,
    WizardState,
    from_automation,
)
from control_plane.errors import DomainError
from control_plane.service import Changes
from control_plane.topic_reads import replay_dead_letters, waiting_invitations

log = logging.getLogger(__name__)
T = TypeVar("T")
TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
TEMPLATES.env.filters["ms_time"] = lambda ms: datetime.fromtimestamp(
    ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
TEMPLATES.env.filters["when"] = lambda dt: (
    dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if isinstance(dt, datetime) else dt or "")
VARIABLE_TYPES = ("text", "number", "date", "boolean", "email", "choice")
SAMPLE_VALUES: dict[str, Any] = {"text": "Ada", "number": 42, "date": "2024-03-05",
                                 "boolean": True, "email": "ada@example.com"}


class Form:
    """An application/x-www-form-urlencoded body (no multipart: the console posts no files)."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self.pairs = pairs
        self.first: dict[str, str] = {}
        for k, v in pairs:
            self.first.setdefault(k, v)

    def get(self, key: str, default: str = "") -> str:
        return self.first.get(key, default)

    def getlist(self, key: str) -> list[str]:
        return [v for k, v in self.pairs if k == key]


async def read_form(request: Request) -> Form:
    body = (await request.body()).decode("utf-8", "replace")
    return Form(parse_qsl(body, keep_blank_values=True, max_num_fields=5000))


def router(cp: Any, activity: Activity) -> APIRouter:
    auth = ConsoleAuth(cp.settings.admin_token.get_secret_value())
    wizards = Wizards()
    r = APIRouter(prefix="/console", include_in_schema=False)
    host = cp.settings.ingress_host
    ingress_base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:" \
                   f"{cp.settings.ingress_port}"

    # --- plumbing -------------------------------------------------------------------------
    def page(request: Request, template: str, session: Session | None, status: int = 200,
             **ctx: Any) -> HTMLResponse:
        return TEMPLATES.TemplateResponse(request, template, {
            "csrf": session.csrf if session else "", "signed_in": session is not None,
            "steps": STEPS, **ctx}, status_code=status)

    def to_signin() -> RedirectResponse:
        return RedirectResponse("/console/signin", status_code=303)

    def refused(request: Request) -> HTMLResponse:
        return page(request, "error.html", None, 403, title="Form refused",
                    message="This form was not sent from a console page of your session "
                    "(its CSRF token is missing or wrong). Reload the page and try again.")

    async def posted(request: Request) -> tuple[Session | None, Form, Response | None]:
        """The session and form of a POST; a response instead when either is not right."""
        session = auth.session(request)
        form = await read_form(request)
        if session is None:
            return None, form, to_signin()
        if not auth.csrf_ok(session, form.first.get("csrf")):
            return session, form, refused(request)
        return session, form, None

    async def attempt(work: Callable[[], Awaitable[T]]) -> tuple[T | None, list[str]]:
        """Run a service call; its domain errors become sentences for the page."""
        try:
            return await work(), []
        except DomainError as exc:
            if exc.problems:
                return None, [f"{p.field}: {p.reason}" for p in exc.problems]
            return None, [exc.detail]
        except ValidationError as exc:
            return None, [f"{'.'.join(str(x) for x in e['loc'])}: "
                          f"{str(e['msg']).removeprefix('Value error, ')}"
                          for e in exc.errors()]

    def now() -> datetime:
        return datetime.now(UTC)

    # --- sign-in --------------------------------------------------------------------------
    @r.get("/signin")
    async def signin_form(request: Request) -> Response:
        if auth.session(request) is not None:
            return RedirectResponse("/console/automations", status_code=303)
        sid = new_sid()
        response = page(request, "signin.html", None, csrf_pre=auth.csrf_for(sid))
        auth.start_presession(request, response, sid)
        return response

    @r.post("/signin")
    async def signin(request: Request) -> Response:
        form = await read_form(request)
        pre = auth.presession(request)
        if not auth.csrf_ok(pre, form.first.get("csrf")):
            return refused(request)
        if not auth.token_ok(form.get("token")):
            response = page(request, "signin.html", None, 401, csrf_pre=pre.csrf if pre else "",
                            error="That is not the admin token.")
            return response
        response = RedirectResponse("/console/automations", status_code=303)
        auth.start_session(request, response)
        return response

    @r.post("/signout")
    async def signout(request: Request) -> Response:
        session, _form, bad = await posted(request)
        if bad is not None and session is not None:
            return bad
        response = to_signin()
        auth.end_session(response)
        return response

    @r.get("")
    @r.get("/")
    async def home(request: Request) -> Response:
        return RedirectResponse("/console/automations", status_code=303)

    # --- automations ----------------------------------------------------------------------
    @r.get("/automations")
    async def automations(request: Request, name: str = "", status: str = "",
                          survey_id: str = "", cursor: str = "") -> Response:
        session = auth.session(request)
        if session is None:
            return to_signin()
        enabled = {"enabled": True, "disabled": False}.get(status)

        def work(s: DbSession) -> dict[str, Any]:
            pg = listing.automations(s, limit=25, cursor=cursor or None,
                                     survey_id=survey_id or None, enabled=enabled,
                                     name=name or None)
            surveys = {x.id: x.name for x in service.list_surveys(s)}
            rows = [{"a": views.automation_out(a), "survey": surveys.get(a.survey_id, "?"),
                     "counts": api_reads.outcomes(s, activity, a.id)} for a in pg.items]
            return {"rows": rows, "next_cursor": pg.next_cursor, "surveys": surveys}
        data, errors = await attempt(lambda: cp.read(work))
        query = {"name": name, "status": status, "survey_id": survey_id}
        return page(request, "automations.html", session, errors=errors, q=query,
                    next_url=_next("/console/automations", query,
                                   data["next_cursor"] if data else None), **(data or {}))

    def _detail(s: DbSession, automation_id: str) -> dict[str, Any]:
        a = service.get_automation(s, automation_id)
        out = views.automation_out(a)
        since = now() - timedelta(days=7)
        kinds = listing.error_kinds(s, automation_id, since)
        return {"a": out, "survey": views.survey_out(a.survey),
                "message": views.message_out(a.message),
                "outcomes": api_reads.outcomes(s, activity, automation_id),
                "error_kinds": kinds}

    async def detail_page(request: Request, session: Session, automation_id: str,
                          status: int = 200, **extra: Any) -> Response:
        data, errors = await attempt(lambda: cp.read(lambda s: _detail(s, automation_id)))
        if data is None:
            return page(request, "error.html", session, 404, title="Not found",
                        message="; ".join(errors))
        dlq = activity.dead_letters.of(automation_id)
        return page(request, "automation.html", session, status,
                    webhook_url=f"{ingress_base}/v1/hooks/{automation_id}",
                    dead_letters=dlq, dead_total=sum(dlq.values()),
                    errors=extra.pop("errors", []), **data, **extra)

    @r.get("/automations/{automation_id}")
    async def automation(request: Request, automation_id: str, email: str = "") -> Response:
        session = auth.session(request)
        if session is None:
            return to_signin()
        lookup = None
        if email.strip():
            page_ = await cp.read(lambda s: listing.invitations(
                s, limit=50, automation_id=automation_id, email=email))
            waiting = await waiting_invitations(cp.kafka, cp.topics,
                                                automation_id, email)
            lookup = {"email": email, "done": [api_reads.invitation_out(x)
                                                for x in page_.items],
                      "waiting": waiting.items, "complete": waiting.complete}
        return await detail_page(request, session, automation_id, lookup=lookup,
                                 email=email)

    @r.post("/automations/{automation_id}/enable")
    async def enable(request: Request, automation_id: str) -> Response:
        session, _form, bad = await posted(request)
        if bad is not None:
            return bad
        assert session is not None
        _, errors = await attempt(lambda: cp.write(lambda s: _changes(
            service.set_enabled(s, automation_id, True, None, now()))))
        return await detail_page(request, session, automation_id, errors=errors,
                                 notice=None if errors else "Enabled.")

    @r.post("/automations/{automation_id}/disable")
    async def disable(request: Request, automation_id: str) -> Response:
        session, form, bad = await posted(request)
        if bad is not None:
            return bad
        assert session is not None
        reason = form.get("reason").strip()[:1000] or None
        _, errors = await attempt(lambda: cp.write(lambda s: _changes(
            service.set_enabled(s, automation_id, False, reason, now()))))
        return await detail_page(request, session, automation_id, errors=errors,
                                 notice=None if errors else "Disabled.")

    @r.post("/automations/{automation_id}/rotate")
    async def rotate(request: Request, automation_id: str) -> Response:
        session, _form, bad = await posted(request)
        if bad is not None:
            return bad
        assert session is not None
        grace = cp.settings.key_grace_seconds

        def work(s: DbSession) -> tuple[tuple[str, datetime | None], Changes]:
            _a, key, expiry, changes = service.rotate_key(s, automation_id, grace, now())
            return (key, expiry), changes
        result, errors = await attempt(lambda: cp.write(work))
        if result is None:
            return await detail_page(request, session, automation_id, errors=errors)
        return await detail_page(request, session, automation_id, new_key=result[0],
                                 old_expiry=result[1])

    @r.post("/automations/{automation_id}/delete")
    async def delete(request: Request, automation_id: str) -> Response:
        session, form, bad = await posted(request)
        if bad is not None:
            return bad
        assert session is not None
        if form.get("confirm") != "yes":
            return await detail_page(request, session, automation_id, status=422,
                                     errors=["Tick the box to confirm the deletion."])
        _, errors = await attempt(lambda: cp.write(
            lambda s: (None, service.delete_automation(s, automation_id))))
        if errors:
            return await detail_page(request, session, automation_id, errors=errors)
        activity.samples.forget(automation_id)
        return RedirectResponse("/console/automations", status_code=303)

    @r.post("/automations/{automation_id}/replay")
    async def replay(request: Request, automation_id: str) -> Response:
        session, _form, bad = await posted(request)
        if bad is not None:
            return bad
        assert session is not None
        await cp.read(lambda s: service.get_automation(s, automation_id))
        n = await replay_dead_letters(cp.kafka, cp.topics, automation_id)
        return await detail_page(request, session, automation_id,
                                 notice=f"{n} dead-letter record(s) put back on the webhook "
                                 "topic; records that fail again return to the dead letters.")

    @r.get("/automations/{automation_id}/samples")
    async def samples_fragment(request: Request, automation_id: str) -> Response:
        session = auth.session(request)
        if session is None:
            return Response(status_code=401)
        return page(request, "_samples.html", session,
                    samples=list(reversed(activity.samples.of(automation_id))))

    # --- surveys --------------------------------------------------------------------------
    async def surveys_page(request: Request, session: Session, cursor: str = "",
                           status: int = 200, **extra: Any) -> Response:
        def work(s: DbSession) -> dict[str, Any]:
            pg = listing.surveys(s, limit=25, cursor=cursor or None)
            return {"surveys": [views.survey_out(x) for x in pg.items],
                    "next_cursor": pg.next_cursor}
        data, problems = await attempt(lambda: cp.read(work))
        extra["errors"] = [*extra.get("errors", []), *problems]
        return page(request, "surveys.html", session, status, types=VARIABLE_TYPES,
                    **(data or {"surveys": [], "next_cursor": None}), **extra)

    @r.get("/surveys")
    async def surveys(request: Request, cursor: str = "") -> Response:
        session = auth.session(request)
        if session is None:
            return to_signin()
        return await surveys_page(request, session, cursor)

    @r.post("/surveys")
    async def create_survey(request: Request) -> Response:
        session, form, bad = await posted(request)
        if bad is not None:
            return bad
        assert session is not None

        async def go() -> Any:
            data = m.SurveyIn(name=form.get("name"))
            return await cp.write(lambda s: (service.create_survey(s, data, now()).id,
                                             Changes()))
        _, errors = await attempt(go)
        return await surveys_page(request, session, status=422 if errors else 200,
                                  errors=errors, notice=None if errors else "Survey created.")

    @r.post("/surveys/{survey_id}/variables")
    async def add_variable(request: Request, survey_id: str) -> Response:
        session, form, bad = await posted(request)
        if bad is not None:
            return bad
        assert session is not None
        errors = await _add_variable(survey_id, form)
        return await surveys_page(request, session, status=422 if errors else 200,
                                  errors=errors,
                                  notice=None if errors else "Background variable added.")

    async def _add_variable(survey_id: str, form: Form) -> list[str]:
        async def go() -> Any:
            options = [o.strip() for o in form.get("var_options").split(",") if o.strip()]
            data = m.VariableIn(name=form.get("var_name").strip(), type=form.get("var_type"),
                                options=options)

            def work(s: DbSession) -> tuple[str, Changes]:
                var, changes = service.add_variable(s, survey_id, data, now())
                return var.name, changes
            return await cp.write(work)
        _, errors = await attempt(go)
        return errors

    # --- messages -------------------------------------------------------------------------
    async def messages_page(request: Request, session: Session, cursor: str = "",
                            status: int = 200, **extra: Any) -> Response:
        def work(s: DbSession) -> dict[str, Any]:
            pg = listing.messages(s, limit=25, cursor=cursor or None)
            return {"messages": [views.message_out(x) for x in pg.items],
                    "next_cursor": pg.next_cursor}
        data, problems = await attempt(lambda: cp.read(work))
        extra["errors"] = [*extra.get("errors", []), *problems]
        return page(request, "messages.html", session, status,
                    **(data or {"messages": [], "next_cursor": None}), **extra)

    @r.get("/messages")
    async def messages(request: Request, cursor: str = "") -> Response:
        session = auth.session(request)
        if session is None:
            return to_signin()
        return await messages_page(request, session, cursor)

    @r.post("/messages")
    async def create_message(request: Request) -> Response:
        session, form, bad = await posted(request)
        if bad is not None:
            return bad
        assert session is not None

        async def go() -> Any:
            data = m.MessageIn(name=form.get("name"), subject=form.get("subject"),
                               body=form.get("body"))
            return await cp.write(lambda s: (service.create_message(s, data, now()).id,
                                             Changes()))
        _, errors = await attempt(go)
        return await messages_page(request, session, status=422 if errors else 200,
                                   errors=errors, notice=None if errors else "Message created.")

    @r.get("/messages/{message_id}")
    async def message(request: Request, message_id: str, survey_id: str = "") -> Response:
        session = auth.session(request)
        if session is None:
            return to_signin()

        def work(s: DbSession) -> dict[str, Any]:
            msg = views.message_out(service.get_message(s, message_id))
            surveys = [views.survey_out(x) for x in service.list_surveys(s)]
            return {"message": msg, "surveys": surveys}
        data, errors = await attempt(lambda: cp.read(work))
        if data is None:
            return page(request, "error.html", session, 404, title="Not found",
                        message="; ".join(errors))
        msg = data["message"]
        survey = next((x for x in data["surveys"] if x.id == survey_id), None)
        types = {v.name: v for v in survey.variables} if survey else {}
        names = sorted(placeholders(msg.subject) | placeholders(msg.body))
        values: dict[str, Any] = {}
        for name in names:
            given = request.query_params.get(f"v.{name}")
            if given is not None:
                values[name] = given
            elif name == SURVEY_LINK:
                values[name] = f"{cp.settings.survey_base_url}/EXAMPLE-TOKEN"
            elif name in types:
                v = types[name]
                values[name] = v.options[0] if v.type == "choice" and v.options \
                    else SAMPLE_VALUES.get(v.type, name)
            else:
                values[name] = f"[{name}]"
        problems = [p.reason for p in _validate_message(
            msg.subject, msg.body, types)] if survey else []
        return page(request, "message.html", session,
                    survey=survey, values=values, problems=problems,
                    preview_subject=render(msg.subject, values),
                    preview_body=render(msg.body, values), **data)

    # --- respondents and invitations --------------------------------------------------------
    @r.get("/invitations")
    async def invitations(request: Request, automation_id: str = "", email: str = "",
                          status: str = "", cursor: str = "") -> Response:
        session = auth.session(request)
        if session is None:
            return to_signin()
        st = status if status in listing.INVITATION_STATUSES else None
        data, errors = await attempt(lambda: cp.read(lambda s: listing.invitations(
            s, limit=50, cursor=cursor or None, automation_id=automation_id or None,
            email=email or None, status=st)))
        query = {"automation_id": automation_id, "email": email, "status": status}
        return page(request, "invitations.html", session, errors=errors, q=query,
                    statuses=listing.INVITATION_STATUSES,
                    items=[api_reads.invitation_out(x) for x in data.items] if data else [],
                    next_url=_next("/console/invitations", query,
                                   data.next_cursor if data else None))

    @r.get("/respondents")
    async def respondents(request: Request, survey_id: str = "", email: str = "",
                          cursor: str = "") -> Response:
        session = auth.session(request)
        if session is None:
            return to_signin()
        data, errors = await attempt(lambda: cp.read(lambda s: listing.respondents(
            s, limit=50, cursor=cursor or None, survey_id=survey_id or None,
            email=email or None)))
        query = {"survey_id": survey_id, "email": email}
        return page(request, "respondents.html", session, errors=errors, q=query,
                    items=[api_reads.respondent_out(x) for x in data.items] if data else [],
                    next_url=_next("/console/respondents", query,
                                   data.next_cursor if data else None))

    # --- the wizard -----------------------------------------------------------------------
    @r.post("/wizard")
    async def wizard_start(request: Request) -> Response:
        session, form, bad = await posted(request)
        if bad is not None:
            return bad
        assert session is not None
        edit = form.get("automation_id")
        if edit:
            a, errors = await attempt(lambda: cp.read(
                lambda s: views.automation_out(service.get_automation(s, edit))))
            if a is None:
                return page(request, "error.html", session, 404, title="Not found",
                            message="; ".join(errors))
            state = from_automation("", session.sid, a)
            fresh = wizards.new(session.sid)
            state.id = fresh.id
            wizards.put(state)
        else:
            state = wizards.new(session.sid)
        return RedirectResponse(f"/console/wizard/{state.id}/survey", status_code=303)

    async def wizard_context(state: WizardState, step: str) -> dict[str, Any]:
        def work(s: DbSession) -> dict[str, Any]:
            surveys = [views.survey_out(x) for x in service.list_surveys(s)]
            msgs = [views.message_out(x) for x in service.list_messages(s)]
            return {"surveys": surveys, "messages": msgs}
        data = await cp.read(work)
        survey = next((x for x in data["surveys"] if x.id == state.survey_id), None)
        ctx: dict[str, Any] = {"w": state, "step": step, "step_index": STEP_NAMES.index(step),
                               "survey": survey, **data}
        if step == "filters":
            ctx["nodes"] = ff.flatten_nodes(state.filter_root)
            ctx["ff"] = ff
            ctx["suggest"] = sorted(_known_paths(state))
        if step == "connection" and state.automation_id:
            ctx["webhook_url"] = f"{ingress_base}/v1/hooks/{state.automation_id}"
            ctx["test_url"] = f"{ingress_base}/v1/hooks/{state.automation_id}/test"
            key = state.key_once or "YOUR_API_KEY"
            example = json.dumps(_example_body(state), ensure_ascii=False)
            ctx["curl"] = (f"curl -sS -X POST {shlex.quote(ctx['test_url'])} "
                           f"-H {shlex.quote('X-API-Key: ' + key)} "
                           "-H 'Content-Type: application/json' "
                           f"-d {shlex.quote(example)}")
            ctx["key_once"] = state.key_once
            state.key_once = None  # shown once
            ctx["samples"] = list(reversed(activity.samples.of(state.automation_id)))
        if step == "mapping":
            samples = activity.samples.of(state.automation_id) if state.automation_id else []
            found = discover(samples, state.fields_mode, state.fields_paths,
                             known=list(state.mapping))
            variables = [Variable(v.name, v.type, tuple(v.options))
                         for v in (survey.variables if survey else [])]
            rows = []
            for f in found:
                decided = f.path in state.mapping or f.path == state.email_field
                fitting = [v for v in variables if f.fits(v)]
                chosen = state.mapping.get(f.path)
                rows.append({"f": f, "fitting": fitting, "decided": decided,
                             "chosen": chosen or "",
                             "skipped": f.path in state.mapping and chosen is None})
            ctx["rows"] = rows
            ctx["sample_count"] = len(samples)
            ctx["types"] = VARIABLE_TYPES
        return ctx

    def _known_paths(state: WizardState) -> set[str]:
        paths = set(state.fields_paths) | {state.email_field} | set(state.mapping)
        if state.automation_id:
            for sample in activity.samples.of(state.automation_id):
                for rec in records_of(sample):
                    paths |= set(flatten(rec))
        return {p for p in paths if p}

    async def wizard_page(request: Request, session: Session, state: WizardState, step: str,
                          status: int = 200, errors: list[str] | None = None,
                          notice: str | None = None) -> Response:
        ctx = await wizard_context(state, step)
        return page(request, "wizard.html", session, status, errors=errors or [],
                    notice=notice, **ctx)

    @r.get("/wizard/{wid}/{step}")
    async def wizard_get(request: Request, wid: str, step: str) -> Response:
        session = auth.session(request)
        if session is None:
            return to_signin()
        state = wizards.get(wid, session.sid)
        if state is None or step not in STEP_NAMES:
            return page(request, "error.html", session, 404, title="Wizard not found",
                        message="This wizard has expired or belongs to another session; "
                        "start again from the automations list.")
        index = STEP_NAMES.index(step)
        if index > state.reached:
            return RedirectResponse(f"/console/wizard/{wid}/{STEP_NAMES[state.reached]}",
                                    status_code=303)
        return await wizard_page(request, session, state, step)

    @r.post("/wizard/{wid}/{step}")
    async def wizard_post(request: Request, wid: str, step: str) -> Response:
        session, form, bad = await posted(request)
        if bad is not None:
            return bad
        assert session is not None
        state = wizards.get(wid, session.sid)
        if state is None or step not in STEP_NAMES:
            return page(request, "error.html", session, 404, title="Wizard not found",
                        message="This wizard has expired; start again from the list.")
        action = form.get("action", "next")
        index = STEP_NAMES.index(step)
        errors = _take(state, step, form)
        if action == "back":
            return RedirectResponse(f"/console/wizard/{wid}/{STEP_NAMES[max(index - 1, 0)]}",
                                    status_code=303)
        if action != "next" and action != "finish":
            # In-page actions: the filter builder, recipients, a new variable, a new key.
            notice = None
            if step == "filters" and action.startswith(("add-", "remove:")):
                ff.apply_action(state.filter_root, action)
            elif step == "notifications" and action == "add-recipient":
                state.recipients.append("")
            elif step == "mapping" and action == "add-variable" and state.survey_id:
                errors = await _add_variable(state.survey_id, form)
                notice = None if errors else "Background variable created."
            elif step == "connection" and action == "rotate" and state.automation_id:
                key, errors = await attempt(lambda: _rotate(state.automation_id or ""))
                state.key_once = key
            return await wizard_page(request, session, state, step,
                                     status=422 if errors else 200, errors=errors,
                                     notice=notice)
        if not errors:
            errors = await _check(state, step)
        if errors:
            return await wizard_page(request, session, state, step, status=422, errors=errors)
        if step == STEP_NAMES[-1]:  # Finish: only from the last step, after its checks
            errors = await _finish(state)
            if errors:
                return await wizard_page(request, session, state, step, status=422,
                                         errors=errors)
            return RedirectResponse(f"/console/automations/{state.automation_id}",
                                    status_code=303)
        nxt = STEP_NAMES[index + 1]
        state.reached = max(state.reached, index + 1)
        return RedirectResponse(f"/console/wizard/{wid}/{nxt}", status_code=303)

    def _take(state: WizardState, step: str, form: Form) -> list[str]:
        """Keep what the step's form says (also on Back: nothing typed is lost)."""
        errors: list[str] = []
        if step == "survey":
            chosen = form.get("survey_id")
            if chosen:
                if state.automation_id and not state.editing and chosen != state.survey_id:
                    state.mapping.clear()  # another survey: other variables
                state.survey_id = chosen
        elif step == "incoming":
            state.fields_mode = "include" if form.get("fields_mode") == "include" else "exclude"
            state.fields_paths = [p.strip() for p in form.get("fields_paths").splitlines()
                                  if p.strip()]
            state.email_field = form.get("email_field").strip()
        elif step == "filters":
            state.filter_root = ff.from_form(form.first)
        elif step == "mapping":
            for key, value in form.pairs:
                if key.startswith("map."):
                    path = key[4:]
                    if value == "":
                        state.mapping.pop(path, None)
                    elif value == "__skip__":
                        state.mapping[path] = None
                    else:
                        state.mapping[path] = value
        elif step == "settings":
            state.name = form.get("name").strip()
            state.message_id = form.get("message_id") or None
            state.delay_on = form.get("delay_on") == "on"
            try:
                state.delay_days = int(form.get("delay_days") or "1")
            except ValueError:
                errors.append("Delay: give a whole number of days.")
        elif step == "status":
            state.enabled = form.get("status", "enabled") != "disabled"
        elif step == "notifications":
            state.notify_on = form.get("notify_on") == "on"
            state.recipients = [x.strip() for x in form.getlist("recipient")]
        return errors

    async def _check(state: WizardState, step: str) -> list[str]:
        """The step's own checks before Next; the connection step saves the draft."""
        if step == "survey" and not state.survey_id:
            return ["Choose the survey this automation sends."]
        if step == "incoming":
            problems = [*validate_fields(state.fields_mode, state.fields_paths),
                        *validate_email_field(state.email_field, state.fields_mode,
                                              state.fields_paths)]
            return [f"{p.path}: {p.reason}" for p in problems]
        if step == "filters":
            try:
                tree = ff.to_json(state.filter_root)
            except ff.BuildError as exc:
                return exc.problems
            problems = validate_filters(tree, state.fields_mode, state.fields_paths)
            if problems:
                return [f"{p.path}: {p.reason}" for p in problems]
            return await _sync_draft(state)
        if step == "mapping":
            samples = activity.samples.of(state.automation_id) if state.automation_id else []
            found = discover(samples, state.fields_mode, state.fields_paths)
            undecided = [f.path for f in found if f.taken_in and f.path not in state.mapping
                         and f.path != state.email_field]
            if undecided:
                return ["Decide for each field taken in: map it onto a variable or skip it. "
                        f"Not decided: {', '.join(undecided)}."]
        if step == "settings":
            problems = []
            if not state.name:
                problems.append("Name: give the automation a name.")
            if not state.message_id:
                problems.append("Message: choose the message to send.")
            if state.delay_on and not 1 <= state.delay_days <= 3650:
                problems.append("Delay: between 1 and 3650 days.")
            return problems
        if step == "notifications":
            if state.notify_on and not [x for x in state.recipients if x]:
                return ["Add at least one recipient, or switch error e-mails off."]
        return []

    async def _sync_draft(state: WizardState) -> list[str]:
        """Create the disabled draft, or bring it in step (not when editing: Finish saves)."""
        if state.editing:
            return []
        tree = ff.to_json(state.filter_root)
        fields = m.FieldsIn(mode=state.fields_mode, paths=state.fields_paths)  # type: ignore[arg-type]
        if state.automation_id is None:
            def create(s: DbSession) -> tuple[tuple[str, str], Changes]:
                survey = service.get_survey(s, state.survey_id or "")
                names = [v.name for v in survey.variables]
                message = next((x for x in service.list_messages(s) if not _validate_message(
                    x.subject, x.body, names)), None)
                if message is None:
                    raise DomainError("the survey has no message that fits it yet: create one "
                                      "under Messages first (its placeholders must be the "
                                      "survey's variables or survey_link)")
                data = m.AutomationIn(
                    name=f"Draft: {survey.name}"[:200], survey_id=survey.id,
                    message_id=message.id, email_field=state.email_field, fields=fields,
                    filters=tree, enabled=False)
                a, key, _ = service.create_automation(s, data, now())
                a, changes = service.set_enabled(s, a.id, False, DRAFT_REASON, now())
                return (a.id, key), changes
            result, errors = await attempt(lambda: cp.write(create))
            if result is not None:
                state.automation_id, state.key_once = result
            return errors
        mapping = [m.MappingIn(field=f, variable=v) for f, v in state.mapping.items()]
        patch = m.AutomationPatch(email_field=state.email_field, fields=fields, filters=tree,
                                  mapping=mapping)
        _, errors = await attempt(lambda: cp.write(lambda s: _changes(
            service.update_automation(s, state.automation_id or "", patch, now()))))
        return errors

    async def _rotate(automation_id: str) -> str:
        grace = cp.settings.key_grace_seconds

        def work(s: DbSession) -> tuple[str, Changes]:
            _a, key, _expiry, changes = service.rotate_key(s, automation_id, grace, now())
            return key, changes
        return await cp.write(work)

    async def _finish(state: WizardState) -> list[str]:
        if state.automation_id is None:
            return ["The connection-test step has not been reached yet."]

        async def go() -> Any:
            patch = m.AutomationPatch(
                name=state.name, survey_id=state.survey_id, message_id=state.message_id,
                email_field=state.email_field,
                fields=m.FieldsIn(mode=state.fields_mode,  # type: ignore[arg-type]
                                  paths=state.fields_paths),
                filters=ff.to_json(state.filter_root),
                mapping=[m.MappingIn(field=f, variable=v) for f, v in state.mapping.items()],
                delay_days=state.delay_days if state.delay_on else 0,
                error_notifications=m.ErrorNotificationsIn(
                    enabled=state.notify_on,
                    recipients=[x for x in state.recipients if x] if state.notify_on else []))

            def work(s: DbSession) -> tuple[None, Changes]:
                a, _ = service.update_automation(s, state.automation_id or "", patch, now())
                reason = a.disabled_reason if state.editing else None
                _, changes = service.set_enabled(s, a.id, state.enabled,
                                                 None if state.enabled else reason, now())
                return None, changes
            return await cp.write(work)
        try:
            _, errors = await attempt(go)
        except ff.BuildError as exc:
            errors = exc.problems
        return errors

    def _example_body(state: WizardState) -> dict[str, Any]:
        body: dict[str, Any] = {}
        _put(body, state.email_field or "email", "ada@example.com")
        if state.fields_mode == "include":
            for p in state.fields_paths:
                if p != state.email_field:
                    _put(body, p, "example")
        else:
            body.setdefault("first_name", "Ada")
        return body

    return r


def _next(path: str, query: dict[str, str], cursor: str | None) -> str | None:
    """The next page's URL: the same filters, the page's cursor."""
    return f"{path}?{urlencode({**query, 'cursor': cursor})}" if cursor else None


def _put(body: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    node = body
    for part in parts[:-1]:
        nxt = node.get(part)
        if not isinstance(nxt, dict):
            nxt = node[part] = {}
        node = nxt
    node.setdefault(parts[-1], value)


def _changes(result: tuple[Any, Changes]) -> tuple[None, Changes]:
    return None, result[1]
