"""Tenant quotas, enforced cluster-wide: agents, state bytes, calls and casts per second, LLM
tokens per minute; each refusal typed and audited; quotas set on one node enforced by all."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest
from pydantic import BaseModel

from foundation import Client, Node, Quota, QuotaExceededError
from foundation.hosting.clustered import Clustered
from foundation.security import AuditLog
from foundation.tenancy import ADMISSION_WINDOW, BURST_SECONDS, TokenWindows
from foundation.testing import NatsServer
from jido import Signal
from jido.ai import LLMAgent, OpenAIModel
from jido.ai.testing import OpenAITestServer, text_reply
from tests.foundation.apps import BigCounter, ClusteredCounter
from tests.foundation.virtual_app import Visit

pytestmark = pytest.mark.nats

TENANT = "default"


def add(n: int = 1) -> Signal:
    return Signal(type="counter.add", source="/t", data={"n": n})


def node(url: str, name: str, *agents: type, **kw: Any) -> Node:
    return Node(
        nats=url,
        name=name,
        agents=[ClusteredCounter, BigCounter, Visit, *agents],
        failover=False,
        audit=True,
        **kw,
    )


async def set_everywhere(quota: Quota | None, first: Node, *others: Node) -> None:
    """Set ``quota`` on ``first`` and wait until every other node's watch has it."""
    await first.set_quota(TENANT, quota)
    for other in others:
        assert other.quotas.store is not None
        await other.quotas.store.wait(TENANT, quota)


async def refusals(n: Node, quota: str) -> list[dict[str, Any]]:
    """The ``quota.exceeded`` audit records of ``quota`` written so far."""
    assert n.security.audit is not None
    await n.security.audit.flush()
    log = AuditLog(n.nc.jetstream())
    records = await log.tail(1000)
    return [
        r for r in records if r["event"] == "quota.exceeded" and r["details"].get("quota") == quota
    ]


def check_error(err: QuotaExceededError, quota: str, used: float, limit: float) -> None:
    assert err.type == "quota_exceeded"
    assert (err.quota, err.used, err.limit, err.tenant) == (quota, used, limit, TENANT)
    assert err.details["quota"] == quota and err.details["limit"] == limit
    assert "foundation quota set" in err.message


async def test_max_agents_set_on_one_node_is_enforced_on_another(nats_server: NatsServer) -> None:
    async with node(nats_server.url, "a") as a, node(nats_server.url, "b") as b:
        quota = Quota(max_agents=2)
        await set_everywhere(quota, a, b)
        assert b.quota(TENANT) == quota and a.quota() == quota
        await a.spawn(ClusteredCounter, id="c1")
        await a.spawn(ClusteredCounter, id="c2")
        await b.registry.wait_version(a.registry.version)
        with pytest.raises(QuotaExceededError) as info:
            await b.spawn(ClusteredCounter, id="c3")
        check_error(info.value, "max_agents", 2, 2)
        assert await b.registry.lookup("c3", consistent=True) is None
        # a virtual activation is an agent too
        with pytest.raises(QuotaExceededError) as info:
            await b.ref("v1", cls=Visit).call(Signal(type="tally.bump", source="/t"))
        check_error(info.value, "max_agents", 2, 2)
        audited = await refusals(b, "max_agents")
        assert {r["subject"] for r in audited} == {"c3", "v1"}
        assert all(r["details"]["limit"] == 2 and r["details"]["used"] == 2 for r in audited)
        # room again once an agent stops; raising the quota on b is seen by a
        await a.stop_agent("c1")
        await b.registry.wait_version(a.registry.version)
        await b.spawn(ClusteredCounter, id="c3")
        await set_everywhere(Quota(max_agents=3), b, a)
        await a.spawn(ClusteredCounter, id="c4")
        with pytest.raises(QuotaExceededError):
            await a.spawn(ClusteredCounter, id="c5")
        await set_everywhere(None, a, b)  # no quota: no limit
        await b.spawn(ClusteredCounter, id="c5")


async def test_concurrent_spawns_on_two_nodes_never_pass_max_agents(
    nats_server: NatsServer,
) -> None:
    async with node(nats_server.url, "a") as a, node(nats_server.url, "b") as b:
        await set_everywhere(Quota(max_agents=5), a, b)

        async def spawn(n: Node, agent_id: str) -> bool:
            try:
                await n.spawn(ClusteredCounter, id=agent_id)
            except QuotaExceededError:
                return True
            return False

        refused = await asyncio.gather(
            *(spawn(a if i % 2 else b, f"r{i}") for i in range(12)), return_exceptions=False
        )
        assert sum(refused) == 12 - 5
        assert len(await a.registry.scan(tenant=TENANT)) == 5
    assert ADMISSION_WINDOW > 0


