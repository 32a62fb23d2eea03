"""`hookstream up`: the whole pipeline on one machine, for `make run`.

Starts the local Kafka (unless HOOKSTREAM_KAFKA_BOOTSTRAP names a cluster), an SMTP sink
writing `.eml` files under var/mail/, the admin API, ingress, streams worker, notifier and
survey page as child processes, each waited for on its `/readyz`; seeds a demo automation;
prints how to try it; and on Ctrl-C stops every child (by pid, newest first) and the broker
it started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import typer

from core.settings import Settings, get_settings
from hookstream.local.kafka import LocalKafka


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path


@dataclass
class Stack:
    settings: Settings
    children: list[Child] = field(default_factory=list)
    kafka: LocalKafka | None = None
    env: dict[str, str] = field(default_factory=dict)  # what every child gets on top

    def spawn(self, name: str, *args: str, env: dict[str, str] | None = None) -> Child:
        log_dir = self.settings.var_dir / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        log = log_dir / f"{name}.log"
        out = open(log, "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen([sys.executable, "-m", "hookstream.cli", *args],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, **self.env, **(env or {})})
        out.close()
        child = Child(name, proc, log)
        self.children.append(child)
        return child

    def wait_http(self, child: Child, url: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if child.proc.poll() is not None:
                raise RuntimeError(f"{child.name} exited with status {child.proc.returncode}; "
                                   f"see {child.log}:\n{_tail(child.log)}")
            try:
                if httpx.get(url, timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass  # not listening yet: poll again
            time.sleep(0.2)
        raise RuntimeError(f"{child.name} was not ready at {url} within {timeout:.0f}s; "
                           f"see {child.log}:\n{_tail(child.log)}")

    def stop(self) -> None:
        for child in reversed(self.children):
            if child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        for child in reversed(self.children):
            try:
                child.proc.wait(20)
            except subprocess.TimeoutExpired:
                child.proc.kill()
                child.proc.wait()
        self.children.clear()
        if self.kafka is not None:
            self.kafka.stop()
            self.kafka = None


def _tail(path: Path, n: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError as exc:
        return f"(no log: {exc})"


def _demo_automation(s: Settings) -> tuple[str, str]:
    """The demo automation's id and a fresh API key (keys are stored hashed, so a restart
    rotates the demo key rather than reading an old one back)."""
    from control_plane.demo import seed_demo

    token = s.admin_token.get_secret_value()
    marker = s.var_dir / "demo-automation-id"
    if marker.exists():
        automation_id = marker.read_text().strip()
        r = httpx.post(f"{s.admin_url}/v1/automations/{automation_id}/keys",
                       headers={"Authorization": f"Bearer {token}"}, timeout=10)
        if r.status_code == 201 or r.status_code == 200:
            return automation_id, r.json()["api_key"]
    automation_id, key = seed_demo(s.admin_url, token)
    marker.write_text(automation_id)
    return automation_id, key


def _apply_topics(s: Settings) -> None:
    """The topic plan, once, before the services start (they would each apply it): drift is
    shown here; with HOOKSTREAM_KAFKA_CREATE_TOPICS off a missing topic stops `up`."""
    import asyncio

    from core.kafka.plan import ensure_plan

    try:
        report = asyncio.run(ensure_plan(s))
    except Exception as exc:
        raise RuntimeError(f"cannot apply the topic plan: {exc}") from exc
    for d in report.drift:
        typer.secho(f"topic drift: {d} (hookstream topics apply)", fg="yellow", err=True)
    if report.missing:
        raise RuntimeError(f"missing topics {', '.join(report.missing)} and "
                           "HOOKSTREAM_KAFKA_CREATE_TOPICS is off: run hookstream topics apply")


def run_stack(s: Settings, *, block: bool = True) -> Stack:
    s.var_dir.mkdir(parents=True, exist_ok=True)
    stack = Stack(s)
    try:
        if "HOOKSTREAM_KAFKA_BOOTSTRAP" not in os.environ:
            kafka = LocalKafka(s.var_dir / "kafka", port=s.kafka_port,
                               controller_port=s.kafka_controller_port)
            if kafka.state() is None:  # ours to stop on Ctrl-C; one already running is not
                typer.echo("starting Apache Kafka …")
                stack.kafka = kafka
            kafka.start()
            # The services dial the broker we run, whatever port it was given.
            stack.env["HOOKSTREAM_KAFKA_BOOTSTRAP"] = kafka.bootstrap
        local = stack.env.get("HOOKSTREAM_KAFKA_BOOTSTRAP")
        _apply_topics(s.model_copy(update={"kafka_bootstrap": local}) if local else s)
        sink = stack.spawn("smtp-sink", "smtp-sink", "--dir", str(s.var_dir / "mail"))
        admin = stack.spawn("admin", "admin")
        stack.wait_http(admin, f"http://{s.admin_host}:{s.admin_port}/readyz")
        automation_id, key = _demo_automation(s)
        ingress = stack.spawn("ingress", "ingress")
        worker = stack.spawn("worker", "worker")
        notifier = stack.spawn("notifier", "notifier")
        survey = stack.spawn("survey-page", "survey-page")
        stack.wait_http(ingress, f"http://{s.ingress_host}:{s.ingress_port}/readyz")
        stack.wait_http(worker, f"http://127.0.0.1:{s.worker_port}/readyz")
        stack.wait_http(notifier, f"http://127.0.0.1:{s.notifier_port}/readyz")
        stack.wait_http(survey, f"http://{s.survey_host}:{s.survey_port}/readyz")
        if sink.proc.poll() is not None:
            raise RuntimeError(f"the SMTP sink exited; see {sink.log}")
    except BaseException:
        stack.stop()
        raise
    url = f"http://{s.ingress_host}:{s.ingress_port}/v1/hooks/{automation_id}"
    typer.echo(f"""
hookstream is running.
  webhook URL : {url}
  API key     : {key}   (shown once; stored hashed)
  admin API   : {s.admin_url}  (Bearer $HOOKSTREAM_ADMIN_TOKEN)
  survey page : {s.survey_base_url.rstrip("/")}/<token>  (the link in each invitation)
  console     : {s.admin_url}/console  (sign in with $HOOKSTREAM_ADMIN_TOKEN)
  mail sink   : {s.var_dir / "mail"}/*.eml
  logs        : {s.var_dir / "logs"}/

Try it (a mail appears under {s.var_dir / "mail"} within seconds):
curl -sS -X POST '{url}' -H 'X-API-Key: {key}' -H 'Content-Type: application/json' \
-d '{{"email": "ada@example.com", "first_name": "Ada", "city": "Utrecht", "plan": "pro"}}'

Ctrl-C stops everything.""", color=False)
    sys.stdout.flush()
    if block:
        _block_until_signal(stack)
    return stack


def _block_until_signal(stack: Stack) -> None:
    stopping = False

    def _stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        while not stopping:
            for child in stack.children:
                if child.proc.poll() is not None:
                    typer.secho(f"{child.name} exited (status {child.proc.returncode}); see "
                                f"{child.log}; stopping everything", fg="red", err=True)
                    stopping = True
            time.sleep(0.3)
    finally:
        typer.echo("stopping …")
        stack.stop()
        typer.echo("stopped.")


def register(app: typer.Typer) -> None:
    @app.command("up")
    def up() -> None:
        """Run the whole pipeline on this machine (what `make run` calls)."""
        try:
            run_stack(get_settings())
        except RuntimeError as exc:
            typer.secho(f"error: {exc}", fg="red", err=True)
            raise typer.Exit(1) from exc
