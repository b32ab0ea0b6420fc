"""The dashboard in a real browser: Debian's Chromium, driven by Playwright, against the whole
platform as real processes. A client signs in with its key, watches a task it submitted through
the API go from running to completed on the page without a reload, opens the task's page,
checks a section's cost and downloads the section's result file; another tenant's task never
shows; records carrying ``<script>`` and ``<img onerror>`` render as text and run nothing; an
admin sees every tenant's tasks, filters by tenant and sees the totals.

Each step leaves a screenshot in ``.run/artifacts/dashboard/`` (the path is printed). Skipped
only when no Chromium is installed (``make test`` installs it: ``make chromium``).
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Page, async_playwright

from scripts.devstack import ROOT, Stack
from tests.e2e.conftest import FAST, changed_config, loopback_ports, running
from tests.e2e.test_platform import PASSWORD, wait_finished
from tests.helpers import free_port

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = ROOT / ".run" / "artifacts" / "dashboard"
XSS = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2; alert(2)">'
PORTFOLIO = {"Market Value": "12000000", "Investment Value": "11000000", "Top Asset": "Equity"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The platform with a config.json whose top_movers section answers with a file."""
    base = tmp_path_factory.mktemp("dashboard-stack")
    configured = changed_config(base, {"top_movers": {"output": "file"}})
    with running(base, loopback_ports(), FAST | configured, "e2e-dash") as platform:
        yield platform


@pytest.fixture(scope="module")
def shots() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob("*.png"):
        old.unlink()
    print(f"\ndashboard screenshots: {ARTIFACTS}")
    return ARTIFACTS


class Caller:
    """A principal of the stack: its key and the gateway called with it."""

    def __init__(self, stack: Stack, key: str, principal_id: str) -> None:
        self.key = key
        self.principal_id = principal_id
        self.http = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{stack.ports.gateway}",
            timeout=20,
            headers={"Authorization": f"Bearer {key}"},
        )

    async def submit(self, data: list[dict[str, Any]]) -> str:
        body = {"username": "user@example.com", "password": PASSWORD, "data": data}
        reply = await self.http.post("/task/submit", json=body)
        assert reply.status_code == 202, reply.text
        return str(reply.json()["task_id"])


@pytest.fixture
async def callers(stack: Stack) -> AsyncIterator[dict[str, Caller]]:
    """ann of tenant acme and bob of tenant beta (clients, new keys), and the admin."""
    made = {"admin": Caller(stack, stack.admin_key, "admin")}
    for name, tenant in (("ann", "acme"), ("bob", "beta")):
        reply = await made["admin"].http.post(
            "/admin/keys", json={"name": f"{name}{free_port()}", "tenant": tenant}
        )
        assert reply.status_code == 201, reply.text
        made[name] = Caller(stack, reply.json()["key"], reply.json()["principal_id"])
    yield made
    for caller in made.values():
        await caller.http.aclose()


@dataclass
class Tab:
    """A browser tab on the gateway, with the dialogs it opened (a script that ran) and every
    address it asked for."""

    page: Page
    dialogs: list[str] = field(default_factory=list)
    requested: list[str] = field(default_factory=list)


@pytest.fixture
async def tab(stack: Stack) -> AsyncIterator[Tab]:
    if CHROMIUM is None:
        pytest.skip("no chromium installed (make chromium installs it)")
    async with async_playwright() as driver:
        browser = await driver.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        context = await browser.new_context(
            base_url=f"http://127.0.0.1:{stack.ports.gateway}",
            viewport={"width": 1360, "height": 900},
            accept_downloads=True,
        )
        made = Tab(await context.new_page())

        async def dismiss(dialog: Any) -> None:
            made.dialogs.append(dialog.message)
            await dialog.dismiss()

        made.page.on("dialog", dismiss)
        made.page.on("request", lambda request: made.requested.append(request.url))
        made.page.set_default_timeout(30_000)
        try:
            yield made
        finally:
            await context.close()
            await browser.close()


async def sign_in(page: Page, key: str) -> None:
    await page.locator("#key").fill(key)
    await page.locator("#signin-form button[type=submit]").click()
    await page.locator("#app").wait_for(state="visible")