async def test_a_commit_over_max_state_bytes_is_refused_and_the_state_kept(
    nats_server: NatsServer,
) -> None:
    async with node(nats_server.url, "a") as a, node(nats_server.url, "b") as b:
        await set_everywhere(Quota(max_state_bytes=20_000), a, b)
        ref = await a.spawn(BigCounter, id="big", node="b")
        grow = Signal(type="counter.grow", source="/t", data={"size": 5_000})
        assert (await ref.call(grow))["count"] == 1
        too_much = Signal(type="counter.grow", source="/t", data={"size": 30_000})
        with pytest.raises(QuotaExceededError) as info:
            await ref.call(too_much)
        err = info.value
        assert (err.quota, err.limit, err.tenant) == ("max_state_bytes", 20_000, TENANT)
        assert 5_000 < err.used < 20_000 and err.details["agent_id"] == "big"
        state = await ref.state()
        assert state.count == 1 and len(state.applied_by[0]) == 5_000  # the previous state
        assert (await ref.call(add()))["count"] == 2  # the agent goes on
        assert [r["subject"] for r in await refusals(b, "max_state_bytes")] == ["big"]
        # the node's usage is what a spawn elsewhere is measured against
        assert b.quotas.usage()["max_state_bytes"]["used"] > 5_000


async def test_calls_per_second_hold_across_two_nodes(nats_server: NatsServer) -> None:
    limit = 10.0
    async with node(nats_server.url, "a") as a, node(nats_server.url, "b") as b:
        await set_everywhere(Quota(max_calls_per_second=limit), a, b)
        await a.spawn(ClusteredCounter, id="x", node="a")
        await a.spawn(ClusteredCounter, id="y", node="b")
        async with Client(nats=nats_server.url) as client:
            refs = [client.ref("x"), client.ref("y")]
            n = 200
            started = time.monotonic()

            async def one(i: int) -> bool:
                try:
                    await refs[i % 2].call(add())
                except QuotaExceededError as err:
                    assert err.quota == "max_calls_per_second" and err.limit == limit
                    at = err.details["at"]  # the forwarding node or the owner refused it
                    assert at == "sender" or err.details["node_share"] == limit / 2
                    return False
                return True

            ok = sum(await asyncio.gather(*(one(i) for i in range(n))))
            elapsed = time.monotonic() - started
        # each node: a full bucket (a tenth of its share, at least 1) plus its share per second
        allowed = sum(max(limit / 2 * BURST_SECONDS, 1) for _ in "ab") + limit * elapsed
        assert ok <= allowed
        assert n - ok >= n - allowed
        counted = (await a.ref("x").state()).count + (await a.ref("y").state()).count
        assert counted == ok  # a refused call changed nothing
        for n_ in (a, b):
            n_.quotas.flush_audit()
        assert a.security.audit is not None
        await a.security.audit.flush()
        audited = await refusals(b, "max_calls_per_second")  # one trail: both nodes' records
        assert sum(r["details"]["count"] for r in audited) == n - ok


async def test_the_sender_refuses_what_the_owners_could_not_admit(
    nats_server: NatsServer,
) -> None:
    limit = 10.0
    async with node(nats_server.url, "a") as a, node(nats_server.url, "b") as b:
        await set_everywhere(Quota(max_calls_per_second=limit), a, b)
        await a.spawn(ClusteredCounter, id="x", node="a")
        await b.registry.wait_version(a.registry.version)
        ref = b.ref("x")
        n = 100
        started = time.monotonic()

        async def one() -> str:
            try:
                await ref.call(add())
            except QuotaExceededError as err:
                return str(err.details["at"])
            return "ok"

        outcomes = await asyncio.gather(*(one() for _ in range(n)))
        elapsed = time.monotonic() - started
        sent = n - outcomes.count("sender")
        # b's bucket: a tenth of a second of the limit plus one call per owner (one: a)
        assert sent <= limit * BURST_SECONDS + 1 + limit * elapsed
        assert outcomes.count("ok") + outcomes.count("owner") == sent
        assert b.quotas.refused["max_calls_per_second"] == outcomes.count("sender")
        assert a.quotas.refused["max_calls_per_second"] == outcomes.count("owner")
        assert (await ref.state()).count == outcomes.count("ok")


