"""JetStream streams and consumers: creation, pipelined publishing, ack-reply parsing.

The helpers the cluster bus and the agent inboxes share to set up their streams (and the
dead-letter stream) and consumers, and to publish in bulk. Errors are typed
(:class:`~foundation._errors.ClusterBusError`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext, api

from foundation._errors import ClusterBusError
from foundation._wire import DEAD_LETTER_STREAM, DEAD_LETTER_SUBJECT_PREFIX
from foundation.nats.connect import while_placing


def parse_ack_reply(reply: str) -> tuple[int, int, int]:
    """``(num_delivered, stream_seq, consumer_seq)`` from a JetStream ack reply subject.

    ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ts>.<pending>`` (v1) or
    ``$JS.ACK.<domain>.<account>.<stream>.<consumer>.<delivered>.<sseq>.<dseq>...`` (v2).
    """
    tokens = reply.split(".")
    base = 4 if len(tokens) == 9 else 6
    return int(tokens[base]), int(tokens[base + 1]), int(tokens[base + 2])


async def ensure_stream(js: JetStreamContext, config: api.StreamConfig) -> None:
    """Create ``config``'s stream, or update it when it exists with another configuration."""
    try:
        await while_placing(lambda: js.add_stream(config))
    except nats.js.errors.BadRequestError:
        await js.update_stream(config)
    except nats.js.errors.APIError as exc:
        raise ClusterBusError(
            f"could not create stream {config.name}: {exc.description}",
            details={"stream": config.name, "code": exc.err_code},
            cause=exc,
        ) from exc


async def ensure_file_stream(
    js: JetStreamContext,
    name: str,
    subjects: list[str],
    retention: api.RetentionPolicy,
    *,
    replicas: int,
    duplicate_window: float,
    max_age: float | None = None,
) -> None:
    """Create (or update) file-stored stream ``name`` on ``subjects``: ``replicas`` copies,
    de-duplication by ``Nats-Msg-Id`` within ``duplicate_window`` seconds, messages kept at most
    ``max_age`` seconds (``None``: as ``retention`` decides)."""
    await ensure_stream(
        js,
        api.StreamConfig(
            name=name,
            subjects=subjects,
            retention=retention,
            storage=api.StorageType.FILE,
            num_replicas=replicas,
            duplicate_window=duplicate_window,
            max_age=max_age,
        ),
    )


async def ensure_dead_letter_stream(js: JetStreamContext, *, replicas: int, max_age: float) -> None:
    """Create the dead-letter stream (limits retention; entries live ``max_age`` seconds)."""
    await ensure_file_stream(
        js,
        DEAD_LETTER_STREAM,
        [f"{DEAD_LETTER_SUBJECT_PREFIX}.>"],
        api.RetentionPolicy.LIMITS,
        replicas=replicas,
        duplicate_window=120.0,
        max_age=max_age,
    )


async def purge_dead(js: JetStreamContext, subject: str) -> int:
    """Purge dead letters on ``subject`` (a filter); returns how many were removed."""
    info = await js.stream_info(DEAD_LETTER_STREAM, subjects_filter=subject)
    count = sum((info.state.subjects or {}).values())
    await js.purge_stream(DEAD_LETTER_STREAM, subject=subject)
    return count


async def create_or_update_consumer(
    js: JetStreamContext, stream: str, config: api.ConsumerConfig
) -> None:
    """Create consumer ``config`` on ``stream`` (the same config again is accepted)."""
    try:
        await js.add_consumer(stream, config=config)
    except nats.js.errors.APIError as exc:
        raise ClusterBusError(
            f"could not create consumer {config.durable_name} on {stream}: {exc.description}",
            details={"stream": stream, "consumer": config.durable_name, "code": exc.err_code},
            cause=exc,
        ) from exc


async def js_publish_many(
    js: JetStreamContext,
    items: Sequence[tuple[str, dict[str, str], bytes]],
    ack_timeout: float,
) -> list[int]:
    """Publish ``(subject, headers, body)`` items to JetStream, pipelined; their sequences.

    One item is a plain request; several are sent without waiting and their acks gathered.
    Raises :class:`ClusterBusError` (retryable) when any publish was not acknowledged.
    """
    try:
        if len(items) == 1:
            subject, headers, body = items[0]
            ack = await js.publish(subject, body, timeout=ack_timeout, headers=headers)
            return [ack.seq]
        # No wait_stall: with one, every publish_async yields to the loop (asyncio.wait_for)
        # and each message leaves in its own socket write. The overall bound is below.
        futures = [
            await js.publish_async(subject, body, headers=headers)
            for subject, headers, body in items
        ]
        acks = await asyncio.wait_for(asyncio.gather(*futures), ack_timeout)
        return [ack.seq for ack in acks]
    except (TimeoutError, nats.errors.TimeoutError) as exc:
        raise ClusterBusError(
            "JetStream did not acknowledge the publish in time; it may or may not be stored: "
            "publish again with the same signal id (it is de-duplicated)",
            details={"count": len(items)},
            retryable=True,
            cause=exc,
        ) from exc
    except nats.js.errors.NoStreamResponseError as exc:
        raise ClusterBusError(
            "no JetStream stream answered: start the bus (await bus.start()) or the node first",
            details={"subject": items[0][0] if items else ""},
            retryable=True,
            cause=exc,
        ) from exc
    except nats.js.errors.APIError as exc:
        raise ClusterBusError(
            f"JetStream refused the publish: {exc.description}",
            details={"code": exc.err_code},
            retryable=True,
            cause=exc,
        ) from exc


async def server_barrier(nc: NatsClient) -> None:
    """Return once the server has processed everything this client sent before the call.

    ``nc.flush()`` alone is not enough in nats-py: it writes its PING straight to the socket,
    ahead of commands still queued for the flusher task (a fresh SUB, say), so the PONG can
    come back before the server saw them. By the time a first PONG arrives the flusher has
    written the queue, so a second PING is answered only after those commands were processed.
    """
    await nc.flush()
    await nc.flush()


__all__ = [
    "create_or_update_consumer",
    "ensure_dead_letter_stream",
    "ensure_file_stream",
    "ensure_stream",
    "js_publish_many",
    "parse_ack_reply",
    "purge_dead",
    "server_barrier",
]
