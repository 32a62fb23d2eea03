"""Send windows: the release time is never inside a closed window and never earlier than due,
and it is the window's opening (nothing open is skipped), across daylight-saving changes, in
real and in scaled days. The oracle is zoneinfo's own local time (`datetime.astimezone`),
not the rule's arithmetic on the local clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from automations.send_window import (
    CYCLE_MS,
    WindowError,
    WindowRule,
    minutes_of,
    scaled_datetime,
    scaled_ms,
    window_problems,
    zone_named,
)
from automations.snapshot import WEEKDAYS, SendWindow

AMSTERDAM = ZoneInfo("Europe/Amsterdam")
# Zones with the awkward cases: DST both ways, half-hour DST (Lord Howe), a :45 offset,
# DST changes at midnight (Sao Paulo, historically), a skipped day (Apia, 2011-12-30), a
# southern-hemisphere DST, and none at all.
ZONES = ("Europe/Amsterdam", "America/New_York", "Australia/Lord_Howe", "Asia/Kathmandu",
         "America/Sao_Paulo", "Pacific/Apia", "America/Santiago", "Asia/Tokyo", "UTC")
# 2005 to 2035: history, today's rules and the future the database extrapolates.
T_MIN = int(datetime(2005, 1, 1, tzinfo=UTC).timestamp() * 1000)
T_MAX = int(datetime(2035, 1, 1, tzinfo=UTC).timestamp() * 1000)


def ms(local: str, zone: ZoneInfo = AMSTERDAM) -> int:
    return int(datetime.fromisoformat(local).replace(tzinfo=zone).timestamp() * 1000)


def local(t_ms: int, zone: ZoneInfo = AMSTERDAM) -> datetime:
    return datetime.fromtimestamp(t_ms / 1000, UTC).astimezone(zone)


def window(start: str = "09:00", end: str = "17:00", days: tuple[str, ...] = WEEKDAYS,
           zone: str = "Europe/Amsterdam") -> WindowRule:
    return WindowRule(SendWindow(days, start, end, zone))


def oracle_open(rule: WindowRule, t_ms: int, zone: ZoneInfo) -> bool:
    """Open by zoneinfo's reading of the local time (independent of the rule's arithmetic)."""
    at = local(t_ms, zone)
    minute_of_day = at.hour * 60 + at.minute + (at.second + at.microsecond / 1e6) / 60
    return (WEEKDAYS[at.weekday()] in rule.window.days
            and minutes_of(rule.window.start) <= minute_of_day < minutes_of(rule.window.end))


@st.composite
def windows(draw: st.DrawFn) -> WindowRule:
    days = draw(st.sets(st.sampled_from(WEEKDAYS), min_size=1))
    start = draw(st.integers(0, 24 * 60 - 1))
    end = draw(st.integers(start + 1, 24 * 60))
    return WindowRule(SendWindow(tuple(d for d in WEEKDAYS if d in days),
                                 f"{start // 60:02d}:{start % 60:02d}",
                                 f"{end // 60:02d}:{end % 60:02d}", draw(st.sampled_from(ZONES))))


# Instants near the clock changes are where mistakes hide: pick those often.
TRANSITIONS = [ms("2026-03-29T01:59:00"), ms("2026-10-25T02:30:00"),
               int(datetime(2011, 12, 29, 10, tzinfo=UTC).timestamp() * 1000),
               int(datetime(2024, 4, 6, 15, 30, tzinfo=UTC).timestamp() * 1000)]
instants = st.one_of(st.integers(T_MIN, T_MAX),
                     st.builds(lambda t, d: t + d, st.sampled_from(TRANSITIONS),
                               st.integers(-3 * 86_400_000, 3 * 86_400_000)))


@settings(max_examples=600, deadline=None)
@given(rule=windows(), due=instants, probe=st.floats(0, 1))
@example(rule=window("02:30", "04:00"), due=ms("2026-03-29T00:00"), probe=0.5)  # in the gap
@example(rule=window("01:30", "02:30"), due=ms("2026-10-25T00:40") + 7_200_000, probe=0.5)
@example(rule=window("09:00", "17:00", ("fri",), "Pacific/Apia"),
         due=ms("2011-12-29T18:00", ZoneInfo("Pacific/Apia")), probe=0.3)  # Friday skipped
def test_release_is_open_never_early_and_the_first_opening(rule: WindowRule, due: int,
                                                            probe: float) -> None:
    zone = rule.zone
    release = rule.next_open(due)
    assert release >= due, "released before it was due"
    assert oracle_open(rule, release, zone), \
        f"released at {local(release, zone)}, inside a closed window"
    if release > due:
        # The first opening: a millisecond earlier it was closed, and so at any point between.
        assert not oracle_open(rule, release - 1, zone)
        assert not oracle_open(rule, due, zone)
        between = due + int((release - due) * probe)
        if between < release:
            assert not oracle_open(rule, between, zone), \
                f"open at {local(between, zone)}, before the release at {local(release, zone)}"
        assert release - due <= 15 * 86_400_000  # a week and a skipped day at most


@settings(max_examples=300, deadline=None)
@given(rule=windows(), real=st.integers(T_MIN, T_MAX),
       day_seconds=st.sampled_from([2.0, 12.0, 48.0, 60.0, 3600.0, 43200.0]))
def test_on_a_scaled_day_the_release_is_open_on_the_scaled_clock(
        rule: WindowRule, real: int, day_seconds: float) -> None:
    release = rule.release_ms(real, None, day_seconds)
    assert release >= real
    scaled = scaled_ms(release, day_seconds)
    speed = 86_400 / day_seconds
    if scaled_ms(real, day_seconds) + (release - real) * speed > CYCLE_MS:
        return  # the wait crosses the fold of the 400-year cycle: another calendar there
    # Rounded up to a real millisecond: the scaled release is at most one real ms (speed
    # scaled ms) past the opening, so a window at least that long is open at it.
    if (minutes_of(rule.window.end) - minutes_of(rule.window.start)) * 60_000 > speed + 1:
        assert oracle_open(rule, scaled, rule.zone)
    wait_scaled = rule.next_open(scaled_ms(real, day_seconds)) - scaled_ms(real, day_seconds)
    assert abs((release - real) * speed - wait_scaled) <= speed + 1


def test_23_00_waits_for_09_00_the_next_morning() -> None:
    rule = window()
    assert local(rule.next_open(ms("2026-11-30T23:00"))) == \
        datetime(2026, 12, 1, 9, 0, tzinfo=AMSTERDAM)
    assert rule.next_open(ms("2026-11-30T12:34")) == ms("2026-11-30T12:34")  # open: at once
    assert rule.next_open(ms("2026-11-30T17:00")) == ms("2026-12-01T09:00")  # end is closed


def test_days_of_the_week_are_local_dates() -> None:
    weekdays = window(days=("mon", "tue", "wed", "thu", "fri"))
    # Friday 2026-12-04 18:00 -> Monday 09:00.
    assert local(weekdays.next_open(ms("2026-12-04T18:00"))) == \
        datetime(2026, 12, 7, 9, 0, tzinfo=AMSTERDAM)
    # Saturday 00:30 in Tokyo is still Friday in Amsterdam (UTC+9 vs UTC+1): a Friday-only
    # window in Amsterdam opens that Friday, one in Tokyo a week later.
    tokyo = ZoneInfo("Asia/Tokyo")
    t = ms("2026-12-05T00:30", tokyo)
    fri_ams = window("00:00", "24:00", ("fri",))
    assert fri_ams.next_open(t) == t
    fri_tokyo = window("00:00", "24:00", ("fri",), "Asia/Tokyo")
    assert local(fri_tokyo.next_open(t), tokyo) == datetime(2026, 12, 11, 0, 0, tzinfo=tokyo)


def test_daylight_saving_changes() -> None:
    # Spring forward (02:00 -> 03:00): 02:30 does not exist that night; the window opens at
    # the first instant past it, 03:00 CEST, not an hour later.
    rule = window("02:30", "04:00")
    opened = local(rule.next_open(ms("2026-03-29T00:00")))
    assert (opened.hour, opened.minute, opened.utcoffset()) == (3, 0, timedelta(hours=2))
    # A window the gap swallows whole does not open that day.
    gone = window("02:00", "02:59")
    assert local(gone.next_open(ms("2026-03-29T00:00"))).date().isoformat() == "2026-03-30"
    # Fall back (03:00 CEST -> 02:00 CET): 09:00 the next day is 09:00 CET, 24 h + 1 h later.
    rule = window()
    assert rule.next_open(ms("2026-10-24T17:30")) - ms("2026-10-24T17:30") == \
        (15 * 60 + 30 + 60) * 60_000
    # 02:40 CEST is after a 01:30-02:30 window, but the clock goes back to 02:00 CET twenty
    # minutes later and the window is open again then.
    rule = window("01:30", "02:30")
    t = int(datetime(2026, 10, 25, 0, 40, tzinfo=UTC).timestamp() * 1000)  # 02:40 CEST
    assert local(rule.next_open(t)) == datetime(2026, 10, 25, 2, 0, tzinfo=AMSTERDAM, fold=1)


def test_the_respondents_zone_when_valid_else_the_automations() -> None:
    rule = WindowRule(SendWindow(WEEKDAYS, "09:00", "17:00", "Europe/Amsterdam", "tz"), "tz")
    assert rule.zone_for({"tz": "America/New_York"}) == (ZoneInfo("America/New_York"), True)
    assert rule.zone_for({"tz": " asia/TOKYO "}) == (ZoneInfo("Asia/Tokyo"), True)
    for bad in ("Mars/Olympus", "", "../../etc/passwd", "localtime", 42, None, "x" * 500):
        assert rule.zone_for({"tz": bad}) == (AMSTERDAM, False)
    assert rule.zone_for({}) == (AMSTERDAM, False)
    # 23:00 in Amsterdam is 17:00 in New York: closed there too (17:00 is the end).
    t = ms("2026-11-30T23:00")
    assert local(rule.next_open(t, ZoneInfo("America/New_York")),
                 ZoneInfo("America/New_York")).isoformat() == "2026-12-01T09:00:00-05:00"


def test_a_scaled_day_runs_the_window_on_a_fast_clock() -> None:
    rule = window()
    day = 48.0  # one day in 48 s: an hour is 2 s
    # Wherever the scaled clock stands, the release comes when it reads 09:00-17:00 and no
    # later than a scaled day (48 s) ahead.
    for t in range(ms("2026-11-30T10:00"), ms("2026-11-30T10:00") + 48_000, 1_700):
        release = rule.release_ms(t, None, day)
        assert 0 <= release - t <= 48_000
        at = scaled_datetime(release, day, AMSTERDAM)
        assert 9 <= at.hour < 17
    # At scaled 23:00, ten scaled hours (20 real seconds) to 09:00.
    t = ms("2026-11-30T10:00")
    while scaled_datetime(t, day, AMSTERDAM).hour != 23:
        t += 100
    wait = rule.release_ms(t, None, day) - t
    assert 19_000 < wait <= 20_000
    assert scaled_datetime(t + wait, day, AMSTERDAM).strftime("%H:%M") == "09:00"
    # A real day is not scaled at all.
    assert scaled_ms(t, 86_400.0) == t


@pytest.mark.parametrize(("changes", "where", "fragment"), [
    ({"days": ()}, "days", "at least one day"),
    ({"days": ("mon", "maandag")}, "days", "unknown day 'maandag'"),
    ({"days": ("mon", "mon")}, "days", "once"),
    ({"start": "9:00"}, "start", "HH:MM"),
    ({"start": "24:00"}, "start", "HH:MM"),
    ({"end": "17:60"}, "end", "HH:MM"),
    ({"end": "00:00"}, "end", "00:01 to 24:00"),
    ({"start": "17:00", "end": "09:00"}, "end", "after start"),
    ({"start": "09:00", "end": "09:00"}, "end", "after start"),
    ({"time_zone": "Europe/Amsterdan"}, "time_zone", "IANA"),
    ({"time_zone": "localtime"}, "time_zone", "IANA"),
    ({"start": "١٢:٠٠"}, "start", "HH:MM"),  # Arabic-Indic digits are digits, not ASCII
])
def test_window_problems(changes: dict, where: str, fragment: str) -> None:
    base = {"days": WEEKDAYS, "start": "09:00", "end": "17:00", "time_zone": "Europe/Amsterdam"}
    w = SendWindow(**{**base, **changes})
    problems = window_problems(w)
    assert [p for p, _ in problems] == [where], problems
    assert fragment in problems[0][1]
    with pytest.raises(WindowError):
        WindowRule(w)


def test_a_whole_day_window_and_zone_names() -> None:
    assert window_problems(SendWindow(WEEKDAYS, "00:00", "24:00", "UTC")) == []
    assert window("00:00", "24:00", zone="UTC").next_open(123_456) == 123_456
    assert zone_named("europe/amsterdam") == AMSTERDAM
    assert zone_named(None) is None and zone_named("Factory") is None