async def test_casts_per_second_are_refused_at_the_sender_or_dropped_by_the_owner(
    nats_server: NatsServer,
) -> None:
    limit = 5.0
    async with node(nats_server.url, "a") as a, node(nats_server.url, "b") as b:
        await set_everywhere(Quota(max_casts_per_second=limit), a, b)
        ref = await a.spawn(ClusteredCounter, id="x", node="b")
        n = 100
        at_sender = 0
        started = time.monotonic()
        for _ in range(n):
            try:
                await ref.cast(add())
            except QuotaExceededError as err:
                assert err.quota == "max_casts_per_second" and err.details["at"] == "sender"
                at_sender += 1
        await a.client.flush_casts()
        assert at_sender > 0 and a.quotas.refused["max_casts_per_second"] == at_sender

        def seen() -> int:
            return b.quotas.refused["max_casts_per_second"]

        while True:  # every cast sent is either applied or dropped by the owner
            applied = (await ref.state()).count
            if applied + seen() == n - at_sender:
                break
            await asyncio.sleep(0.02)
        elapsed = time.monotonic() - started
        assert applied <= max(limit * BURST_SECONDS, 1) + limit * elapsed  # b: the only owner
        for n_ in (a, b):
            n_.quotas.flush_audit()
        assert a.security.audit is not None
        await a.security.audit.flush()
        audited = await refusals(b, "max_casts_per_second")  # one trail: both nodes' records
        assert sum(r["details"]["count"] for r in audited) == n - applied


class Notes(BaseModel):
    """No state of its own."""


def assistant(server: OpenAITestServer) -> type[LLMAgent]:
    ns: dict[str, Any] = {
        "state_model": Notes,
        "model": OpenAIModel(base_url=server.url, model="m", api_key="k", backoff_base=0.001),
        "instructions": "Answer.",
        "max_tokens": 100,
    }
    return type("QuotaAssistant", (Clustered, LLMAgent), ns, critical=True)


def prompt(text: str) -> Signal:
    return Signal(type="ai.prompt", source="/u", data={"text": text})


async def test_llm_tokens_per_minute_are_reserved_and_reconciled(
    nats_server: NatsServer,
) -> None:
    if time.time() % 60 > 45:  # keep the test inside one minute's window
        await asyncio.sleep(60 - time.time() % 60 + 0.1)
    async with OpenAITestServer() as server:
        server.script(text_reply("first", input_tokens=100, output_tokens=20))
        bot = assistant(server)
        async with node(nats_server.url, "a", bot) as a, node(nats_server.url, "b", bot) as b:
            await set_everywhere(Quota(max_llm_tokens_per_minute=200), a, b)
            r1 = await a.spawn(bot, id="bot1", node="a")
            r2 = await a.spawn(bot, id="bot2", node="b")
            out = await r1.call(prompt("hi"), timeout=30)
            assert out["text"] == "first" and out["usage"]["total_tokens"] == 120
            assert a.quotas.tokens is not None and await a.quotas.tokens.used() == 120
            # the next call reserves its estimate (prompt / 4 + max_tokens) first: refused
            with pytest.raises(QuotaExceededError) as info:
                await r2.call(prompt("hello"), timeout=30)
            err = info.value
            assert (err.quota, err.used, err.limit) == ("max_llm_tokens_per_minute", 120, 200)
            assert err.details["agent_id"] == "bot2" and err.details["requested"] >= 100
            assert len(server.requests) == 1  # the refused call never reached the model
            assert [r["subject"] for r in await refusals(b, "max_llm_tokens_per_minute")] == [
                "bot2"
            ]


async def test_a_reservation_of_a_killed_call_stays_counted(nats_server: NatsServer) -> None:
    if time.time() % 60 > 50:
        await asyncio.sleep(60 - time.time() % 60 + 0.1)
    async with node(nats_server.url, "a") as a, node(nats_server.url, "b") as b:
        await set_everywhere(Quota(max_llm_tokens_per_minute=1000), a, b)
        assert a.quotas.store is not None and b.quotas.tokens is not None
        dying = TokenWindows(a.quotas.store.kv, TENANT, lambda: 1000)
        await dying.reserve("bot", 700)  # the node dies before it reconciles
        with pytest.raises(QuotaExceededError):
            await b.quotas.tokens.reserve("other", 400)
        held = await b.quotas.tokens.reserve("other", 300)
        await b.quotas.tokens.reconcile(held, 250)
        assert await b.quotas.tokens.used() == 950  # 700 reserved + 250 used


