"""The inbox's ordering guard, driven with scripted deliveries (no server needed).

JetStream delivery metadata lives in the ack reply subject; these tests feed the inbox's drain
loop messages whose consumer sequence skips (a delivery lost in transit) or repeats (a
redelivery) and check that no later message is ever applied before an earlier one.
"""

from __future__ import annotations

from typing import Any

from nats.aio.msg import Msg

from foundation.messaging.inbox import AgentInbox
from jido import Signal


class FakeClient:
    """Records acknowledgements sent for scripted messages."""

    def __init__(self) -> None:
        self.acks: list[tuple[str, bytes]] = []

    async def publish(self, subject: str, payload: bytes = b"", **_: Any) -> None:
        self.acks.append((subject, payload))


def reply(sseq: int, dseq: int, delivered: int = 1) -> str:
    return f"$JS.ACK.FOUNDATION_INBOX.c.{delivered}.{sseq}.{dseq}.1700000000000000000.0"


class ScriptedPull:
    """Returns the scripted batches, then stops the inbox."""

    def __init__(self, inbox: AgentInbox, batches: list[list[Msg]]) -> None:
        self.inbox = inbox
        self.batches = batches

    async def fetch(self, batch: int, timeout: float) -> list[Msg]:  # noqa: ASYNC109 (nats-py API)
        if not self.batches:
            self.inbox._stopping = True
            raise TimeoutError
        return self.batches.pop(0)


def message(client: FakeClient, n: int, sseq: int, dseq: int, delivered: int = 1) -> Msg:
    body = Signal(type="acct.deposit", source="/t", data={"n": n}, id=f"s{n}").to_bytes()
    return Msg(
        _client=client,  # type: ignore[arg-type]
        subject="foundation.inbox.default.a",
        reply=reply(sseq, dseq, delivered),
        data=body,
        headers=None,
    )


def make_inbox(applied: list[tuple[str, int]], after_seq: int = 0) -> AgentInbox:
    async def deliver(sig: Signal, seq: int) -> None:
        applied.append((sig.id, seq))

    return AgentInbox(None, "a", deliver, after_seq=after_seq)  # type: ignore[arg-type]


async def test_gap_in_delivery_sequence_stops_before_the_later_message() -> None:
    applied: list[tuple[str, int]] = []
    inbox = make_inbox(applied)
    client = FakeClient()
    # Consumer sequence 3 (stream seq 3) was lost in transit; 4 must not overtake it.
    batch = [message(client, 1, 1, 1), message(client, 2, 2, 2), message(client, 4, 4, 4)]
    await inbox._drain(ScriptedPull(inbox, [batch]))  # type: ignore[arg-type]
    assert applied == [("s1", 1), ("s2", 2)]
    assert len(client.acks) == 2
    assert inbox.applied_seq == 2


async def test_redelivery_of_applied_message_is_acked_and_skipped() -> None:
    applied: list[tuple[str, int]] = []
    inbox = make_inbox(applied)
    client = FakeClient()
    batches = [
        [message(client, 1, 1, 1), message(client, 2, 2, 2)],
        [message(client, 1, 1, 3, delivered=2), message(client, 3, 3, 4)],  # ack of 1 was lost
    ]
    await inbox._drain(ScriptedPull(inbox, batches))  # type: ignore[arg-type]
    assert applied == [("s1", 1), ("s2", 2), ("s3", 3)]
    assert len(client.acks) == 4 and inbox.statistics().skipped == 1


async def test_messages_up_to_after_seq_are_skipped() -> None:
    applied: list[tuple[str, int]] = []
    inbox = make_inbox(applied, after_seq=5)
    client = FakeClient()
    batch = [message(client, 4, 4, 1), message(client, 5, 5, 2), message(client, 6, 9, 3)]
    await inbox._drain(ScriptedPull(inbox, [batch]))  # type: ignore[arg-type]
    assert applied == [("s6", 9)]
    assert len(client.acks) == 3


async def test_stale_consumer_sequence_for_unapplied_message_restarts() -> None:
    applied: list[tuple[str, int]] = []
    inbox = make_inbox(applied)
    client = FakeClient()
    # A message we never applied arriving with an old consumer sequence means deliveries were
    # mixed up: start over rather than apply it out of order.
    batch = [message(client, 1, 1, 1), message(client, 7, 7, 1)]
    await inbox._drain(ScriptedPull(inbox, [batch]))  # type: ignore[arg-type]
    assert applied == [("s1", 1)]
