"""`hookstream admin` (serve the admin API) and the operator commands that cover it:
`hookstream surveys|variables|messages|automations ...`.

The operator commands talk to a running admin API over HTTP with the admin token
(HOOKSTREAM_ADMIN_URL, HOOKSTREAM_ADMIN_TOKEN, or --url). Every read command prints lines for
a person, or the API's JSON with `--json`; a create or update prints the API's JSON answer
(a key or signing secret shown once is in it). Errors go to stderr with the API's code and
every field problem; exit 1 for an error answer, 2 when the API cannot be reached.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import typer

from core.settings import get_settings

surveys_app = typer.Typer(no_args_is_help=True, help="Surveys and their background variables.")
variables_app = typer.Typer(no_args_is_help=True, help="A survey's background variables.")
messages_app = typer.Typer(no_args_is_help=True, help="Invitation messages (e-mail templates).")
automations_app = typer.Typer(no_args_is_help=True,
                              help="Manage incoming-webhook automations via the admin API.")

URL_OPTION = typer.Option(None, "--url", help="Admin API base URL (default HOOKSTREAM_ADMIN_URL)")
JSON_OPTION = typer.Option(False, "--json", help="Print the API's JSON answer")
YES_OPTION = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation")
FILE_HELP = "JSON body ('-' reads stdin); the options override it"
# What `show --json` prints that a create or update does not take (read-only fields).
READ_ONLY = ("id", "api_keys", "version", "webhook_path", "created_at", "updated_at",
             "disabled_reason")


def register(app: typer.Typer) -> None:
    app.command("admin")(admin)
    app.add_typer(surveys_app, name="surveys")
    app.add_typer(variables_app, name="variables")
    app.add_typer(messages_app, name="messages")
    app.add_typer(automations_app, name="automations")


def admin(
    host: str | None = typer.Option(None, help="Bind address (default HOOKSTREAM_ADMIN_HOST)"),
    port: int | None = typer.Option(None, help="Port (default HOOKSTREAM_ADMIN_PORT)"),
    log_level: str = typer.Option("info", help="uvicorn log level"),
) -> None:
    """Serve the admin API (control plane): migrations, topics, republish, then HTTP."""
    import uvicorn

    from control_plane.api import create_app
    from core.logs import KAFKA_LOGGERS, install_repeat_filter, path_of, redact_access_log
    from core.settings import default_token_refusal

    s = get_settings()
    host = host or s.admin_host
    refusal = default_token_refusal(s, host, "admin API",
                                    ("admin_token", "notifier_admin_token"))
    if refusal:
        typer.secho(f"error: {refusal}", fg="red", err=True)
        raise typer.Exit(2)
    # The access log keeps method, path and status, never a query string or the survey
    # link's token (a respondent may open their link on the admin's address).
    redact_access_log([path_of(s.survey_base_url)])
    app = create_app(s)
    install_repeat_filter((*KAFKA_LOGGERS, "control_plane"), s.log_repeat_seconds)
    uvicorn.run(app, host=host, port=port or s.admin_port, log_level=log_level)


# --- HTTP and printing ---------------------------------------------------------------------

def _call(method: str, path: str, url: str | None, body: Any = None, *,
          params: dict[str, Any] | None = None, content: bytes | None = None,
          content_type: str | None = None) -> Any:
    s = get_settings()
    headers = {"Authorization": f"Bearer {s.admin_token.get_secret_value()}"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    query = {k: v for k, v in (params or {}).items() if v is not None}
    try:
        with httpx.Client(base_url=url or s.admin_url, timeout=30.0, headers=headers) as c:
            if content is not None:
                r = c.request(method, path, content=content, params=query)
            else:
                r = c.request(method, path, json=body, params=query)
    except httpx.HTTPError as exc:
        typer.secho(f"error: cannot reach the admin API at {url or s.admin_url}: {exc}",
                    fg="red", err=True)
        raise typer.Exit(2) from exc
    if r.status_code >= 400:
        try:
            err = r.json()
            typer.secho(f"error {r.status_code} ({err.get('error')}): {err.get('detail')}",
                        fg="red", err=True)
            for p in err.get("errors", []):
                typer.secho(f"  {p['field']}: {p['reason']}", fg="red", err=True)
        except ValueError:
            typer.secho(f"error {r.status_code}: {r.text}", fg="red", err=True)
        raise typer.Exit(1)
    return r.json() if r.content else None


def _all(path: str, url: str | None, params: dict[str, Any] | None = None) -> list[Any]:
    """Every item of a paginated list (pages of 500)."""
    items: list[Any] = []
    query = {**(params or {}), "limit": 500}
    while True:
        page = _call("GET", path, url, params=query)
        items += page["items"]
        if not page.get("next_cursor"):
            return items
        query["cursor"] = page["next_cursor"]


def _print(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False))


def _fields(pairs: list[tuple[str, Any]]) -> None:
    width = max(len(k) for k, _ in pairs)
    for k, v in pairs:
        typer.echo(f"{k + ':':<{width + 1}} {v}")


def _seg(value: str) -> str:
    return quote(value, safe="")


def _read_json(file: Path | None) -> dict[str, Any]:
    if file is None:
        return {}
    text = sys.stdin.read() if str(file) == "-" else file.read_text()
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise typer.BadParameter(f"{file} is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise typer.BadParameter(f"{file} must hold a JSON object")
    return body


def _confirm(what: str, yes: bool) -> None:
    if not yes and not typer.confirm(f"Delete {what}?"):
        raise typer.Exit(1)


# --- surveys -------------------------------------------------------------------------------

def _variable_spec(spec: str) -> dict[str, Any]:
    """NAME:TYPE or NAME:choice:OPT1|OPT2 -> a variable body."""
    name, _, rest = spec.partition(":")
    type_, _, options = rest.partition(":")
    if not name or not type_:
        raise typer.BadParameter(f"{spec!r}: use NAME:TYPE, or NAME:choice:A|B|C")
    return {"name": name, "type": type_, "options": [o for o in options.split("|") if o]}


def _variables_text(variables: list[dict[str, Any]]) -> str:
    return ", ".join(f"{v['name']} ({v['type']}"
                     + (f": {'|'.join(v['options'])}" if v.get("options") else "") + ")"
                     for v in variables) or "-"


@surveys_app.command("create")
def survey_create(
    name: str | None = typer.Option(None, help="The survey's name"),
    variable: list[str] | None = typer.Option(None, "--variable", help="NAME:TYPE or "
                                              "NAME:choice:A|B|C (repeat for more)"),
    file: Path | None = typer.Option(None, "--file", "-f", help=FILE_HELP),
    url: str | None = URL_OPTION,
) -> None:
    """Create a survey (with background variables)."""
    body = _read_json(file)
    if name is not None:
        body["name"] = name
    if variable:
        body["variables"] = [_variable_spec(v) for v in variable]
    _print(_call("POST", "/v1/surveys", url, body))


@surveys_app.command("list")
def survey_list(name: str | None = typer.Option(None, help="Name contains (any case)"),
                as_json: bool = JSON_OPTION, url: str | None = URL_OPTION) -> None:
    """Every survey: id, name, variables."""
    items = _all("/v1/surveys", url, {"name": name})
    if as_json:
        _print(items)
        return
    for x in items:
        typer.echo(f"{x['id']}  {x['name']}  [{_variables_text(x['variables'])}]")


@surveys_app.command("show")
def survey_show(survey_id: str, as_json: bool = JSON_OPTION,
                url: str | None = URL_OPTION) -> None:
    """One survey with its variables."""
    x = _call("GET", f"/v1/surveys/{_seg(survey_id)}", url)
    if as_json:
        _print(x)
        return
    _fields([("id", x["id"]), ("name", x["name"]),
             ("variables", _variables_text(x["variables"])), ("created", x["created_at"]),
             ("updated", x["updated_at"])])


@surveys_app.command("update")
def survey_update(survey_id: str, name: str = typer.Option(..., help="The new name"),
                  url: str | None = URL_OPTION) -> None:
    """Rename a survey (its automations are republished with the new name)."""
    _print(_call("PATCH", f"/v1/surveys/{_seg(survey_id)}", url, {"name": name}))


@surveys_app.command("delete")
def survey_delete(survey_id: str, yes: bool = YES_OPTION, url: str | None = URL_OPTION) -> None:
    """Delete a survey no automation uses."""
    _confirm(f"survey {survey_id}", yes)
    _call("DELETE", f"/v1/surveys/{_seg(survey_id)}", url)
    typer.echo(f"{survey_id} deleted")


# --- variables -----------------------------------------------------------------------------

@variables_app.command("create")
def variable_create(survey_id: str, name: str, type_: str = typer.Argument(
                        ..., metavar="TYPE", help="text, number, date, boolean, email, choice"),
                    option: list[str] | None = typer.Option(None, "--option",
                                                            help="A choice's option (repeat)"),
                    url: str | None = URL_OPTION) -> None:
    """Add a background variable to a survey."""
    _print(_call("POST", f"/v1/surveys/{_seg(survey_id)}/variables", url,
                 {"name": name, "type": type_, "options": list(option or [])}))


@variables_app.command("list")
def variable_list(survey_id: str, as_json: bool = JSON_OPTION,
                  url: str | None = URL_OPTION) -> None:
    """A survey's variables: name, type, options."""
    items = _call("GET", f"/v1/surveys/{_seg(survey_id)}/variables", url)
    if as_json:
        _print(items)
        return
    for v in items:
        typer.echo(f"{v['name']}  {v['type']}" + (f"  {'|'.join(v['options'])}"
                                                  if v["options"] else ""))


