"""`hookstream admin` (serve the admin API) and `hookstream automations ...` for operators.

The operator commands talk to a running admin API over HTTP with the admin token
(HOOKSTREAM_ADMIN_URL, HOOKSTREAM_ADMIN_TOKEN); they print the API's JSON answers.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import httpx
import typer

from core.settings import get_settings

automations_app = typer.Typer(no_args_is_help=True,
                              help="Manage incoming-webhook automations via the admin API.")

URL_OPTION = typer.Option(None, "--url", help="Admin API base URL (default HOOKSTREAM_ADMIN_URL)")


def register(app: typer.Typer) -> None:
    app.command("admin")(admin)
    app.add_typer(automations_app, name="automations")


def admin(
    host: str | None = typer.Option(None, help="Bind address (default HOOKSTREAM_ADMIN_HOST)"),
    port: int | None = typer.Option(None, help="Port (default HOOKSTREAM_ADMIN_PORT)"),
    log_level: str = typer.Option("info", help="uvicorn log level"),
) -> None:
    """Serve the admin API (control plane): migrations, topics, republish, then HTTP."""
    import uvicorn

    from control_plane.api import create_app

    s = get_settings()
    uvicorn.run(create_app(s), host=host or s.admin_host, port=port or s.admin_port,
                log_level=log_level)


def _call(method: str, path: str, url: str | None, body: Any = None) -> Any:
    s = get_settings()
    try:
        with httpx.Client(base_url=url or s.admin_url, timeout=30.0, headers={
                "Authorization": f"Bearer {s.admin_token.get_secret_value()}"}) as c:
            r = c.request(method, path, json=body)
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


def _print(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False))


def _mapping(entries: list[str]) -> list[dict[str, str | None]]:
    out: list[dict[str, str | None]] = []
    for entry in entries:
        field, sep, variable = entry.partition("=")
        if not sep or not field:
            raise typer.BadParameter(f"{entry!r}: use FIELD=VARIABLE, or FIELD=- to skip")
        out.append({"field": field, "variable": None if variable in ("", "-") else variable})
    return out


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
    url: str | None = URL_OPTION,
) -> None:
    """Create an automation; prints it with its API key (shown this once)."""
    body: dict[str, Any] = {}
    if file is not None:
        text = sys.stdin.read() if str(file) == "-" else file.read_text()
        body = json.loads(text)
    given = {"name": name, "survey_id": survey_id, "message_id": message_id,
             "email_field": email_field, "delay_days": delay_days}
    body.update({k: v for k, v in given.items() if v is not None})
    if include and exclude:
        raise typer.BadParameter("use --include or --exclude, not both")
    if include or exclude:
        body["fields"] = {"mode": "include" if include else "exclude",
                          "paths": list(include or exclude or [])}
    body.setdefault("fields", {"mode": "exclude", "paths": []})
    if mapping:
        body["mapping"] = _mapping(mapping)
    if filters is not None:
        body["filters"] = json.loads(filters)
    if disabled:
        body["enabled"] = False
    if error_recipient:
        body["error_notifications"] = {"enabled": True, "recipients": list(error_recipient)}
    _print(_call("POST", "/v1/automations", url, body))


@automations_app.command("list")
def list_(url: str | None = URL_OPTION) -> None:
    """One line per automation: id, status, name."""
    path = "/v1/automations?limit=500"
    while True:
        page = _call("GET", path, url)
        for a in page["items"]:
            status = "enabled " if a["enabled"] else "disabled"
            typer.echo(f"{a['id']}  {status}  v{a['version']}  {a['name']}")
        if not page.get("next_cursor"):
            return
        path = f"/v1/automations?limit=500&cursor={page['next_cursor']}"


@automations_app.command("show")
def show(automation_id: str, url: str | None = URL_OPTION) -> None:
    """Every setting of one automation (JSON)."""
    _print(_call("GET", f"/v1/automations/{automation_id}", url))


@automations_app.command("enable")
def enable(automation_id: str, url: str | None = URL_OPTION) -> None:
    """Enable an automation (clears the disabled reason)."""
    a = _call("POST", f"/v1/automations/{automation_id}/enable", url)
    typer.echo(f"{a['id']} enabled (version {a['version']})")


@automations_app.command("disable")
def disable(automation_id: str, reason: str | None = typer.Option(None),
            url: str | None = URL_OPTION) -> None:
    """Disable an automation; ingress then answers 409 for it."""
    a = _call("POST", f"/v1/automations/{automation_id}/disable", url,
              {"reason": reason} if reason else None)
    typer.echo(f"{a['id']} disabled (version {a['version']})")


@automations_app.command("rotate-key")
def rotate_key(automation_id: str, url: str | None = URL_OPTION) -> None:
    """A new API key (shown this once); the old one works until the grace period ends."""
    r = _call("POST", f"/v1/automations/{automation_id}/keys", url)
    typer.echo(f"new API key: {r['api_key']}")
    if r.get("previous_keys_expire_at"):
        typer.echo(f"the previous key works until {r['previous_keys_expire_at']}")
