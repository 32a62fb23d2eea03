"""Send many outputs through an aiokafka producer as record batches, not one by one.

`producer.send()` costs tens of microseconds a message in Python; building the batches
ourselves (`create_batch` / `send_batch`, both part of a transaction like `send`) makes the
producer side a small part of the per-record cost. Keyed outputs are partitioned exactly as
`send()` would (aiokafka's DefaultPartitioner: murmur2 of the key, as the Java client).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer, TopicPartition

from streams.records import Output

_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """The Java client's murmur2 (as aiokafka.partitioner.murmur2), twice as fast: whole
    words unpacked at once. Equality is a property test."""
    length = len(data)
    h = (0x9747B28C ^ length) & _MASK
    n4 = length & ~3
    for (k,) in struct.iter_unpack("<I", data[:n4]):
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    extra = length & 3
    if extra:
        if extra >= 3:
            h ^= data[n4 + 2] << 16
        if extra >= 2:
            h ^= data[n4 + 1] << 8
        h ^= data[n4]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


def murmur2_many(keys: Sequence[bytes]) -> list[int]:
    """`murmur2` of each key, the same numbers, about five times faster for a batch.

    Keys of one length that is a multiple of 4 (the invitation ids, 36 bytes) are hashed
    together: key j's state is lane j (64 bits, the value in its low 32) of one big int, so
    every step of the hash is one big-int operation over the whole batch instead of a few
    Python operations per key. A lane's product with the 32-bit constant stays within its 64
    bits, and the bits a shift brings in from the next lane land above bit 32, where the mask
    that follows drops them. Other keys (few: automation ids) take `murmur2`. Equality is a
    property test (tests/streams/test_fast_avro.py)."""
    out = [0] * len(keys)
    groups: dict[int, list[int]] = {}
    for i, key in enumerate(keys):
        group = groups.get(len(key))
        if group is None:
            groups[len(key)] = [i]
        else:
            group.append(i)
    for length, indexes in groups.items():
        n = len(indexes)
        if length & 3 or n < 8:
            for i in indexes:
                out[i] = murmur2(keys[i])
            continue
        width = length >> 2  # words a key
        words = struct.unpack(f"<{n * width}I", b"".join([keys[i] for i in indexes]))
        lanes = int.from_bytes(b"\xff\xff\xff\xff\x00\x00\x00\x00" * n, "little")
        pack = struct.Struct(f"<{n}Q").pack
        h = ((0x9747B28C ^ length) & _MASK) * (lanes // _MASK)  # the seed in every lane
        for w in range(width):
            k = (int.from_bytes(pack(*words[w::width]), "little") * _M) & lanes
            k = (((k ^ (k >> 24)) & lanes) * _M) & lanes
            h = ((h * _M) & lanes) ^ k
        h = (h ^ (h >> 13)) & lanes
        h = (h * _M) & lanes
        h = (h ^ (h >> 15)) & lanes
        for i, value in zip(indexes, struct.unpack(f"<{n}Q", h.to_bytes(8 * n, "little")),
                            strict=True):
            out[i] = value
    return out


def partition_of_hash(h: int, partitions: list[int]) -> int:
    """What aiokafka's DefaultPartitioner picks for a key whose `murmur2` is `h`."""
    return partitions[(h & 0x7FFFFFFF) % len(partitions)]


def partition_for(key: bytes, partitions: list[int]) -> int:
    """What aiokafka's DefaultPartitioner picks for a keyed record."""
    return partition_of_hash(murmur2(key), partitions)


@dataclass(slots=True)
class Sent:
    tp: TopicPartition
    future: asyncio.Future  # RecordMetadata of the batch's first record, once delivered
    count: int


class BatchSender:
    def __init__(self, producer: AIOKafkaProducer,
                 partitions: dict[str, list[int]] | None = None) -> None:
        self.producer = producer
        self._partitions = partitions if partitions is not None else {}  # may be shared

    async def _partitions_of(self, topic: str) -> list[int]:
        parts = self._partitions.get(topic)
        if parts is None:
            parts = sorted(await self.producer.partitions_for(topic))
            self._partitions[topic] = parts
        return parts

    async def send_all(self, outputs: Iterable[Output]) -> list[Sent]:
        """Queue every output (inside the caller's transaction, if any); order is kept per
        partition. Await the futures (or commit the transaction) for delivery."""
        open_: dict[tuple[str, int], list] = {}  # (topic, partition) -> [builder, count]
        sent: list[Sent] = []
        outputs = outputs if isinstance(outputs, list) else list(outputs)
        # The keys' hashes for the whole batch at once (`murmur2_many`), in output order.
        hashes = iter(murmur2_many([o.key for o in outputs
                                    if o.partition is None and o.key is not None]))
        for o in outputs:
            partition = o.partition
            if partition is None:
                # Known topics without awaiting a coroutine (a microsecond an output).
                parts = self._partitions.get(o.topic) or await self._partitions_of(o.topic)
                # Every output has a key; without one, the first partition (no random spread).
                partition = partition_of_hash(next(hashes), parts) \
                    if o.key is not None else parts[0]
            slot = open_.get((o.topic, partition))
            if slot is None:
                slot = open_[(o.topic, partition)] = [self.producer.create_batch(), 0]
            if slot[0].append(key=o.key, value=o.value, timestamp=None,
                              headers=o.headers) is None:
                # Full: hand it over and start the next one for this partition.
                sent.append(await self._submit(slot, o.topic, partition))
                slot[0], slot[1] = self.producer.create_batch(), 0
                if slot[0].append(key=o.key, value=o.value, timestamp=None,
                                  headers=o.headers) is None:
                    raise ValueError(f"a record of {len(o.value or b'')} bytes does not fit "
                                     "in an empty batch (max_batch_size)")
            slot[1] += 1
        for (topic, partition), slot in open_.items():
            if slot[1]:
                sent.append(await self._submit(slot, topic, partition))
        return sent

    async def _submit(self, slot: list, topic: str, partition: int) -> Sent:
        future = await self.producer.send_batch(slot[0], topic, partition=partition)
        return Sent(TopicPartition(topic, partition), future, slot[1])


def last_offsets(sent: Iterable[Sent]) -> dict[TopicPartition, int]:
    """The offset of the last record written to each partition (after delivery)."""
    last: dict[TopicPartition, int] = {}
    for s in sent:
        end = s.future.result().offset + s.count - 1
        if end > last.get(s.tp, -1):
            last[s.tp] = end
    return last
