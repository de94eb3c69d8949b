"""The dead-letter contract, shared by `run`, `faust` and `score` (README, "Alerts").

A dead letter is the original bytes and key of a record the detector refused, with headers
``seqsentry.reason``, ``seqsentry.detail``, ``seqsentry.topic``, ``seqsentry.partition``
and ``seqsentry.offset``. :func:`dead_letter_headers` is the one place that builds them. A
payload too big to be produced again with those headers is cut to fit
(:func:`fit_dead_letter`), saying so in ``seqsentry.truncated``, ``seqsentry.original-size``
and ``seqsentry.original-sha256``. Nothing here touches Kafka: each runtime produces the
result its own way.
"""

from __future__ import annotations

import hashlib

DETAIL_MAX_CHARS = 500  # a header, not a log: the detail only has to say what was wrong
# librdkafka's default message.max.bytes; a producer given another via -X passes it to Outputs
DEFAULT_MESSAGE_MAX_BYTES = 1_000_000
# Room left under message.max.bytes for what librdkafka counts besides key, value and header
# bytes (record framing, varints), so a fitted dead letter is never refused as too large.
DLQ_HEADROOM_BYTES = 4096


def dead_letter_headers(reason: str, detail: str, topic: str, partition: int, offset: int) -> list[tuple[str, bytes]]:
    """The headers of a dead letter: why it was diverted and where it came from."""
    return [("seqsentry.reason", reason.encode()), ("seqsentry.detail", detail[:DETAIL_MAX_CHARS].encode()),
            ("seqsentry.topic", topic.encode()), ("seqsentry.partition", str(partition).encode()),
            ("seqsentry.offset", str(offset).encode())]


def fit_dead_letter(value: bytes | None, key: bytes | None, headers: list[tuple[str, bytes]],
                    max_message_bytes: int = DEFAULT_MESSAGE_MAX_BYTES) -> tuple[bytes | None, list[tuple[str, bytes]]]:
    """The payload and headers of a dead letter that fits under the producer's ``message.max.bytes``.

    A payload that fits is kept whole. One that does not (a ~1 MB message passes a default
    producer; the added headers push it over) is cut to its first bytes that fit, and the
    headers ``seqsentry.truncated`` (``true``), ``seqsentry.original-size`` (bytes) and
    ``seqsentry.original-sha256`` (hex) say so, so the original can still be identified.
    """
    if value is None:
        return value, headers
    marks = [("seqsentry.truncated", b"true"), ("seqsentry.original-size", str(len(value)).encode()),
             ("seqsentry.original-sha256", hashlib.sha256(value).hexdigest().encode())]
    overhead = DLQ_HEADROOM_BYTES + len(key or b"") + sum(len(k) + len(v) for k, v in headers + marks)
    room = max(0, max_message_bytes - overhead)
    if len(value) <= room:
        return value, headers
    return value[:room], headers + marks
