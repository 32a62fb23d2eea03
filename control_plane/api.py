"""The admin API (control plane, default port 8081): surveys, variables, messages, automations.

Every /v1 call needs `Authorization: Bearer $HOOKSTREAM_ADMIN_TOKEN`. Each change is
committed to SQL, then its snapshot is published on the config topic and acknowledged by
Kafka before the answer. Errors are `{"error": code, "detail": sentence, "errors": [...]}`.
Operators and services reach it, respondents never: the personal survey links are served by
`hookstream survey-page` (notifier/survey_page.py), a process of its own.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime
from typing import Any, TypeVar

import anyio.to_thread
from fastapi import APIRouter, Body, Depends, FastAPI, Query, Request, Response, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import Counter, Histogram
from sqlalchemy import text
from sqlalchemy.orm import Session
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute

from automations import signing
from automations.bodies import BodyError, parse_body
from automations.dry_run import dry_run
from automations.signing import SecretBox
from control_plane import api_models as m
from control_plane import api_reads, console, listing, service, views
from control_plane.activity import Activity
from control_plane.errors import DomainError, Invalid, Problem, summarize
from control_plane.migrations import migrate
from control_plane.publisher import ConfigPublisher
from control_plane.reconcile import republish_all, republish_ids
from control_plane.service import Changes
from control_plane.snapshots import build_snapshot
from control_plane.store.unit import Store
from core.kafka.clients import ConnectGate, KafkaConnection
from core.kafka.plan import ensure_plan
from core.kafka.topics import Topics
from core.serving import Failed, probe_routes
from core.settings import Settings, get_settings

log = logging.getLogger(__name__)
T = TypeVar("T")

REQUESTS = Counter("hookstream_admin_requests_total", "Admin API requests",
                   ["method", "route", "status"])
LATENCY = Histogram("hookstream_admin_request_seconds", "Admin API request duration",
                    ["method", "route"])

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": m.ErrorOut, "description": "Missing or wrong admin token"},
    422: {"model": m.ErrorOut, "description": "Invalid input: which field and why"},
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": m.ErrorOut,
                                                     "description": "Unknown id"}}
CONFLICT: dict[int | str, dict[str, Any]] = {409: {"model": m.ErrorOut,
                                                    "description": "Conflicts with stored data"}}
UNPUBLISHED: dict[int | str, dict[str, Any]] = {503: {
    "model": m.ErrorOut, "description": "Saved, but Kafka has not acknowledged the config yet "
    "(it is republished as soon as Kafka answers)"}}


class Unauthorized(DomainError):
    status = 401
    code = "unauthorized"


class Forbidden(DomainError):
    status = 403
    code = "forbidden"


# What the notifier's own token (HOOKSTREAM_NOTIFIER_ADMIN_TOKEN) may call: it disables an
# automation that keeps failing; enable is its inverse. Every other route answers 403 to it.
NOTIFIER_ROUTES = frozenset({"/v1/automations/{automation_id}/disable",
                             "/v1/automations/{automation_id}/enable"})


class PublishFailed(DomainError):
    status = 503
    code = "config_publish_failed"


def _error(status: int, code: str, detail: str, problems: list[Problem] | None = None,
           headers: dict[str, str] | None = None) -> JSONResponse:
    body = m.ErrorOut(error=code, detail=detail,
                      errors=[m.ProblemOut(field=p.field, reason=p.reason, code=p.code)
                              for p in problems or []])
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def loc_path(loc: tuple[int | str, ...]) -> str:
    """('body', 'mapping', 2, 'variable') -> 'mapping[2].variable' (as the engine names it)."""
    parts = list(loc)
    if parts and parts[0] in ("body", "path", "query", "header"):
        where = parts.pop(0)
        if not parts:
            return "body" if where == "body" else str(where)
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += f".{p}" if out else str(p)
    return out or "body"


def validation_problems(exc: RequestValidationError) -> list[Problem]:
    problems = []
    for err in exc.errors():
        reason = str(err.get("msg", "is invalid")).removeprefix("Value error, ")
        problems.append(Problem(loc_path(tuple(err.get("loc", ()))), reason,
                                str(err.get("type", "invalid"))))
    return problems


class AdminBackend:
    """What the admin API's routes share: the store, the config publisher, and one write lock.

    The lock makes commit-then-publish one step, so the topic receives snapshots in the
    order of the commits (the newest is always the last record of its key).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topics = Topics(settings.topic_prefix)
        self.store: Store | None = None
        self.kafka = KafkaConnection.from_settings(settings)
        self.kafka_gate = ConnectGate(self.kafka, "the admin API")
        self.publisher = ConfigPublisher(self.kafka, self.topics.config)
        self.box = SecretBox(settings.secrets_key.get_secret_value())  # signing secrets
        self.lock = asyncio.Lock()
        self.ready = False

    def db(self) -> Store:
        if self.store is None:
            raise RuntimeError("the control plane is not started")
        return self.store

    async def read(self, work: Callable[[Session], T]) -> T:
        return await self.db().arun(work)

    async def write(self, work: Callable[[Session], tuple[T, Changes]]) -> T:
        async with self.lock:
            result, changes = await self.db().arun(work)
            await self._publish(changes)
        return result

    async def _publish(self, changes: Changes) -> None:
        try:
            for snap in changes.publish:
                await self.publisher.publish(snap)
            for automation_id in changes.delete:
                await self.publisher.tombstone(automation_id)
        except Exception as exc:
            log.error("config publish failed after commit (will retry): %s", exc)
            for snap in changes.publish:
                self.publisher.pending.add(snap.id)
            self.publisher.pending.update(changes.delete)
            raise PublishFailed("the change is saved but Kafka has not acknowledged it yet; it "
                                "will be published as soon as Kafka answers") from exc

    async def database_answers(self) -> bool:
        if self.store is None:
            return False
        try:
            await self.read(lambda s: s.execute(text("SELECT 1")).scalar())
        except Exception as exc:  # noqa: BLE001 - any database failure means "not ready"
            log.warning("readiness: the database does not answer: %s", type(exc).__name__)
            return False
        return True

    async def retry_pending(self) -> None:
        async with self.lock:
            if self.publisher.pending:
                await republish_ids(self.db(), self.publisher, set(self.publisher.pending))

    async def start(self) -> None:
        s = self.settings
        await anyio.to_thread.run_sync(migrate, s.database_url)
        self.store = Store(s.database_url)
        # Until Kafka answers: said once why not (the API serves once this start is done).
        await self.kafka_gate.wait()
        report = await ensure_plan(s)
        if report.missing:
            # The API cannot serve before its start-up ends: stop with the names instead of
            # waiting unseen (a supervisor restarts it; the other services wait, not ready).
            raise RuntimeError(f"missing topics {', '.join(report.missing)} and "
                               "HOOKSTREAM_KAFKA_CREATE_TOPICS is off: create them (hookstream "
                               "topics apply) before the control plane starts")
        await self.publisher.start()
        # The topic must agree with the store before anyone relies on it.
        await republish_all(self.store, self.publisher)
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        await self.publisher.stop()
        if self.store is not None:
            self.store.dispose()


