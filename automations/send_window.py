"""Send windows: when an automation's invitations may go out, as a pure function of time.

A window (`snapshot.SendWindow`) is open at an instant when, on the local clock of its time
zone, the time of day is in [start, end) and the day of the week is one of `days`. The zone is
the respondent's (the IANA name in the window's mapped field, when the record has a valid one)
or else the automation's. `WindowRule.release_ms(t)` is the first instant at or after `t` at
which the window is open: `t` itself when it is open, else the moment it opens.

Time zones come from `zoneinfo` (the IANA database), and the computation is exact around
daylight-saving changes: the local clock is a piecewise-linear function of time, constant in
offset between two transitions, so the search walks those pieces. In a piece the next opening
is plain arithmetic on the local clock; when a transition comes first, the search goes on
from it. So a window opening at 02:30 on the night the clock jumps from 02:00 to 03:00 opens
at 03:00 (the first instant whose local time is past 02:30), a wall time that occurs twice
(clocks going back) opens at its first occurrence, and a window the clock re-enters when it
goes back reopens at that moment.

Scaled days (`HOOKSTREAM_DAY_SECONDS` = D, below 86400 for tests and demos): a D-second span
of real time is one whole day of the window. The real instant t (ms since the Unix epoch)
reads as the *scaled instant* t x 86400 / D, folded into the 400-year Gregorian cycle that
starts at 1970-01-01 UTC (146097 days: dates and weekdays repeat with that cycle, so the fold
keeps them consistent and the date within Python's range); the window is computed there, in
its zone, with the zone's rules of that scaled date, and the wait until it opens is scaled
back by D / 86400 and rounded up to the next millisecond. `scaled_ms` is that reading.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Mapping
from datetime import UTC, datetime
from fractions import Fraction
from functools import cache
from typing import Any

from automations.snapshot import WEEKDAYS, SendWindow

DAY_MS = 86_400_000
REAL_DAY_SECONDS = 86_400.0
CYCLE_MS = 146_097 * DAY_MS  # 400 Gregorian years
_EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday (Monday is 0)
_PROBE_MS = 6 * 3_600_000  # offsets are probed this far apart for a transition
_MAX_PIECES = 64  # transitions a search may cross (a week holds at most a few)
# Names in the zone database that are no place's time: the machine's own setting, a template.
_NOT_ZONES = frozenset({"localtime", "posixrules", "Factory"})


class WindowError(ValueError):
    """A send window that cannot be used (validation reports these before it is saved)."""


@cache
def _zone_names() -> dict[str, str]:
    """Lower-case name -> IANA name of every zone (read once: the scan takes ~0.1 s)."""
    return {n.lower(): n for n in zoneinfo.available_timezones() if n not in _NOT_ZONES}


def zone_named(name: Any) -> zoneinfo.ZoneInfo | None:
    """The zone of an IANA name (any case, surrounding blanks ignored); None if it names none."""
    if not isinstance(name, str) or not 0 < len(name) <= 64:
        return None
    key = _zone_names().get(name.strip().lower())
    return None if key is None else zoneinfo.ZoneInfo(key)


def minutes_of(hhmm: Any) -> int | None:
    """Minutes since midnight of "HH:MM" (00:00 to 24:00); None when it is not such a time."""
    if not isinstance(hhmm, str) or len(hhmm) != 5 or hhmm[2] != ":":
        return None
    hh, mm = hhmm[:2], hhmm[3:]
    if not (hh.isdigit() and mm.isdigit() and hh.isascii() and mm.isascii()):
        return None
    h, m = int(hh), int(mm)
    if m > 59 or h > 24 or (h == 24 and m != 0):
        return None
    return h * 60 + m


def window_problems(w: Any) -> list[tuple[str, str]]:
    """(sub-path, reason) of everything wrong with a window's own settings."""
    problems: list[tuple[str, str]] = []
    days = getattr(w, "days", None)
    if not isinstance(days, list | tuple) or not days:
        problems.append(("days", "name at least one day of the week (mon ... sun)"))
    else:
        unknown = [d for d in days if d not in WEEKDAYS]
        if unknown:
            problems.append(("days", f"unknown day {unknown[0]!r}; days are "
                                     f"{', '.join(WEEKDAYS)}"))
        elif len(set(days)) != len(days):
            problems.append(("days", "each day may be named once"))
    start, end = minutes_of(getattr(w, "start", None)), minutes_of(getattr(w, "end", None))
    if start is None or start == 24 * 60:
        problems.append(("start", "must be a time of day HH:MM from 00:00 to 23:59"))
    if end is None or end == 0:
        problems.append(("end", "must be a time of day HH:MM from 00:01 to 24:00"))
    if start is not None and end is not None and 0 < end <= start < 24 * 60:
        problems.append(("end", "must be after start (a window that runs past midnight is "
                                "two windows: end it at 24:00 and start the next at 00:00)"))
    if zone_named(getattr(w, "time_zone", None)) is None:
        problems.append(("time_zone", "must be an IANA time zone name, like Europe/Amsterdam"))
    return problems


