"""core/logs.py: access-log targets without secrets; repeated warnings collapsed with a count;
and a real outage (the notifier pointed at a port nobody listens on) that writes a handful of
lines, not one per connection attempt."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from core.logs import (
    AccessLogRedactor,
    RepeatFilter,
    install_repeat_filter,
    redact_target,
)
from hookstream.local.kafka import LocalKafka, free_port
from hookstream.local.smtp_sink import SmtpSink
from tests.support.processes import stop

OUTAGE = 12.0


@pytest.mark.parametrize(("target", "logged"), [
    ("/s/AbCdEfGhIjKlMnOpQrSt", "/s/[redacted]"),
    ("/s/AbCdEfGhIjKlMnOpQrSt?x=1", "/s/[redacted]?[redacted]"),
    ("/v1/hooks/a1?api_key=sekrit", "/v1/hooks/a1?[redacted]"),
    ("/v1/automations", "/v1/automations"),
    ("/s", "/s"),
    ("/survey-results", "/survey-results"),  # a prefix, not a path segment: kept
])
def test_redact_target(target: str, logged: str) -> None:
    assert redact_target(target, ["/s"]) == logged


def test_access_log_redactor_rewrites_uvicorns_target_argument() -> None:
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1,
                               '%s - "%s %s HTTP/%s" %d', ("127.0.0.1:5", "GET",
                                                          "/s/tok3n-tok3n-tok3n?k=v", "1.1",
                                                          404), None)
    assert AccessLogRedactor(["/s/"]).filter(record)
    assert record.getMessage() == '127.0.0.1:5 - "GET /s/[redacted]?[redacted] HTTP/1.1" 404'


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _record(msg: str, *args: object, level: int = logging.WARNING,
            name: str = "aiokafka.conn") -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_repeat_filter_collapses_one_call_site_per_interval_and_reports_the_count() -> None:
    clock = _Clock()
    f = RepeatFilter(interval=10.0, clock=clock)
    first = _record("Unable connect to %s: %s", "node-1", "Connection refused")
    assert f.filter(first)
    passed = 0
    for i in range(500):
        clock.now += 0.01
        passed += f.filter(_record("Unable connect to %s: %s", f"node-{i % 3}", "refused"))
    assert passed == 0
    # Another call site, and records below WARNING, are not held back.
    assert f.filter(_record("Heartbeat failed: %s", "x"))
    assert f.filter(_record("Unable connect to %s: %s", "n", "r", level=logging.INFO))
    clock.now += 10.0
    after = _record("Unable connect to %s: %s", "node-2", "Connection refused")
    assert f.filter(after)
    assert after.getMessage() == ("Unable connect to node-2: Connection refused "
                                  "(repeated 500 times in the last 15 s)")
    # The count starts again: the next one inside the new interval is held back.
    clock.now += 1.0
    assert not f.filter(_record("Unable connect to %s: %s", "node-2", "Connection refused"))


def test_a_collapsed_record_formats_under_fausts_formatter() -> None:
    """Faust's workers log through mode's formatter, which wraps non-tuple args as `(args,)`:
    the line with the count must still format (it once became a `--- Logging error ---`)."""
    from mode.utils.logging import ExtensionFormatter

    clock = _Clock()
    f = RepeatFilter(interval=10.0, clock=clock)
    assert f.filter(_record("Heartbeat failed for group %s", "g"))
    clock.now += 1.0
    assert not f.filter(_record("Heartbeat failed for group %s", "g"))
    clock.now += 10.0
    record = _record("Heartbeat failed for group %s", "g")
    assert f.filter(record)
    line = ExtensionFormatter(fmt="%(message)s").format(record)
    assert line == "Heartbeat failed for group g (repeated 1 times in the last 11 s)"


def test_install_reaches_child_loggers_that_exist() -> None:
    child = logging.getLogger("hookstream_test_lib.deep.child")
    shared = install_repeat_filter(["hookstream_test_lib"], interval=60.0)
    try:
        assert shared in child.filters
        assert shared in logging.getLogger("hookstream_test_lib").filters
        assert shared not in logging.getLogger("hookstream_test_other").filters
    finally:
        child.removeFilter(shared)
        logging.getLogger("hookstream_test_lib").removeFilter(shared)


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.kafka
def test_a_broker_outage_is_a_handful_of_lines_with_the_count(own_kafka: LocalKafka,
                                                               tmp_path: Path,
                                                               topic_prefix: str) -> None:
    """The outage of issue 15 (48,844 "Connection refused" lines from one notifier): the
    notifier (its real entry point) runs, the broker stops for OUTAGE seconds; the lines it
    writes meanwhile are few, and a later one says how many were held back."""
    interval = 3.0
    port = free_port()
    env = {**os.environ,
           "HOOKSTREAM_KAFKA_BOOTSTRAP": own_kafka.bootstrap,
           "HOOKSTREAM_TOPIC_PREFIX": topic_prefix,
           "HOOKSTREAM_TOPIC_PARTITIONS": "1",
           "HOOKSTREAM_DATABASE_URL": f"sqlite:///{tmp_path}/n.db",
           "HOOKSTREAM_NOTIFIER_PORT": str(port),
           "HOOKSTREAM_LOG_REPEAT_SECONDS": str(interval)}
    with SmtpSink(tmp_path / "mail") as smtp:
        env["HOOKSTREAM_SMTP_URL"] = smtp.url
        log_file = tmp_path / "notifier.log"
        with log_file.open("wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "hookstream.cli", "notifier"],
                                    cwd=tmp_path, env=env, stdout=out,
                                    stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 90
            while not _ready(port):
                assert proc.poll() is None, log_file.read_text()
                assert time.monotonic() < deadline, log_file.read_text()
                time.sleep(0.3)
            before = len(log_file.read_text(errors="replace").splitlines())
            own_kafka.stop()
            time.sleep(OUTAGE)
            assert proc.poll() is None, log_file.read_text()  # an outage is waited out
        finally:
            stop(proc)
    # Log records, not lines: a traceback at shutdown (aiokafka leaving its group with the
    # broker gone) is one record of many lines.
    during = [line for line in log_file.read_text(errors="replace").splitlines()[before:]
              if re.match(r"\d{4}-\d\d-\d\d ", line)]
    text = "\n".join(during)
    print(f"{len(during)} records during a {OUTAGE:.0f} s outage:\n{text}")
    assert any("refused" in line.lower() or "unable" in line.lower() for line in during), text
    assert any("repeated" in line for line in during), text
    assert len(during) <= 40, text