async def _retry_loop(cp: AdminBackend, interval: float = 2.0) -> None:
    while True:
        await asyncio.sleep(interval)
        if not cp.publisher.pending:
            continue
        try:
            await cp.retry_pending()
            log.info("republished the config changes Kafka had not acknowledged")
        except Exception as exc:  # noqa: BLE001 - Kafka still away: try again next round
            log.warning("config republish still failing: %s", exc)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    cp = AdminBackend(settings)
    activity = Activity(cp.kafka, cp.topics)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await cp.start()
        retry = asyncio.create_task(_retry_loop(cp), name="config-republish")
        await activity.start()
        try:
            yield
        finally:
            await activity.stop()
            retry.cancel()
            with suppress(asyncio.CancelledError):
                await retry
            await cp.stop()

    app = FastAPI(title="hookstream admin API", version="1", lifespan=lifespan,
                  description="Control plane: surveys, background variables, messages and "
                  "incoming-webhook automations. Every /v1 call needs "
                  "`Authorization: Bearer $HOOKSTREAM_ADMIN_TOKEN`.")
    app.state.backend = cp
    _install_handlers(app)
    _install_metrics(app)
    app.router.routes.extend(_probes(cp))
    app.include_router(_v1(cp, activity))
    console.mount(app, cp, activity)
    return app