@variables_app.command("show")
def variable_show(survey_id: str, name: str, as_json: bool = JSON_OPTION,
                  url: str | None = URL_OPTION) -> None:
    """One variable of a survey."""
    items = _call("GET", f"/v1/surveys/{_seg(survey_id)}/variables", url)
    found = [v for v in items if v["name"] == name]
    if not found:
        typer.secho(f"error: survey {survey_id} has no variable named {name!r}", fg="red",
                    err=True)
        raise typer.Exit(1)
    if as_json:
        _print(found[0])
        return
    _fields([("name", name), ("type", found[0]["type"]),
             ("options", "|".join(found[0]["options"]) or "-")])


@variables_app.command("update")
def variable_update(survey_id: str, name: str,
                    type_: str | None = typer.Option(None, "--type", help="The new type"),
                    option: list[str] | None = typer.Option(None, "--option",
                                                            help="The options (repeat)"),
                    url: str | None = URL_OPTION) -> None:
    """Change a variable's type or options."""
    body: dict[str, Any] = {}
    if type_ is not None:
        body["type"] = type_
    if option:
        body["options"] = list(option)
    _print(_call("PATCH", f"/v1/surveys/{_seg(survey_id)}/variables/{_seg(name)}", url, body))


@variables_app.command("delete")
def variable_delete(survey_id: str, name: str, yes: bool = YES_OPTION,
                    url: str | None = URL_OPTION) -> None:
    """Delete a variable no mapping or message uses."""
    _confirm(f"variable {name} of survey {survey_id}", yes)
    _call("DELETE", f"/v1/surveys/{_seg(survey_id)}/variables/{_seg(name)}", url)
    typer.echo(f"{name} deleted")


