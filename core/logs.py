"""Logging helpers every service shares: nothing secret in an access log line, and a retry
loop that fails for an hour writes a few lines, not fifty thousand.

- `AccessLogRedactor`: a filter for uvicorn's access log that drops the query string (a key
  may travel in it) and the segment after a secret path prefix (the survey link's token under
  `/s/`), so `GET /s/abc…?k=v` is logged as `GET /s/[redacted]?[redacted]`.
- `RepeatFilter`: collapses records from one call site (logger, level, message template)
  within `interval` seconds: the first is written, the rest are counted, and the next one
  written after the interval says "(repeated K times in the last N s)". During a broker
  outage aiokafka logs a "Connection refused" per attempt, several a second per client.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

REDACTED = "[redacted]"

# aiokafka's and kafka-python's loggers (`aiokafka.conn`, `aiokafka.client`, ...) are where
# an outage is written once per attempt; each service adds the loggers of its own retry loops.
KAFKA_LOGGERS = ("aiokafka", "kafka")
DEFAULT_REPEAT_INTERVAL = 30.0


def redact_target(target: str, secret_prefixes: Iterable[str] = ()) -> str:
    """A request target fit for a log: no query string, no segment after a secret prefix."""
    path, sep, _query = target.partition("?")
    for prefix in secret_prefixes:
        base = prefix.rstrip("/") + "/"
        if path.startswith(base) and len(path) > len(base):
            path = base + REDACTED
            break
    return path + ("?" + REDACTED if sep else "")


def path_of(url: str) -> str:
    """The path part of a base URL (`http://host:8084/s` -> `/s`)."""
    return urlsplit(url).path.rstrip("/") or "/"


class AccessLogRedactor(logging.Filter):
    """uvicorn.access records carry (client, method, target, http_version, status) as args;
    the target is rewritten by `redact_target`."""

    def __init__(self, secret_prefixes: Iterable[str] = ()) -> None:
        super().__init__()
        self.prefixes = tuple(p for p in secret_prefixes if p.strip("/"))

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], redact_target(args[2], self.prefixes), *args[3:])
        return True


def redact_access_log(secret_prefixes: Iterable[str] = ()) -> None:
    """Install `AccessLogRedactor` on uvicorn's access logger (before `uvicorn.run` is fine:
    its dictConfig sets the logger's handlers and level and keeps the logger's filters)."""
    logger = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, AccessLogRedactor) for f in logger.filters):
        logger.addFilter(AccessLogRedactor(secret_prefixes))


class RepeatFilter(logging.Filter):
    """Lets the first record of a call site through per `interval`; counts the others and
    appends the count to the next record let through. Thread-safe (aiokafka logs from the
    loop, SQL and SMTP work from threads)."""

    def __init__(self, interval: float = DEFAULT_REPEAT_INTERVAL,
                 clock: Callable[[], float] = time.monotonic,
                 min_level: int = logging.WARNING) -> None:
        super().__init__()
        self.interval = interval
        self.clock = clock
        self.min_level = min_level
        self._seen: dict[tuple[str, int, object], tuple[float, int]] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < self.min_level:
            return True
        key = (record.name, record.levelno, record.msg)
        now = self.clock()
        with self._lock:
            first, suppressed = self._seen.get(key, (None, 0))
            if first is not None and now - first < self.interval:
                self._seen[key] = (first, suppressed + 1)
                return False
            self._seen[key] = (now, 0)
            if len(self._seen) > 10_000:  # message templates are few; a safety bound only
                self._seen = {key: (now, 0)}
        if suppressed:
            record.msg = f"{record.getMessage()} (repeated {suppressed} times in the last " \
                         f"{now - first:.0f} s)"  # type: ignore[operator]
            # Empty, not None: Faust's formatter (mode) wraps a non-tuple as `(args,)`, and
            # `msg % (None,)` fails, losing the line (seen in the chaos suite's broker kill).
            record.args = ()
        return True


def install_repeat_filter(prefixes: Iterable[str] = KAFKA_LOGGERS,
                          interval: float = DEFAULT_REPEAT_INTERVAL) -> RepeatFilter:
    """Attach one `RepeatFilter` to every logger under `prefixes` that exists now (libraries
    create their loggers at import: call this after importing them) and to each prefix's own
    logger. Logger filters do not apply to child loggers' records, hence each one."""
    shared = RepeatFilter(interval)
    names = tuple(prefixes)
    existing = [n for n in list(logging.root.manager.loggerDict)
                if any(n == p or n.startswith(p + ".") for p in names)]
    for name in {*names, *existing}:
        logger = logging.getLogger(name)
        logger.filters = [f for f in logger.filters if not isinstance(f, RepeatFilter)]
        logger.addFilter(shared)
    return shared
