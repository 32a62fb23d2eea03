"""The benchmark's SMTP server: aiosmtpd (the same `SmtpSink`/Controller as `hookstream
smtp-sink`, a real SMTP session per connection), with a lean handler that keeps each mail's
acceptance time and Message-ID in memory instead of writing an .eml file per mail.

Why lean: writing a file per mail and aiosmtpd's INFO log line per command cost about a
quarter of the sink's CPU (py-spy), and on two cores the sink, not the notifier, is the
bottleneck of the mails/s figure. What the notifier does is unchanged by this.

Run as its own process (so the benchmark's own load cannot skew its clock):
`python bench/notifier_sink.py --port P --out FILE`; every 0.2 s it appends
`<accepted epoch ns> <message-id or ->` lines to FILE, and it stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import re
import signal
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aiosmtpd import smtp as aiosmtpd_smtp  # noqa: E402
from aiosmtpd.smtp import SMTP, Envelope, Session  # noqa: E402

from hookstream.local.smtp_sink import SmtpSink  # noqa: E402

_MSGID = re.compile(rb"^Message-ID:\s*<([^>\r\n]+)>", re.MULTILINE | re.IGNORECASE)


def _getaddr(self: SMTP, arg: str) -> tuple[str | None, str | None]:
    """aiosmtpd's `SMTP._getaddr` (1.4) without the `typing.Protocol` class it defines on
    every call for its type hints: creating that class was a tenth of the sink's CPU (py-spy,
    issue 17). The parsing (the stdlib's address parser) and the checks are the same."""
    if not arg:
        return "", ""
    try:
        if arg.lstrip().startswith("<"):
            address, rest = aiosmtpd_smtp.get_angle_addr(arg)
        else:
            address, rest = aiosmtpd_smtp.get_addr_spec(arg)
    except aiosmtpd_smtp.HeaderParseError:
        return None, None
    addr = address.addr_spec
    localpart = addr.rpartition("@")[0]
    if self.local_part_limit and len(localpart) > self.local_part_limit:
        return None, None
    return addr, rest


class CountingHandler:
    """aiosmtpd handler: accepts every mail, notes (time, Message-ID) in memory."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._new: list[tuple[int, bytes]] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        at = time.time_ns()
        content = envelope.original_content or b""
        m = _MSGID.search(content, 0, 4096)
        with self._lock:
            self._new.append((at, m.group(1) if m else b"-"))
        return "250 Message accepted for delivery"

    def drain(self) -> list[tuple[int, bytes]]:
        with self._lock:
            out, self._new = self._new, []
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    # aiosmtpd logs every command at INFO ("mail.log"): CPU spent on text nobody reads.
    logging.basicConfig(level=logging.WARNING)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    handler = CountingHandler()
    SMTP._getaddr = _getaddr  # type: ignore[method-assign]  # this process only: the bench's
    sink = SmtpSink(None, port=args.port, handler=handler).start()
    try:
        with args.out.open("ab") as out:
            while not stop.wait(0.2):
                batch = handler.drain()
                if batch:
                    out.write(b"".join(b"%d %s\n" % (at, mid) for at, mid in batch))
                    out.flush()
            out.write(b"".join(b"%d %s\n" % (at, mid) for at, mid in handler.drain()))
    finally:
        sink.stop()


if __name__ == "__main__":
    main()