# --- messages ------------------------------------------------------------------------------

def _message_body(file: Path | None, name: str | None, subject: str | None, body: str | None,
                  body_file: Path | None) -> dict[str, Any]:
    data = _read_json(file)
    for key, value in (("name", name), ("subject", subject), ("body", body)):
        if value is not None:
            data[key] = value
    if body_file is not None:
        data["body"] = body_file.read_text()
    return data


@messages_app.command("create")
def message_create(
    name: str | None = typer.Option(None), subject: str | None = typer.Option(None),
    body: str | None = typer.Option(None, help="The text, with {{ variable }} and "
                                    "{{ survey_link }} placeholders"),
    body_file: Path | None = typer.Option(None, help="Read the body from this file"),
    file: Path | None = typer.Option(None, "--file", "-f", help=FILE_HELP),
    url: str | None = URL_OPTION,
) -> None:
    """Create an invitation message."""
    _print(_call("POST", "/v1/messages", url,
                 _message_body(file, name, subject, body, body_file)))


@messages_app.command("list")
def message_list(name: str | None = typer.Option(None, help="Name contains (any case)"),
                 as_json: bool = JSON_OPTION, url: str | None = URL_OPTION) -> None:
    """Every message: id, name, subject."""
    items = _all("/v1/messages", url, {"name": name})
    if as_json:
        _print(items)
        return
    for x in items:
        typer.echo(f"{x['id']}  {x['name']}  subject: {x['subject']}")