def _install_handlers(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def _domain(_: Request, exc: DomainError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else (
            {"Retry-After": "5"} if exc.status == 503 else None)
        return _error(exc.status, exc.code, exc.detail, exc.problems, headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = validation_problems(exc)
        return _error(422, "validation_failed", summarize(problems), problems)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:
            # FastAPI's "error parsing the body" (e.g. not UTF-8): the same answer as bad JSON.
            problems = [Problem("body", f"cannot be read: {exc.detail}", "body_unreadable")]
            return _error(422, "validation_failed", summarize(problems), problems)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, str(exc.detail), headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error in the admin API")
        return _error(500, "internal_error", f"an unexpected error: {type(exc).__name__}")


def _install_metrics(app: FastAPI) -> None:
    @app.middleware("http")
    async def _measure(request: Request,
                       call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        t0 = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        REQUESTS.labels(request.method, path, str(response.status_code)).inc()
        LATENCY.labels(request.method, path).observe(time.perf_counter() - t0)
        return response


def _probes(cp: AdminBackend) -> list[BaseRoute]:
    """`/healthz`, `/metrics`, and `/readyz`: migrated, config republished, Kafka producer
    started, database answers; the ready body also counts the changes still to publish."""

    async def ready() -> dict[str, bool | Failed]:
        return {"kafka": cp.kafka_gate.check(), "republished": cp.ready,
                "publisher": cp.publisher.started, "database": await cp.database_answers()}

    return probe_routes(ready, extra=lambda: {"pending_publishes": len(cp.publisher.pending)})


def _v1(cp: AdminBackend, activity: Activity) -> APIRouter:
    bearer = HTTPBearer(auto_error=False, scheme_name="adminToken",
                        description="HOOKSTREAM_ADMIN_TOKEN")
    expected = cp.settings.admin_token.get_secret_value().encode()
    notifier = cp.settings.notifier_admin_token.get_secret_value().encode()

    async def require_admin(
            request: Request,
            creds: HTTPAuthorizationCredentials | None = Security(bearer)) -> None:
        given = creds.credentials.encode() if creds is not None else b""
        if hmac.compare_digest(given, expected):
            return
        if hmac.compare_digest(given, notifier):
            # Dependencies run after routing: the matched route's template is known.
            if getattr(request.scope.get("route"), "path", None) in NOTIFIER_ROUTES:
                return
            raise Forbidden("the notifier's token may only disable and enable automations")
        raise Unauthorized("missing or wrong admin token: send Authorization: Bearer "
                           "$HOOKSTREAM_ADMIN_TOKEN")

    router = APIRouter(prefix="/v1", dependencies=[Depends(require_admin)], responses=ERRORS)

    def now() -> datetime:
        return datetime.now(UTC)

    # --- surveys --------------------------------------------------------------------------
    @router.post("/surveys", status_code=201, response_model=m.SurveyOut, tags=["surveys"])
    async def create_survey(data: m.SurveyIn) -> m.SurveyOut:
        return await cp.write(
            lambda s: (views.survey_out(service.create_survey(s, data, now())), Changes()))

    @router.get("/surveys", response_model=m.SurveyList, tags=["surveys"])
    async def list_surveys(limit: int = api_reads.Limit, cursor: str | None = api_reads.Cursor,
                           name: str | None = Query(default=None, max_length=200,
                                                    description="Name contains (any case)"),
                           ) -> m.SurveyList:
        def work(s: Session) -> m.SurveyList:
            page = listing.surveys(s, limit=limit, cursor=cursor, name=name)
            return m.SurveyList(items=[views.survey_out(x) for x in page.items],
                                next_cursor=page.next_cursor)
        return await cp.read(work)

    @router.get("/surveys/{survey_id}", response_model=m.SurveyOut, tags=["surveys"],
                responses=NOT_FOUND)
    async def get_survey(survey_id: str) -> m.SurveyOut:
        return await cp.read(lambda s: views.survey_out(service.get_survey(s, survey_id)))

    @router.patch("/surveys/{survey_id}", response_model=m.SurveyOut, tags=["surveys"],
                  responses={**NOT_FOUND, **UNPUBLISHED})
    async def update_survey(survey_id: str, data: m.SurveyPatch) -> m.SurveyOut:
        def work(s: Session) -> tuple[m.SurveyOut, Changes]:
            survey, changes = service.update_survey(s, survey_id, data, now())
            return views.survey_out(survey), changes
        return await cp.write(work)

    @router.delete("/surveys/{survey_id}", status_code=204, tags=["surveys"],
                   responses={**NOT_FOUND, **CONFLICT})
    async def delete_survey(survey_id: str) -> Response:
        await cp.write(lambda s: (service.delete_survey(s, survey_id), Changes()))
        return Response(status_code=204)

    @router.post("/surveys/{survey_id}/variables", status_code=201, response_model=m.VariableOut,
                 tags=["surveys"], responses={**NOT_FOUND, **CONFLICT, **UNPUBLISHED})
    async def add_variable(survey_id: str, data: m.VariableIn) -> m.VariableOut:
        def work(s: Session) -> tuple[m.VariableOut, Changes]:
            var, changes = service.add_variable(s, survey_id, data, now())
            return views.variable_out(var), changes
        return await cp.write(work)

    @router.get("/surveys/{survey_id}/variables", response_model=list[m.VariableOut],
                tags=["surveys"], responses=NOT_FOUND)
    async def list_variables(survey_id: str) -> list[m.VariableOut]:
        return await cp.read(lambda s: [views.variable_out(v) for v in
                                        service.get_survey(s, survey_id).variables])

    @router.patch("/surveys/{survey_id}/variables/{name}", response_model=m.VariableOut,
                  tags=["surveys"], responses={**NOT_FOUND, **UNPUBLISHED})
    async def update_variable(survey_id: str, name: str, data: m.VariablePatch) -> m.VariableOut:
        def work(s: Session) -> tuple[m.VariableOut, Changes]:
            var, changes = service.update_variable(s, survey_id, name, data, now())
            return views.variable_out(var), changes
        return await cp.write(work)

    @router.delete("/surveys/{survey_id}/variables/{name}", status_code=204, tags=["surveys"],
                   responses={**NOT_FOUND, **CONFLICT, **UNPUBLISHED})
    async def delete_variable(survey_id: str, name: str) -> Response:
        await cp.write(lambda s: (None, service.delete_variable(s, survey_id, name, now())))
        return Response(status_code=204)

    # --- messages -------------------------------------------------------------------------
    @router.post("/messages", status_code=201, response_model=m.MessageOut, tags=["messages"])
    async def create_message(data: m.MessageIn) -> m.MessageOut:
        return await cp.write(
            lambda s: (views.message_out(service.create_message(s, data, now())), Changes()))

    @router.get("/messages", response_model=m.MessageList, tags=["messages"])
    async def list_messages(limit: int = api_reads.Limit, cursor: str | None = api_reads.Cursor,
                            name: str | None = Query(default=None, max_length=200,
                                                     description="Name contains (any case)"),
                            ) -> m.MessageList:
        def work(s: Session) -> m.MessageList:
            page = listing.messages(s, limit=limit, cursor=cursor, name=name)
            return m.MessageList(items=[views.message_out(x) for x in page.items],
                                 next_cursor=page.next_cursor)
        return await cp.read(work)

    @router.get("/messages/{message_id}", response_model=m.MessageOut, tags=["messages"],
                responses=NOT_FOUND)
    async def get_message(message_id: str) -> m.MessageOut:
        return await cp.read(lambda s: views.message_out(service.get_message(s, message_id)))

    @router.patch("/messages/{message_id}", response_model=m.MessageOut, tags=["messages"],
                  responses={**NOT_FOUND, **UNPUBLISHED})
    async def update_message(message_id: str, data: m.MessagePatch) -> m.MessageOut:
        def work(s: Session) -> tuple[m.MessageOut, Changes]:
            msg, changes = service.update_message(s, message_id, data, now())
            return views.message_out(msg), changes
        return await cp.write(work)

    @router.delete("/messages/{message_id}", status_code=204, tags=["messages"],
                   responses={**NOT_FOUND, **CONFLICT})
    async def delete_message(message_id: str) -> Response:
        await cp.write(lambda s: (service.delete_message(s, message_id), Changes()))
        return Response(status_code=204)

    # --- automations ----------------------------------------------------------------------
    def check_limits(limits: m.LimitsIn | None) -> None:
        """A per-automation body limit only lowers the global one: the topics' record limit
        (max.message.bytes) is sized from HOOKSTREAM_MAX_BODY_BYTES."""
        most = cp.settings.max_body_bytes
        if limits is not None and limits.max_body_bytes is not None \
                and limits.max_body_bytes > most:
            raise Invalid([Problem("limits.max_body_bytes", f"must be at most {most} (the "
                                   "deployment's HOOKSTREAM_MAX_BODY_BYTES, which the topics "
                                   "are sized for)", "too_large")])

    @router.post("/automations", status_code=201, response_model=m.AutomationCreated,
                 tags=["automations"], responses=UNPUBLISHED)
    async def create_automation(data: m.AutomationIn) -> m.AutomationCreated:
        check_limits(data.limits)
        given = data.authentication.signing_secret
        generated = (signing.generate() if given is None
                     and signing.needs_signature(data.authentication.mode) else None)

        def work(s: Session) -> tuple[m.AutomationCreated, Changes]:
            a, key, changes = service.create_automation(s, data, now(), box=cp.box,
                                                        signing_secret=given or generated)
            return views.automation_created(a, key, generated), changes
        return await cp.write(work)

    @router.get("/automations", response_model=m.AutomationList, tags=["automations"])
    async def list_automations(
            survey_id: str | None = Query(default=None, max_length=64,
                                          description="Only this survey's automations"),
            enabled: bool | None = Query(default=None, description="Only enabled (true) or "
                                         "disabled (false) ones"),
            name: str | None = Query(default=None, max_length=200,
                                     description="Name contains (any case)"),
            limit: int = api_reads.Limit, cursor: str | None = api_reads.Cursor,
    ) -> m.AutomationList:
        def work(s: Session) -> m.AutomationList:
            page = listing.automations(s, limit=limit, cursor=cursor, survey_id=survey_id,
                                       enabled=enabled, name=name)
            return m.AutomationList(items=[views.automation_out(a) for a in page.items],
                                    next_cursor=page.next_cursor)
        return await cp.read(work)

    @router.get("/automations/{automation_id}", response_model=m.AutomationOut,
                tags=["automations"], responses=NOT_FOUND)
    async def get_automation(automation_id: str) -> m.AutomationOut:
        return await cp.read(
            lambda s: views.automation_out(service.get_automation(s, automation_id)))

    @router.patch("/automations/{automation_id}", response_model=m.AutomationOut,
                  tags=["automations"], responses={**NOT_FOUND, **CONFLICT, **UNPUBLISHED})
    async def update_automation(automation_id: str, data: m.AutomationPatch) -> m.AutomationOut:
        check_limits(data.limits)

        def work(s: Session) -> tuple[m.AutomationOut, Changes]:
            a, changes = service.update_automation(s, automation_id, data, now())
            return views.automation_out(a), changes
        return await cp.write(work)

    @router.delete("/automations/{automation_id}", response_model=m.AutomationDeleted,
                   tags=["automations"], responses={**NOT_FOUND, **UNPUBLISHED})
    async def delete_automation(automation_id: str) -> m.AutomationDeleted:
        """Delete the automation. The only way to drop its held invitations (issue 15): the
        answer says how many were held; the notifier ends each as `suppressed`."""
        def work(s: Session) -> tuple[int, Changes]:
            held = listing.held_count(s, automation_id)
            return held, service.delete_automation(s, automation_id)
        held = await cp.write(work)
        return m.AutomationDeleted(automation_id=automation_id, held_dropped=held)

    @router.post("/automations/{automation_id}/enable", response_model=m.AutomationOut,
                 tags=["automations"], responses={**NOT_FOUND, **UNPUBLISHED})
    async def enable(automation_id: str) -> m.AutomationOut:
        def work(s: Session) -> tuple[m.AutomationOut, Changes]:
            a, changes = service.set_enabled(s, automation_id, True, None, now())
            return views.automation_out(a), changes
        return await cp.write(work)

    @router.post("/automations/{automation_id}/disable", response_model=m.AutomationOut,
                 tags=["automations"], responses={**NOT_FOUND, **UNPUBLISHED})
    async def disable(automation_id: str,
                      data: m.DisableIn | None = Body(default=None)) -> m.AutomationOut:
        reason = data.reason if data is not None else None

        def work(s: Session) -> tuple[m.AutomationOut, Changes]:
            a, changes = service.set_enabled(s, automation_id, False, reason, now())
            return views.automation_out(a), changes
        return await cp.write(work)

    @router.post("/automations/{automation_id}/keys", response_model=m.KeyRotated,
                 tags=["automations"], responses={**NOT_FOUND, **UNPUBLISHED})
    async def rotate_key(automation_id: str) -> m.KeyRotated:
        grace = cp.settings.key_grace_seconds

        def work(s: Session) -> tuple[m.KeyRotated, Changes]:
            a, key, expiry, changes = service.rotate_key(s, automation_id, grace, now())
            return m.KeyRotated(api_key=key, previous_keys_expire_at=expiry,
                                version=a.version), changes
        return await cp.write(work)

    @router.post("/automations/{automation_id}/signing-secrets",
                 response_model=m.SigningSecretRotated, tags=["automations"],
                 responses={**NOT_FOUND, **UNPUBLISHED})
    async def rotate_signing_secret(
            automation_id: str,
            data: m.SigningSecretIn | None = Body(default=None)) -> m.SigningSecretRotated:
        """A new webhook signing secret, shown this once (or the sender's own, given as
        `secret`); signatures made with the previous one still verify for the grace period."""
        grace = cp.settings.key_grace_seconds
        given = data.secret if data is not None else None

        def work(s: Session) -> tuple[m.SigningSecretRotated, Changes]:
            a, secret, expiry, changes = service.rotate_signing_secret(
                s, automation_id, cp.box, grace, now(), given)
            return m.SigningSecretRotated(signing_secret=secret,
                                          previous_secrets_expire_at=expiry,
                                          version=a.version), changes
        return await cp.write(work)

    @router.post("/automations/{automation_id}/dry-run", tags=["automations"],
                 responses=NOT_FOUND, openapi_extra={"requestBody": {
                     "required": True, "description": "A sample body, as the integrator "
                     "would send it: a JSON object, an array of objects, or NDJSON (with "
                     "Content-Type application/x-ndjson)",
                     "content": {"application/json": {"schema": {}}}}})
    async def dry_run_sample(automation_id: str, request: Request) -> dict[str, Any]:
        """What the automation as saved would do with a sample body: the domain's dry run on
        the snapshot built from the store (the one the ingress and the worker get), without
        the integrator's key and without sending anything. The same answer as the ingress's
        `POST /v1/hooks/{id}/test` with a body, minus the console's sample feed."""
        raw = await request.body()
        if len(raw) > cp.settings.max_body_bytes:
            raise Invalid([Problem("body", f"is larger than {cp.settings.max_body_bytes} "
                                   "bytes", "body_too_large")])
        try:
            records = parse_body(raw, request.headers.get("content-type"))
        except BodyError as exc:
            raise Invalid([Problem("body", exc.detail, exc.code)]) from None
        snap = await cp.read(lambda s: build_snapshot(service.get_automation(s, automation_id)))
        return {"automation": {"id": snap.id, "name": snap.name, "enabled": snap.enabled,
                               "survey": snap.survey_name},
                "dry_run": dry_run(snap, records), "published": False}

    @router.get("/automations/{automation_id}/errors", response_model=m.AutomationErrorList,
                tags=["automations"], responses=NOT_FOUND)
    async def list_errors(automation_id: str,
                          limit: int = Query(default=100, ge=1, le=1000),
                          cursor: str | None = api_reads.Cursor,
                          kind: str | None = Query(default=None, max_length=64,
                                                   description="Only errors of this kind"),
                          ) -> m.AutomationErrorList:
        def work(s: Session) -> m.AutomationErrorList:
            page = listing.errors(s, automation_id, limit=limit, cursor=cursor, kind=kind)
            return m.AutomationErrorList(items=[views.error_out(e) for e in page.items],
                                         next_cursor=page.next_cursor)
        return await cp.read(work)

    router.include_router(api_reads.router(cp, activity))
    return router
