"""The stream's fast writers give exactly what the reference implementations give."""

from __future__ import annotations

import uuid

from aiokafka.partitioner import DefaultPartitioner, murmur2
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import codec
from streams.batching import murmur2 as fast_murmur2
from streams.batching import murmur2_many, partition_for
from streams.fast_avro import encode_invitation

LONG = st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1)
VALUES = st.one_of(st.none(), st.booleans(), LONG,
                   st.floats(allow_nan=False), st.text(max_size=80))


@st.composite
def invitations(draw: st.DrawFn) -> dict[str, object]:
    return {
        "invitation_id": str(uuid.UUID(int=draw(st.integers(0, (1 << 128) - 1)))),
        "automation_id": draw(st.text(max_size=70)), "automation_version": draw(LONG),
        "survey_id": draw(st.text(max_size=20)), "event_id": draw(st.text(max_size=70)),
        "record_index": draw(st.integers(0, 2**31 - 1)), "email": draw(st.text(max_size=90)),
        "variables": draw(st.dictionaries(st.text(max_size=70), VALUES, max_size=12)),
        "received_at": draw(st.integers(0, 2**45)), "due_at": draw(st.integers(0, 2**45)),
        "delay_days": draw(st.integers(0, 3650)),
    }


@settings(max_examples=300, deadline=None)
@given(invitations())
def test_fast_invitation_writer_is_byte_identical_to_the_codec(rec: dict[str, object]) -> None:
    data = encode_invitation(rec)
    assert data == codec.encode("InvitationRequested", rec)
    back = codec.decode_as("InvitationRequested", data)
    assert back["variables"] == rec["variables"] and back["email"] == rec["email"]


def test_unexpected_input_falls_back_to_the_codec_and_its_error() -> None:
    rec = {"invitation_id": "x"}  # fields missing: the codec says what is wrong
    try:
        encode_invitation(rec)
    except Exception as exc:  # noqa: BLE001 - compare with what the codec raises
        reference = type(exc)
    else:
        raise AssertionError("an incomplete record was encoded")
    try:
        codec.encode("InvitationRequested", rec)
    except Exception as exc:  # noqa: BLE001
        assert isinstance(exc, reference)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=100), st.integers(1, 64))
def test_murmur2_and_partitioning_match_aiokafka(key: bytes, n: int) -> None:
    assert fast_murmur2(key) == murmur2(key)
    parts = list(range(n))
    assert partition_for(key, parts) == DefaultPartitioner()(key, parts, parts)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=40) | st.binary(min_size=36, max_size=36)
                | st.binary(min_size=8, max_size=8), max_size=60))
def test_murmur2_of_a_batch_matches_aiokafka(keys: list[bytes]) -> None:
    """Many keys of one length (hashed together, lane by lane) and the others."""
    keys += [str(uuid.UUID(int=i * 7919)).encode() for i in range(len(keys) % 20)]
    assert murmur2_many(keys) == [murmur2(k) for k in keys]