@messages_app.command("show")
def message_show(message_id: str, as_json: bool = JSON_OPTION,
                 url: str | None = URL_OPTION) -> None:
    """One message with its subject and body."""
    x = _call("GET", f"/v1/messages/{_seg(message_id)}", url)
    if as_json:
        _print(x)
        return
    _fields([("id", x["id"]), ("name", x["name"]), ("subject", x["subject"]),
             ("updated", x["updated_at"])])
    typer.echo("")
    typer.echo(x["body"])


@messages_app.command("update")
def message_update(
    message_id: str, name: str | None = typer.Option(None),
    subject: str | None = typer.Option(None), body: str | None = typer.Option(None),
    body_file: Path | None = typer.Option(None, help="Read the body from this file"),
    file: Path | None = typer.Option(None, "--file", "-f", help=FILE_HELP),
    url: str | None = URL_OPTION,
) -> None:
    """Change a message (the automations sending it are republished)."""
    _print(_call("PATCH", f"/v1/messages/{_seg(message_id)}", url,
                 _message_body(file, name, subject, body, body_file)))


@messages_app.command("delete")
def message_delete(message_id: str, yes: bool = YES_OPTION,
                   url: str | None = URL_OPTION) -> None:
    """Delete a message no automation sends."""
    _confirm(f"message {message_id}", yes)
    _call("DELETE", f"/v1/messages/{_seg(message_id)}", url)
    typer.echo(f"{message_id} deleted")


# --- automations ---------------------------------------------------------------------------

def _mapping(entries: list[str]) -> list[dict[str, str | None]]:
    out: list[dict[str, str | None]] = []
    for entry in entries:
        field, sep, variable = entry.partition("=")
        if not sep or not field:
            raise typer.BadParameter(f"{entry!r}: use FIELD=VARIABLE, or FIELD=- to skip")
        out.append({"field": field, "variable": None if variable in ("", "-") else variable})
    return out


def _automation_body(file: Path | None, *, name: str | None, survey_id: str | None,
                     message_id: str | None, email_field: str | None,
                     include: list[str] | None, exclude: list[str] | None,
                     mapping: list[str] | None, filters: str | None, delay_days: int | None,
                     auth_mode: str | None, signature_scheme: str | None) -> dict[str, Any]:
    body = _read_json(file)
    for key in READ_ONLY:  # a file from `show --json` may be fed back
        body.pop(key, None)
    if isinstance(body.get("authentication"), dict):
        body["authentication"].pop("signing_secrets", None)
    given = {"name": name, "survey_id": survey_id, "message_id": message_id,
             "email_field": email_field, "delay_days": delay_days}
    body.update({k: v for k, v in given.items() if v is not None})
    if include and exclude:
        raise typer.BadParameter("use --include or --exclude, not both")
    if include or exclude:
        body["fields"] = {"mode": "include" if include else "exclude",
                          "paths": list(include or exclude or [])}
    if mapping:
        body["mapping"] = _mapping(mapping)
    if filters is not None:
        body["filters"] = None if filters == "null" else json.loads(filters)
    if auth_mode is not None or signature_scheme is not None:
        auth = body.setdefault("authentication", {})
        if auth_mode is not None:
            auth["mode"] = auth_mode
        if signature_scheme is not None:
            auth["signature_scheme"] = signature_scheme
    return body


AUTH_MODE_OPTION = typer.Option(None, "--auth", help="How webhooks authenticate: key, "
                                "signature or both")
SCHEME_OPTION = typer.Option(None, "--signature-scheme", help="standard (Standard Webhooks), "
                             "stripe, shopify or github")