def _offset_ms(zone: zoneinfo.ZoneInfo, t_ms: int) -> int:
    """The zone's UTC offset at instant t (offsets change on whole seconds)."""
    local = datetime.fromtimestamp(t_ms // 1000, zone)
    offset = local.utcoffset()
    assert offset is not None  # a ZoneInfo always has one
    return int(offset.total_seconds() * 1000)


class WindowRule:
    """A send window made ready for many invitations (days, times and zone parsed once)."""

    def __init__(self, window: SendWindow, zone_variable: str | None = None) -> None:
        problems = window_problems(window)
        if problems:
            raise WindowError("; ".join(f"{p}: {r}" for p, r in problems))
        self.window = window
        self.days = frozenset(WEEKDAYS.index(d) for d in window.days)
        self.start_ms = (minutes_of(window.start) or 0) * 60_000
        self.end_ms = (minutes_of(window.end) or 0) * 60_000
        zone = zone_named(window.time_zone)
        assert zone is not None  # checked by window_problems
        self.zone = zone
        self.zone_variable = zone_variable  # the survey variable the respondent's zone is in

    def zone_for(self, variables: Mapping[str, Any]) -> tuple[zoneinfo.ZoneInfo, bool]:
        """The zone of a respondent's invitation, and whether it is the respondent's own."""
        if self.zone_variable is not None:
            own = zone_named(variables.get(self.zone_variable))
            if own is not None:
                return own, True
        return self.zone, False

    # -- the local clock ------------------------------------------------------------------

    def open_on_wall(self, wall_ms: int) -> bool:
        """Whether a local time (ms since 1970-01-01 00:00 on the local clock) is in the window."""
        day, time_of_day = divmod(wall_ms, DAY_MS)
        return ((day + _EPOCH_WEEKDAY) % 7 in self.days
                and self.start_ms <= time_of_day < self.end_ms)

    def _next_open_wall(self, wall_ms: int) -> int:
        """The first local time at or after `wall_ms` in the window, if the offset held."""
        if self.open_on_wall(wall_ms):
            return wall_ms
        day = wall_ms // DAY_MS
        for d in range(day, day + 8):  # a week later at the latest: days is not empty
            opens = d * DAY_MS + self.start_ms
            if (d + _EPOCH_WEEKDAY) % 7 in self.days and opens > wall_ms:
                return opens
        raise WindowError("a window without days never opens")  # pragma: no cover

    # -- instants -------------------------------------------------------------------------

    def is_open(self, t_ms: int, zone: zoneinfo.ZoneInfo | None = None) -> bool:
        zone = zone or self.zone
        return self.open_on_wall(t_ms + _offset_ms(zone, t_ms))

    def next_open(self, t_ms: int, zone: zoneinfo.ZoneInfo | None = None) -> int:
        """The first instant at or after t (ms since the Unix epoch) at which it is open."""
        zone = zone or self.zone
        for _ in range(_MAX_PIECES):
            offset = _offset_ms(zone, t_ms)
            candidate = self._next_open_wall(t_ms + offset) - offset
            change = _first_change(zone, t_ms, candidate, offset)
            if change is None:
                return candidate
            t_ms = change  # the clock jumps first: go on from the jump, with the new offset
        raise WindowError("no opening found across too many clock changes")  # pragma: no cover

    def release_ms(self, t_ms: int, zone: zoneinfo.ZoneInfo | None = None,
                   day_seconds: float = REAL_DAY_SECONDS) -> int:
        """When an invitation due at t may go out: t when the window is open, else its opening;
        under a scaled day, on the scaled clock (see the module's doc)."""
        if day_seconds == REAL_DAY_SECONDS:
            return self.next_open(t_ms, zone)
        speed = Fraction(REAL_DAY_SECONDS) / Fraction(day_seconds)
        scaled = scaled_ms(t_ms, day_seconds)
        wait = Fraction(self.next_open(scaled, zone) - scaled) / speed
        return t_ms + -(-wait.numerator // wait.denominator)  # rounded up: never early


def scaled_ms(t_ms: int, day_seconds: float) -> int:
    """The scaled instant a real instant reads as under a day of `day_seconds` (module doc)."""
    if day_seconds == REAL_DAY_SECONDS:
        return t_ms
    return int(Fraction(t_ms) * Fraction(REAL_DAY_SECONDS) / Fraction(day_seconds)) % CYCLE_MS


def scaled_datetime(t_ms: int, day_seconds: float, zone: zoneinfo.ZoneInfo) -> datetime:
    """The local date and time on the window's clock at real instant t (for people and tests)."""
    return datetime.fromtimestamp(scaled_ms(t_ms, day_seconds) / 1000, UTC).astimezone(zone)


def _first_change(zone: zoneinfo.ZoneInfo, start_ms: int, end_ms: int,
                  offset: int) -> int | None:
    """The first whole second in (start, end] at which the zone's offset is not `offset`."""
    lo = start_ms
    while lo < end_ms:
        hi = min(lo + _PROBE_MS, end_ms)
        if _offset_ms(zone, hi) != offset:
            # Offsets are constant between whole seconds: bisect on seconds.
            lo_s, hi_s = lo // 1000, hi // 1000
            while hi_s - lo_s > 1:
                mid = (lo_s + hi_s) // 2
                if _offset_ms(zone, mid * 1000) != offset:
                    hi_s = mid
                else:
                    lo_s = mid
            return max(hi_s * 1000, start_ms + 1)
        lo = hi
    return None
