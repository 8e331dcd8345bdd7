"""The dashboard page in a real headless Chromium: nodes appear, agents and counters update live,
a node that leaves disappears and its ``leave`` event shows, with no script error on the page.

Uses the system Chromium (``/usr/bin/chromium`` or ``chromium`` on PATH) driven by Playwright.
Without Chromium the test is skipped locally; with ``CI`` set it fails instead.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright, expect

from foundation._node import Node
from foundation.observability.dashboard import Dashboard
from foundation.testing import NatsServer
from jido import Signal
from tests.foundation.apps import AGENTS, ClusteredCounter

pytestmark = pytest.mark.nats

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 15_000


def chromium_path() -> str | None:
    """The system Chromium, if installed."""
    for candidate in (
        "/usr/bin/chromium",
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    path = chromium_path()
    if path is None:
        reason = "no chromium binary (install it: apt-get install -y chromium)"
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser test: {reason}")
        pytest.skip(reason)
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


def add(n: int = 1) -> Signal:
    return Signal(type="counter.add", source="/test", data={"n": n})


async def test_page_shows_nodes_and_updates_live(
    nats_server: NatsServer, browser: Browser, tmp_path: Path
) -> None:
    a = Node(nats=nats_server.url, name="web-a", agents=AGENTS)
    b = Node(nats=nats_server.url, name="web-b", agents=AGENTS)
    problems: list[str] = []
    await a.start()
    try:
        async with Dashboard(a, refresh=0.1) as dash:
            page: Page = await browser.new_page(viewport={"width": 1400, "height": 900})
            page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))

            def on_console(msg: ConsoleMessage) -> None:
                if msg.type == "error":
                    problems.append(f"console error: {msg.text}")

            page.on("console", on_console)
            response = await page.goto(dash.url)
            assert response is not None and response.status == 200
            await expect(page).to_have_title("foundation — cluster dashboard")

            row_a = page.locator('#nodes tbody tr[data-node="web-a"]')
            await expect(row_a).to_be_visible(timeout=WAIT_MS)
            await expect(row_a.locator('[data-field="status"]')).to_have_text("up")
            await expect(page.locator("#live-text")).to_have_text("live", timeout=WAIT_MS)
            await expect(page.locator("#node-count")).to_have_text("1")
            await expect(page.locator("#self-node")).to_have_text("web-a")

            # a second node joins: its row appears without a reload
            await b.start()
            row_b = page.locator('#nodes tbody tr[data-node="web-b"]')
            await expect(row_b).to_be_visible(timeout=WAIT_MS)
            await expect(page.locator("#node-count")).to_have_text("2", timeout=WAIT_MS)
            await expect(page.locator("#events li[data-kind=join]").first).to_contain_text("web-b")

            # agents placed on b show up in its row and in the agents panel
            for i in range(3):
                await a.spawn(ClusteredCounter, id=f"shop-{i}", node="web-b")
            await expect(row_b.locator('[data-field="agents"]')).to_have_text("3", timeout=WAIT_MS)
            await expect(page.locator("#agent-count")).to_have_text("3")
            chips = page.locator('#agents .node-agents[data-node="web-b"] .chip')
            await expect(chips).to_have_text(["shop-0", "shop-1", "shop-2"], timeout=WAIT_MS)

            # calls reach b: its counter goes up on the page
            for _ in range(12):
                await a.ref("shop-1").call(add())
            calls = row_b.locator('[data-field="calls_in"]')
            await expect(calls).to_have_text("12", timeout=WAIT_MS)

            # one agent in detail: a click on its chip asks its owner (b) for its bookkeeping
            await chips.nth(1).click()
            panel = page.locator("#agent-panel")
            await expect(panel).to_be_visible()
            await expect(page.locator("#agent-title")).to_have_text("shop-1")

            def field(name: str) -> Any:
                return panel.locator(f'[data-field="{name}"] td').nth(1)

            await expect(field("owner")).to_contain_text("web-b", timeout=WAIT_MS)
            await expect(field("commands")).to_contain_text("12")
            await expect(field("status")).to_have_text("running")
            await expect(field("last-error")).to_have_text("none")
            await expect(page.locator("#agent-owners li")).to_contain_text(["claimed → web-b"])

            shot = tmp_path / "dashboard.png"
            await page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000

            # b leaves: its row goes away and the leave event is listed
            await b.stop()
            await expect(row_b).to_have_count(0, timeout=WAIT_MS)
            await expect(page.locator("#events li[data-kind=leave]").first).to_contain_text(
                "web-b", timeout=WAIT_MS
            )
            if getattr(a, "failover", None) is not None:
                # the leader (a, the only node left) moves b's critical agents to a
                await expect(page.locator("#leader")).to_contain_text("web-a", timeout=WAIT_MS)
                moves = page.locator("#events li[data-kind=moved]")
                await expect(moves).to_have_count(3, timeout=WAIT_MS)
                await expect(moves.first).to_contain_text("web-b → web-a")
                await expect(row_a.locator('[data-field="agents"]')).to_have_text("3")
                await expect(page.locator("#orphans")).to_have_text("")
                # the open detail follows the agent to its new owner
                await expect(field("owner")).to_contain_text("web-a", timeout=WAIT_MS)
                await expect(page.locator("#agent-owners li").last).to_contain_text("moved → web-a")
            else:
                await expect(page.locator("#orphans")).to_contain_text("shop-0@web-b")
            await page.screenshot(path=str(tmp_path / "after-leave.png"), full_page=True)
            await page.close()
    finally:
        await asyncio.gather(a.stop(), b.stop(), return_exceptions=True)
    assert problems == []