@automations_app.command("create")
def create(
    file: Path | None = typer.Option(None, "--file", "-f", help="JSON body of POST "
                                     "/v1/automations ('-' reads stdin); options override it"),
    name: str | None = typer.Option(None), survey_id: str | None = typer.Option(None),
    message_id: str | None = typer.Option(None), email_field: str | None = typer.Option(None),
    include: list[str] | None = typer.Option(None, help="Take in only these fields"),
    exclude: list[str] | None = typer.Option(None, help="Take in all fields but these"),
    mapping: list[str] | None = typer.Option(None, "--map", help="FIELD=VARIABLE or FIELD=-"),
    filters: str | None = typer.Option(None, help="Filter tree as JSON"),
    delay_days: int | None = typer.Option(None),
    disabled: bool = typer.Option(False, "--disabled", help="Create it disabled"),
    error_recipient: list[str] | None = typer.Option(None, help="Error notifications to"),
    auth_mode: str | None = AUTH_MODE_OPTION, signature_scheme: str | None = SCHEME_OPTION,
    signing_secret: str | None = typer.Option(None, help="The sender's own signing secret "
                                              "(else one is generated and shown once)"),
    url: str | None = URL_OPTION,
) -> None:
    """Create an automation; prints it with its API key (and signing secret) shown this once."""
    body = _automation_body(file, name=name, survey_id=survey_id, message_id=message_id,
                            email_field=email_field, include=include, exclude=exclude,
                            mapping=mapping, filters=filters, delay_days=delay_days,
                            auth_mode=auth_mode, signature_scheme=signature_scheme)
    body.setdefault("fields", {"mode": "exclude", "paths": []})
    if signing_secret is not None:
        body.setdefault("authentication", {})["signing_secret"] = signing_secret
    if disabled:
        body["enabled"] = False
    if error_recipient:
        body["error_notifications"] = {"enabled": True, "recipients": list(error_recipient)}
    _print(_call("POST", "/v1/automations", url, body))


@automations_app.command("list")
def list_(survey_id: str | None = typer.Option(None, help="Only this survey's"),
          enabled: bool | None = typer.Option(None, "--enabled/--disabled",
                                              help="Only enabled or disabled ones"),
          name: str | None = typer.Option(None, help="Name contains (any case)"),
          as_json: bool = JSON_OPTION, url: str | None = URL_OPTION) -> None:
    """One line per automation: id, status, version, name."""
    items = _all("/v1/automations", url, {"survey_id": survey_id, "name": name,
                                          "enabled": None if enabled is None
                                          else str(enabled).lower()})
    if as_json:
        _print(items)
        return
    for a in items:
        status = "enabled " if a["enabled"] else "disabled"
        typer.echo(f"{a['id']}  {status}  v{a['version']}  {a['name']}")


@automations_app.command("show")
def show(automation_id: str, as_json: bool = JSON_OPTION, url: str | None = URL_OPTION) -> None:
    """Every setting of one automation (`--json`: as the API gives it)."""
    a = _call("GET", f"/v1/automations/{_seg(automation_id)}", url)
    if as_json:
        _print(a)
        return
    auth = a.get("authentication") or {"mode": "key", "signature_scheme": "standard",
                                       "signing_secrets": []}
    notes = a["error_notifications"]
    _fields([
        ("id", a["id"]), ("name", a["name"]), ("version", a["version"]),
        ("status", "enabled" if a["enabled"] else
         f"disabled ({a['disabled_reason'] or 'no reason given'})"),
        ("survey", a["survey_id"]), ("message", a["message_id"]),
        ("email field", a["email_field"]),
        ("fields", f"{a['fields']['mode']} {', '.join(a['fields']['paths']) or '(none)'}"),
        ("filters", json.dumps(a["filters"]) if a["filters"] else "none"),
        ("mapping", ", ".join(f"{m['field']}={m['variable'] or '-'}" for m in a["mapping"])
         or "none"),
        ("delay", f"{a['delay_days']} days"),
        ("errors to", (", ".join(notes["recipients"]) or "nobody")
         + ("" if notes["enabled"] else " (notifications off)")),
        ("auth", auth["mode"] + ("" if auth["mode"] == "key"
                                 else f" ({auth['signature_scheme']})")),
        ("api keys", len(a["api_keys"])), ("signing secrets", len(auth["signing_secrets"])),
        ("webhook", a["webhook_path"]), ("updated", a["updated_at"]),
    ])