async def test_a_client_watches_its_task_complete_live_opens_it_and_downloads_its_file(
    stack: Stack, sim: httpx.AsyncClient, callers: dict[str, Caller], tab: Tab, shots: Path
) -> None:
    page = tab.page
    ann, bob = callers["ann"], callers["bob"]
    others = await bob.submit([PORTFOLIO])

    await page.goto("/dashboard")
    await page.locator("#signin").wait_for(state="visible")
    await page.screenshot(path=shots / "01-sign-in.png")
    await sign_in(page, ann.key)
    assert ann.principal_id in await page.locator("#who").inner_text()
    # A client gets neither the platform's totals nor the admins' filters.
    assert not await page.locator("#totals").is_visible()
    assert not await page.locator("#tenant").is_visible()
    await page.screenshot(path=shots / "02-signed-in.png")

    # From here on the page must not load again: what it shows comes from its own fetches.
    await page.evaluate("window.__sameDocument = true")
    loads: list[str] = []
    page.on("load", lambda: loads.append("load"))
    await page.evaluate(
        """() => {
            window.__statuses = {};
            new MutationObserver(() => {
                for (const row of document.querySelectorAll('tr[data-task]')) {
                    const seen = (window.__statuses[row.dataset.task] ||= []);
                    const percent = row.querySelector('.percent').textContent;
                    const now = `${row.dataset.status} ${percent}`;
                    if (seen[seen.length - 1] !== now) seen.push(now);
                }
            }).observe(document.querySelector('#tasks tbody'),
                       {subtree: true, childList: true, attributes: true});
        }"""
    )
    # Slow answers, so the task is seen running before it completes.
    (
        await sim.patch("/_sim/config", json={"latency_median_s": 8.0, "latency_sigma": 0.0})
    ).raise_for_status()
    task_id = await ann.submit([PORTFOLIO, {"top_movers_data": "AAPL +3.2%, MSFT -1.1%"}])

    row = page.locator(f'tr[data-task="{task_id}"]')
    await row.wait_for(state="visible")
    assert await row.get_attribute("data-status") not in ("completed", "error", "cancelled")
    await page.screenshot(path=shots / "03-running.png")
    await page.locator(f'tr[data-task="{task_id}"][data-status="completed"]').wait_for(
        timeout=60_000
    )
    await page.screenshot(path=shots / "04-completed.png")

    statuses = (await page.evaluate("window.__statuses"))[task_id]
    assert statuses[0].split()[0] in {
        "pending",
        "authenticating",
        "authenticated",
        "detecting_section",
        "processing",
    }, statuses
    assert statuses[-1] == "completed 100%", statuses
    assert await page.evaluate("window.__sameDocument") is True and loads == []
    # The stream's last event has the row read the task's sections once more.
    await row.locator(".sections .badge.completed").nth(1).wait_for()

    # Another tenant's task is nowhere on the page, not even by its owner's name.
    assert await page.locator(f'tr[data-task="{others}"]').count() == 0
    assert bob.principal_id not in await page.locator("#tasks").inner_text()

    # The task's page: a section's cost, its fallback path, the trace, its result file.
    result = (await ann.http.get(f"/task/{task_id}/result")).json()
    await row.locator("a").click()
    await page.wait_for_url(f"**/dashboard/tasks/{task_id}")
    section = page.locator('#sections tr[data-section="portfolio_snapshot"]')
    await section.wait_for()
    cost = result["data"]["portfolio_snapshot"]["cost"]
    assert await section.locator(".cost").inner_text() == f"${cost:.4f}"
    assert await page.locator("#task-status").inner_text() == "completed"
    steps = await page.locator("#trace .step").all_inner_texts()
    assert steps[0] == "Submit" and steps[-1] == "4. Aggregate", steps
    path = page.locator('.section-detail[data-section="portfolio_snapshot"] .attempts tbody tr')
    assert await path.count() >= 1
    assert "answered" in await path.last.inner_text()
    await page.screenshot(path=shots / "05-task.png", full_page=True)

    (made,) = result["data"]["top_movers"]["files"]
    async with page.expect_download() as started:
        await page.locator(f'button.download[data-file="{made["file_id"]}"]').click()
    download = await started.value
    assert download.suggested_filename == made["name"]
    saved = shots / "downloaded.md"
    await download.save_as(saved)
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == made["sha256"]
    await page.screenshot(path=shots / "06-downloaded.png")

    # The key went in headers only: never in any address the page asked for.
    assert tab.requested and not [url for url in tab.requested if ann.key in url]
    await wait_finished(bob.http, [others])


async def test_untrusted_records_render_as_text_and_run_nothing(
    callers: dict[str, Caller], tab: Tab, shots: Path
) -> None:
    page = tab.page
    ann = callers["ann"]
    task_id = await ann.submit([{"top_movers_data": XSS}, {**PORTFOLIO, "Top Asset": XSS}])
    await wait_finished(ann.http, [task_id])

    await page.goto(f"/dashboard/tasks/{task_id}")
    await sign_in(page, ann.key)
    records = page.locator("#records")
    # (A predicate run in the page would be refused: the page's policy forbids eval.)
    await page.locator("#records", has_text="onerror").wait_for()
    shown = await records.inner_text()
    assert "<script>window.__xss = 1</script>" in shown
    assert '<img src=x onerror=\\"window.__xss = 2; alert(2)\\">' in shown  # JSON-escaped quotes
    assert await page.locator("#records *").count() == 0  # text only, no element
    assert await page.locator("img").count() == 0
    assert await page.evaluate("window.__xss") is None
    assert tab.dialogs == []
    await page.screenshot(path=shots / "07-untrusted-records.png", full_page=True)


async def test_an_admin_sees_every_tenant_filters_by_tenant_and_sees_the_totals(
    callers: dict[str, Caller], tab: Tab, shots: Path
) -> None:
    page = tab.page
    ann, bob = callers["ann"], callers["bob"]
    theirs = {"ann": await ann.submit([PORTFOLIO]), "bob": await bob.submit([PORTFOLIO])}
    await wait_finished(ann.http, [theirs["ann"]])
    await wait_finished(bob.http, [theirs["bob"]])

    await page.goto("/dashboard")
    await sign_in(page, callers["admin"].key)
    for task_id in theirs.values():
        await page.locator(f'tr[data-task="{task_id}"]').wait_for()
    await page.locator("#totals").wait_for(state="visible")
    await page.locator("#spend tr", has_text=ann.principal_id.split("/")[0]).wait_for()
    assert "closed" in await page.locator("#breakers").inner_text()
    by_state = await page.locator("#by-state").inner_text()
    assert "processing" in by_state and "completed (since start)" in by_state
    await page.screenshot(path=shots / "08-admin.png", full_page=True)

    await page.locator("#tenant").fill("beta")
    await page.locator("#filters button[type=submit]").click()
    await page.wait_for_url("**/dashboard?tenant=beta")
    await page.locator(f'tr[data-task="{theirs["ann"]}"]').wait_for(state="detached")
    await page.locator(f'tr[data-task="{theirs["bob"]}"]').wait_for()
    owners = await page.locator("#tasks td.owner").all_inner_texts()
    assert owners and all("beta" in owner for owner in owners), owners
    await page.screenshot(path=shots / "09-admin-tenant-beta.png", full_page=True)
