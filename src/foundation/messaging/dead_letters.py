"""Dead letters: signals that exhausted their deliveries, kept in the dead-letter stream.

A consumer that gives up on a message (the cluster bus after ``max_deliver`` attempts, an agent
inbox after a permanent error) copies it to ``<root>.dead.<kind>.<consumer>`` with bookkeeping
headers (:func:`dead_letter`), then acks it. :func:`list_dead_letters` reads them back as
:class:`DeadLetter` records (``ClusterBus.redrive`` sends them again).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

from foundation._wire import (
    DEAD_LETTER_STREAM,
    DEAD_LETTER_SUBJECT_PREFIX,
    HDR_DEAD_ATTEMPTS,
    HDR_DEAD_CONSUMER,
    HDR_DEAD_REASON,
    HDR_DEAD_SEQ,
    HDR_DEAD_STREAM,
    HDR_DEAD_SUBJECT,
    HDR_MSG_ID,
)
from foundation.messaging.codec import decode_signal
from foundation.nats.streams import parse_ack_reply
from jido import JidoError, Signal, SignalError

_DLQ_HEADERS: Final = frozenset(
    {HDR_DEAD_SUBJECT, HDR_DEAD_CONSUMER, HDR_DEAD_REASON, HDR_DEAD_ATTEMPTS, HDR_DEAD_SEQ,
     HDR_DEAD_STREAM, HDR_MSG_ID}
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A signal that exhausted its deliveries, as stored in the dead-letter stream."""

    seq: int
    """Sequence in the dead-letter stream (what :meth:`ClusterBus.redrive` takes)."""
    consumer: str
    """Durable name of the consumer (or inbox) that gave up."""
    subject: str
    """Subject the signal was originally delivered on."""
    reason: str
    """Why it was dead-lettered (the handler's last error, or ``max deliveries exceeded``)."""
    attempts: int
    """Deliveries made before giving up."""
    signal: Signal | None
    """The decoded signal (``None`` when the message could not be decoded; see ``body``)."""
    headers: dict[str, str] = field(repr=False)
    """Headers of the original message (without the dead-letter bookkeeping headers)."""
    body: bytes = field(repr=False)
    """Body of the original message."""


async def dead_letter(
    js: JetStreamContext,
    msg: Msg,
    *,
    kind: str,
    consumer: str,
    reason: str,
    attempts: int,
    stream_seq: int,
    stream: str,
) -> None:
    """Copy ``msg`` to the dead-letter stream with bookkeeping headers (then the caller acks)."""
    headers = {k: v for k, v in (msg.headers or {}).items() if k not in _DLQ_HEADERS}
    headers[HDR_DEAD_SUBJECT] = msg.subject
    headers[HDR_DEAD_CONSUMER] = consumer
    headers[HDR_DEAD_REASON] = reason.replace("\r", " ").replace("\n", " ")[:500] or "error"
    headers[HDR_DEAD_ATTEMPTS] = str(attempts)
    headers[HDR_DEAD_SEQ] = str(stream_seq)
    headers[HDR_DEAD_STREAM] = stream
    # The dead-letter copy is de-duplicated by (stream, seq): a redelivered poison message is
    # stored once even if the ack after this publish is lost.
    headers[HDR_MSG_ID] = f"dead:{stream}:{stream_seq}"
    await js.publish(f"{DEAD_LETTER_SUBJECT_PREFIX}.{kind}.{consumer}", msg.data, headers=headers)


def read_dead_letter(seq: int, subject: str, headers: Mapping[str, str], body: bytes) -> DeadLetter:
    """A :class:`DeadLetter` from a message of the dead-letter stream."""
    original = {k: v for k, v in headers.items() if k not in _DLQ_HEADERS}
    try:
        sig: Signal | None = decode_signal(original, body)
    except (SignalError, JidoError):
        sig = None
    return DeadLetter(
        seq=seq,
        consumer=headers.get(HDR_DEAD_CONSUMER, subject.rsplit(".", 1)[-1]),
        subject=headers.get(HDR_DEAD_SUBJECT, ""),
        reason=headers.get(HDR_DEAD_REASON, ""),
        attempts=int(headers.get(HDR_DEAD_ATTEMPTS, "0") or 0),
        signal=sig,
        headers=dict(original),
        body=body,
    )


async def list_dead_letters(
    js: JetStreamContext, *, subject_filter: str, limit: int
) -> list[DeadLetter]:
    """Read up to ``limit`` dead letters whose subject matches ``subject_filter`` (oldest first)."""
    out: list[DeadLetter] = []
    sub = await js.subscribe(
        subject_filter,
        stream=DEAD_LETTER_STREAM,
        ordered_consumer=True,
        deliver_policy=api.DeliverPolicy.ALL,
    )
    try:
        info = await js.stream_info(DEAD_LETTER_STREAM, subjects_filter=subject_filter)
        remaining = sum((info.state.subjects or {}).values())
        while remaining > 0 and len(out) < limit:
            try:
                msg = await sub.next_msg(timeout=5.0)
            except nats.errors.TimeoutError:
                break
            remaining -= 1
            _, sseq, _ = parse_ack_reply(msg.reply)
            out.append(read_dead_letter(sseq, msg.subject, msg.headers or {}, msg.data))
    finally:
        await sub.unsubscribe()
    return out


__all__ = ["DeadLetter", "dead_letter", "list_dead_letters", "read_dead_letter"]