@automations_app.command("update")
def update(
    automation_id: str,
    file: Path | None = typer.Option(None, "--file", "-f", help="JSON body of PATCH "
                                     "(only what changes); options override it"),
    name: str | None = typer.Option(None), survey_id: str | None = typer.Option(None),
    message_id: str | None = typer.Option(None), email_field: str | None = typer.Option(None),
    include: list[str] | None = typer.Option(None, help="Take in only these fields"),
    exclude: list[str] | None = typer.Option(None, help="Take in all fields but these"),
    mapping: list[str] | None = typer.Option(None, "--map", help="FIELD=VARIABLE or FIELD=- "
                                             "(replaces the whole mapping)"),
    filters: str | None = typer.Option(None, help="Filter tree as JSON; null removes it"),
    delay_days: int | None = typer.Option(None),
    auth_mode: str | None = AUTH_MODE_OPTION, signature_scheme: str | None = SCHEME_OPTION,
    url: str | None = URL_OPTION,
) -> None:
    """Change an automation: only what is given changes."""
    body = _automation_body(file, name=name, survey_id=survey_id, message_id=message_id,
                            email_field=email_field, include=include, exclude=exclude,
                            mapping=mapping, filters=filters, delay_days=delay_days,
                            auth_mode=auth_mode, signature_scheme=signature_scheme)
    if "authentication" in body and (auth_mode is None or signature_scheme is None):
        # The API replaces `authentication` as a whole: keep what was not given.
        current = _call("GET", f"/v1/automations/{_seg(automation_id)}", url)
        auth = current.get("authentication") or {}
        body["authentication"].setdefault("mode", auth.get("mode", "key"))
        body["authentication"].setdefault("signature_scheme",
                                          auth.get("signature_scheme", "standard"))
    if not body:
        raise typer.BadParameter("nothing to change: give --file or an option")
    _print(_call("PATCH", f"/v1/automations/{_seg(automation_id)}", url, body))


@automations_app.command("delete")
def delete(automation_id: str, yes: bool = YES_OPTION, url: str | None = URL_OPTION) -> None:
    """Delete an automation (its webhook answers 404 from then on)."""
    _confirm(f"automation {automation_id}", yes)
    _call("DELETE", f"/v1/automations/{_seg(automation_id)}", url)
    typer.echo(f"{automation_id} deleted")


@automations_app.command("enable")
def enable(automation_id: str, url: str | None = URL_OPTION) -> None:
    """Enable an automation (clears the disabled reason)."""
    a = _call("POST", f"/v1/automations/{_seg(automation_id)}/enable", url)
    typer.echo(f"{a['id']} enabled (version {a['version']})")


@automations_app.command("disable")
def disable(automation_id: str, reason: str | None = typer.Option(None),
            url: str | None = URL_OPTION) -> None:
    """Disable an automation; ingress then answers 409 for it."""
    a = _call("POST", f"/v1/automations/{_seg(automation_id)}/disable", url,
              {"reason": reason} if reason else None)
    typer.echo(f"{a['id']} disabled (version {a['version']})")


@automations_app.command("rotate-key")
def rotate_key(automation_id: str, url: str | None = URL_OPTION) -> None:
    """A new API key (shown this once); the old one works until the grace period ends."""
    r = _call("POST", f"/v1/automations/{_seg(automation_id)}/keys", url)
    typer.echo(f"new API key: {r['api_key']}")
    if r.get("previous_keys_expire_at"):
        typer.echo(f"the previous key works until {r['previous_keys_expire_at']}")


@automations_app.command("rotate-secret")
def rotate_secret(automation_id: str,
                  secret: str | None = typer.Option(None, help="The sender's own secret "
                                                    "(Stripe, Shopify); else one is made"),
                  url: str | None = URL_OPTION) -> None:
    """A new webhook signing secret (shown this once); signatures with the old one verify
    until the grace period ends."""
    r = _call("POST", f"/v1/automations/{_seg(automation_id)}/signing-secrets", url,
              {"secret": secret} if secret is not None else None)
    typer.echo(f"new signing secret: {r['signing_secret']}")
    if r.get("previous_secrets_expire_at"):
        typer.echo(f"the previous secret verifies until {r['previous_secrets_expire_at']}")