def test_cli_quota_set_and_show(
    nats_server: NatsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    from foundation.cli.main import main

    url = ["--nats", nats_server.url]
    assert main(["quota", "set", "acme", *url, "--max-agents", "3"]) == 0
    assert "max_agents=3" in capsys.readouterr().out
    args = ["--max-calls-per-second", "50", "--max-llm-tokens-per-minute", "1000"]
    assert main(["quota", "set", "acme", *url, *args]) == 0
    capsys.readouterr()
    assert main(["quota", "show", "acme", *url, "--json"]) == 0
    shown = orjson.loads(capsys.readouterr().out)["acme"]
    assert shown["max_agents"] == {"limit": 3, "used": 0}  # kept from the first set
    assert shown["max_calls_per_second"]["limit"] == 50
    assert shown["max_llm_tokens_per_minute"]["limit"] == 1000
    assert shown["max_state_bytes"]["limit"] is None
    assert main(["quota", "set", "acme", *url, "--unset", "max_agents"]) == 0
    capsys.readouterr()
    assert main(["quota", "show", "acme", *url]) == 0
    table = capsys.readouterr().out
    assert "quotas of acme" in table and "max_calls_per_second" in table
    with pytest.raises(SystemExit) as exit_:
        main(["quota", "set", "acme", *url, "--max-agents", "-1"])
    assert exit_.value.code == 2
    assert "is not a whole number" in capsys.readouterr().err
    assert main(["quota", "show", "bad tenant", *url]) == 1
    assert "InvalidKeyError" in capsys.readouterr().err


async def test_usage_shows_in_status_dashboard_and_metrics(nats_server: NatsServer) -> None:
    from prometheus_client import generate_latest

    from foundation import Dashboard
    from foundation._metrics import REGISTRY
    from foundation.observability.status import collect_status

    async with node(nats_server.url, "a") as a:
        await a.set_quota(TENANT, Quota(max_agents=10, max_state_bytes=10**6))
        await a.spawn(ClusteredCounter, id="s1")
        await a.spawn(ClusteredCounter, id="s2")
        report = await collect_status(nats_server.url)
        assert report.quotas[TENANT]["max_agents"] == {"limit": 10, "used": 2}
        assert report.to_dict()["quotas"] == report.quotas
        async with Dashboard(a, refresh=60) as dash:
            status = await dash.collect()
        row = status["quotas"][TENANT]["max_agents"]
        assert (row["limit"], row["used"], row["refused"]) == (10, 2, 0)
        text = generate_latest(REGISTRY).decode()
        assert f'foundation_quota_limit{{quota="max_agents",tenant="{TENANT}"}} 10.0' in text
        assert f'foundation_quota_used{{quota="max_agents",tenant="{TENANT}"}} 2.0' in text
        assert 'foundation_quota_limit{quota="max_state_bytes"' in text


def test_a_token_bucket_admits_its_burst_then_its_rate() -> None:
    from foundation.tenancy import TokenBucket

    bucket = TokenBucket(rate=10.0, capacity=2.0, now=0.0)
    assert [bucket.take(now=0.0) for _ in range(3)] == [True, True, False]
    assert not bucket.take(now=0.05)  # half a token refilled
    assert bucket.take(now=0.1)
    assert [bucket.take(now=5.0) for _ in range(3)] == [True, True, False]  # capped at capacity


async def test_a_budget_registered_before_the_quota_is_chained_after_it(
    nats_server: NatsServer,
) -> None:
    from jido import Services
    from jido.ai import BudgetExceededError, TokenBudget

    class Recording:
        """A user's budget: refuses above 50 tokens, records what it settles."""

        def __init__(self) -> None:
            self.settled: list[tuple[str, int]] = []

        async def reserve(self, agent_id: str, tokens: int) -> Any:
            if tokens > 50:
                raise BudgetExceededError("over the user's budget", details={"budget": "user"})
            return agent_id

        async def reconcile(self, reservation: Any, used: int) -> None:
            self.settled.append((reservation, used))

    if time.time() % 60 > 50:
        await asyncio.sleep(60 - time.time() % 60 + 0.1)
    mine = Recording()
    services = Services()
    services.add(TokenBudget, mine)
    async with node(nats_server.url, "a", services=services) as a:
        await a.set_quota(TENANT, Quota(max_llm_tokens_per_minute=100))
        budget = services.get(TokenBudget)
        assert budget is not mine and services.all(TokenBudget)[-1] is mine
        held = await budget.reserve("bot", 40)
        await budget.reconcile(held, 30)
        assert mine.settled == [("bot", 30)]
        with pytest.raises(BudgetExceededError):
            await budget.reserve("bot", 60)  # the quota took it, the user's budget refused
        assert a.quotas.tokens is not None and await a.quotas.tokens.used() == 30
        with pytest.raises(QuotaExceededError):
            await budget.reserve("bot", 80)
    assert services.all(TokenBudget) == [mine]  # the node's budget leaves with the node