@automations_app.command("recipients")
def recipients(
    automation_id: str,
    add: list[str] | None = typer.Option(None, "--add", help="Add this address (repeat)"),
    remove: list[str] | None = typer.Option(None, "--remove", help="Remove this address"),
    set_: list[str] | None = typer.Option(None, "--set", help="Replace the list (repeat)"),
    on: bool | None = typer.Option(None, "--on/--off", help="Error notifications on or off"),
    as_json: bool = JSON_OPTION, url: str | None = URL_OPTION,
) -> None:
    """Show the error recipients, or change them (the change applies to the next alert)."""
    path = f"/v1/automations/{_seg(automation_id)}"
    notes = _call("GET", path, url)["error_notifications"]
    if add or remove or set_ is not None or on is not None:
        wanted = list(set_) if set_ else list(notes["recipients"])
        wanted += [x for x in add or [] if x not in wanted]
        wanted = [x for x in wanted if x not in (remove or [])]
        enabled = notes["enabled"] if on is None else on
        if enabled and not wanted:
            enabled = False  # nobody left to tell: notifications go off rather than fail
        notes = _call("PATCH", path, url, {"error_notifications": {
            "enabled": enabled, "recipients": wanted}})["error_notifications"]
    if as_json:
        _print(notes)
        return
    state = "on" if notes["enabled"] else "off"
    typer.echo(f"error notifications {state}: {', '.join(notes['recipients']) or 'nobody'}")


@automations_app.command("errors")
def errors(automation_id: str,
           kind: str | None = typer.Option(None, help="Only errors of this kind"),
           limit: int = typer.Option(50, min=1, max=1000, help="At most this many, newest "
                                     "first"),
           as_json: bool = JSON_OPTION, url: str | None = URL_OPTION) -> None:
    """The automation's recent errors (the pipeline's, and the ingress's counts of refused
    requests), newest first."""
    page = _call("GET", f"/v1/automations/{_seg(automation_id)}/errors", url,
                 params={"kind": kind, "limit": limit})
    if as_json:
        _print(page["items"])
        return
    if not page["items"]:
        typer.echo("no errors")
    for e in page["items"]:
        times = f" x{e['count']}" if e.get("count", 1) != 1 else ""
        where = f" field {e['field']}" if e.get("field") else ""
        typer.echo(f"{e['at']}  {e['source']}  {e['kind']}{times}{where}: {e['detail']}")


@automations_app.command("dry-run")
def dry_run(automation_id: str,
            sample: Path = typer.Argument(..., help="A sample body: a JSON object, an array "
                                          "of objects, or NDJSON ('-' reads stdin)"),
            ndjson: bool = typer.Option(False, "--ndjson", help="The sample is NDJSON (default:"
                                        " by the file name's .ndjson/.jsonl, else JSON)"),
            as_json: bool = JSON_OPTION, url: str | None = URL_OPTION) -> None:
    """What the automation as saved would do with a sample (the domain's dry run on its
    snapshot, through the admin API: no integrator key needed, nothing is sent)."""
    raw = sys.stdin.buffer.read() if str(sample) == "-" else sample.read_bytes()
    nd = ndjson or sample.suffix in (".ndjson", ".jsonl")
    answer = _call("POST", f"/v1/automations/{_seg(automation_id)}/dry-run", url,
                   content=raw, content_type="application/x-ndjson" if nd
                   else "application/json")
    if as_json:
        _print(answer)
        return
    run = answer["dry_run"]
    s = run["summary"]
    typer.echo(f"{s['records']} record(s): {s['accepted']} accepted, {s['filtered_out']} "
               f"filtered out, {s['rejected']} rejected")
    for p in run["configuration_problems"]:
        typer.echo(f"configuration problem: {p}")
    for r in run["records"]:
        line = f"record {r['index']}: {r['outcome']}"
        if r["outcome"] == "filtered_out" and r["filters"].get("failed"):
            line += f" ({r['filters']['failed']})"
        if r.get("email"):
            line += f", email {r['email']}"
        if r["variables"]:
            line += ", " + ", ".join(f"{k}={v!r}" for k, v in r["variables"].items())
        typer.echo(line)
        for e in r["errors"]:
            typer.echo(f"  error {e.get('kind') or e.get('code')}: {e.get('detail')}")
