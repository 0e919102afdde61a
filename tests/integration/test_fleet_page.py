"""The fleet page in a real browser (Playwright driving Debian's Chromium) against the real system.

Real Redis, real tmux pool, fake agents, the inline Dispatcher launching for real; the page only
learns what happens through its live stream.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from pathlib import Path
from typing import Any

from system_fixtures import add_task
from web_fixtures import PASSWORD, USER, FleetServer, browser, fleet_server, page  # noqa: F401

from dispatcher.core.config import Settings
from dispatcher.flows import claim as cl
from dispatcher.flows.dispatch import Dispatcher
from dispatcher.inbox import files as aq

SHOTS = Path(__file__).resolve().parents[2] / "docs"


def _expect() -> Any:
    from playwright.sync_api import expect

    return expect


def _shot(pg: Any, name: str, tmp_path: Path) -> None:
    """Keep a screenshot: in the test's tmp dir, and in docs/ when AQ_UPDATE_SCREENSHOTS=1 (README shows it)."""
    pg.screenshot(path=str(tmp_path / name), full_page=True)
    if os.environ.get("AQ_UPDATE_SCREENSHOTS") == "1":
        shutil.copyfile(tmp_path / name, SHOTS / name)


def test_page_refuses_without_auth_and_loads_with_it(browser: Any, fleet_server: FleetServer) -> None:
    from playwright.sync_api import Error

    for creds in (None, {"username": USER, "password": "wrong"}):
        ctx = browser.new_context(http_credentials=creds) if creds else browser.new_context()
        pg = ctx.new_page()
        try:
            res = pg.goto(fleet_server.url + "/")
        except Error as exc:  # Chromium may give up on the 401 itself (no one to ask for a password)
            assert "ERR_INVALID_AUTH_CREDENTIALS" in str(exc)
        else:
            assert res is not None and res.status == 401, creds
            assert "Sessions" not in pg.content()
        ctx.close()
    ctx = browser.new_context(http_credentials={"username": USER, "password": PASSWORD})
    pg = ctx.new_page()
    res = pg.goto(fleet_server.url + "/")
    assert res is not None and res.status == 200
    expect = _expect()
    expect(pg.locator("#conn")).to_have_text("live", timeout=15_000)
    expect(pg.locator("#sessions article.card")).to_have_count(3)
    # From inside the browser: the same requests without credentials get 401 (and no data).
    for path in ("/", "/api/snapshot", "/api/stream", "/static/app.js"):
        status = pg.evaluate("p => fetch(p, {credentials: 'omit'}).then(r => r.status)", path)
        assert status == 401, path
    ctx.close()


def test_sessions_and_a_task_moving_from_pending_to_done_live(page: Any, fleet_server: FleetServer, disp: Dispatcher,
                                                              settings: Settings, tmp_path: Path) -> None:
    expect = _expect()
    add_task(settings, "alpha", "SETUP-1", "@fake: done")
    add_task(settings, "alpha", "FEAT-2", "@fake: done", depends_on=("alpha:SETUP-1",))
    add_task(settings, "beta", "DOCS-1", "@fake: sleep 60000", priority="low")
    page.goto(fleet_server.url + "/")
    row = page.locator('#projects tr[data-task="alpha:SETUP-1"]')
    expect(row).to_have_attribute("data-state", "ready", timeout=15_000)
    expect(page.locator('#projects tr[data-task="alpha:FEAT-2"]')).to_have_attribute("data-state", "blocked")
    for name in ("ccl-auto-0", "ccl-auto-1", "ccl-auto-2"):
        expect(page.locator(f'#sessions article[data-session="{name}"]')).to_have_attribute("data-state", "idle")

    assert disp.assign_next("ccl-auto-0").status == "dispatched"
    expect(row).to_have_attribute("data-state", "done", timeout=30_000)
    card = page.locator('#sessions article[data-session="ccl-auto-0"]')
    expect(card.locator(".task")).to_have_text("alpha:SETUP-1")
    expect(card.locator(".screen")).not_to_be_empty()
    expect(page.locator('#events li[data-kind="launched"][data-task="alpha:SETUP-1"]')).to_have_count(1)
    # The dependent is released: ready once its dependency is done.
    expect(page.locator('#projects tr[data-task="alpha:FEAT-2"]')).to_have_attribute("data-state", "ready")
    assert disp.assign_next("ccl-auto-1").status == "dispatched"
    expect(page.locator('#projects tr[data-task="alpha:FEAT-2"]')).to_have_attribute("data-state", "done",
                                                                                    timeout=30_000)
    assert disp.assign_next("ccl-auto-2").status == "dispatched"  # a long one, to show a working agent
    busy = page.locator('#sessions article[data-session="ccl-auto-2"]')
    expect(busy).to_have_attribute("data-state", "working", timeout=30_000)
    expect(page.locator('#projects tr[data-task="beta:DOCS-1"]')).to_have_attribute("data-state", "dispatched")
    # What else a fleet shows: a failed task holding up a chain, work waiting on it.
    failed = add_task(settings, "beta", "API-7", "@fake: done", priority="high")
    cl.fail(cl.claim(failed), "agent went idle without moving API-7.md to done/ (last screen: tests fail)")
    add_task(settings, "beta", "UI-8", depends_on=("beta:API-7",))
    add_task(settings, "beta", "RELEASE-9", depends_on=("beta:UI-8", "alpha:FEAT-2"))
    expect(page.locator('#projects tr[data-task="beta:API-7"] button.retry')).to_have_count(1, timeout=15_000)
    expect(page.locator('#graph g.node[data-task="beta:RELEASE-9"]')).to_have_attribute("data-state", "blocked")
    _shot(page, "fleet-page.png", tmp_path)

    # "open screen" shows that session's whole screen.
    with page.context.expect_page() as opened:
        card.locator("a.open").click()
    screen = opened.value
    expect(screen.locator("#attach")).to_have_text(f"tmux -L {settings.tmux.socket_name} attach -t =ccl-auto-0")
    expect(screen.locator("#screen")).not_to_be_empty()
    screen.close()


def test_graph_highlights_a_cycle(page: Any, fleet_server: FleetServer, settings: Settings, tmp_path: Path) -> None:
    expect = _expect()
    add_task(settings, "alpha", "A", depends_on=("beta:B",))
    add_task(settings, "beta", "B", depends_on=("alpha:A",))
    add_task(settings, "alpha", "C", depends_on=("alpha:A", "alpha:GONE"))
    add_task(settings, "alpha", "D")
    page.goto(fleet_server.url + "/")
    graph = page.locator("#graph svg")
    expect(graph.locator("g.node.cycle")).to_have_count(2, timeout=15_000)
    expect(graph.locator('g.node[data-task="alpha:A"]')).to_have_class("node blocked cycle alert")
    expect(graph.locator("path.edge.cycle")).to_have_count(2)
    expect(graph.locator('path.edge[data-from="alpha:A"][data-to="alpha:C"]')).not_to_have_class("edge cycle")
    expect(graph.locator('g.node[data-task="alpha:GONE"]')).to_have_attribute("data-state", "missing")
    expect(graph.locator('g.node[data-task="alpha:D"]')).to_have_attribute("data-state", "ready")
    expect(page.locator("#cycles li")).to_have_count(1)
    expect(page.locator("#cycles li")).to_contain_text("alpha:A → beta:B → alpha:A")
    # The stroke the stylesheet gives a cycle edge really is red (the CSS applies inside the inline SVG).
    colour = graph.locator("path.edge.cycle").first.evaluate("e => getComputedStyle(e).stroke")
    assert colour == "rgb(224, 49, 49)", colour
    graph.screenshot(path=str(tmp_path / "graph.png"))


def test_retry_button_requeues_a_failed_task(page: Any, fleet_server: FleetServer, settings: Settings) -> None:
    expect = _expect()
    path = add_task(settings, "alpha", "FIX-12", "@fake: done")
    cl.fail(cl.claim(path), "agent exited without moving FIX-12.md to done/")
    add_task(settings, "alpha", "NEXT", depends_on=("alpha:FIX-12",))
    page.goto(fleet_server.url + "/")
    row = page.locator('#projects tr[data-task="alpha:FIX-12"]')
    expect(row).to_have_attribute("data-state", "failed", timeout=15_000)
    expect(row.locator(".reason")).to_contain_text("agent exited without moving")
    row.locator("button.retry").click()
    expect(page.locator("#action-msg")).to_have_text("FIX-12.md")
    expect(row).to_have_attribute("data-state", "ready", timeout=15_000)
    expect(row.locator("button.retry")).to_have_count(0)
    expect(page.locator('#events li[data-kind="retried"][data-task="alpha:FIX-12"]')).to_have_count(1)
    assert aq.project(settings.projects_dir, "alpha").task_path("FIX-12").exists()


def test_pause_and_resume_buttons(page: Any, fleet_server: FleetServer) -> None:
    expect = _expect()
    page.goto(fleet_server.url + "/")
    expect(page.locator("#conn")).to_have_text("live", timeout=15_000)
    page.fill('#pause-form input[name="until"]', "2h")
    page.fill('#pause-form input[name="reason"]', "API maintenance")
    page.click("#pause-btn")
    expect(page.locator("#pause-banner")).to_contain_text("paused by operator", timeout=15_000)
    expect(page.locator("#pause-banner")).to_contain_text("API maintenance")
    expect(page.locator('#events li[data-kind="paused"]')).to_have_count(1)
    page.click("#resume-btn")
    expect(page.locator("#pause-banner")).to_have_count(0, timeout=15_000)
    expect(page.locator('#events li[data-kind="unpaused"]')).to_have_count(1)


def test_hosts_refs_and_hostile_text_render_as_text(page: Any, fleet_server: FleetServer, settings: Settings) -> None:
    """A multi-host status (hosts, refs) renders; task text, details and events never become markup."""
    expect = _expect()
    evil = '<img src=x onerror="window.__pwned=1">'
    path = add_task(settings, "alpha", "X1")
    path.write_text(f"---\ntitle: '{evil}'\n---\nbody\n")
    auth = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    snap = page.request.get(fleet_server.url + "/api/snapshot", headers={"Authorization": auth}).json()
    assert snap["tasks"]["alpha"][0]["title"] == evil
    snap["status"]["hosts"] = [
        {"host": "box-a", "alive": True, "last_seen_s": 2, "version": "0.1.0", "account": "a@x", "sessions": 3,
         "working": 1, "idle": 2, "this": True},
        {"host": "box-b", "alive": False, "last_seen_s": 700, "version": "0.1.0", "account": "b@x", "sessions": 2,
         "working": 0, "idle": 0, "this": False}]
    for row in snap["status"]["sessions"]:
        row["host"], row["ref"] = "box-a", f"box-a/{row['session']}"
        row["detail"] = evil
    event = {"id": "1-1", "time": snap["time"], "kind": "failed", "task": "alpha:X1", "session": "ccl-auto-0",
             "detail": evil}
    body = (f"event: snapshot\ndata: {json.dumps(snap)}\n\n" f"id: 1-1\nevent: event\ndata: {json.dumps(event)}\n\n")
    page.route("**/api/stream", lambda route: route.fulfill(status=200, body=body,
                                                            headers={"Content-Type": "text/event-stream"}))
    page.goto(fleet_server.url + "/")
    expect(page.locator("#hosts-section")).to_be_visible(timeout=15_000)
    expect(page.locator("#hosts tbody tr")).to_have_count(2)
    expect(page.locator("#hosts tbody tr.dead")).to_contain_text("box-b")
    expect(page.locator('#sessions article[data-session="ccl-auto-0"] .name')).to_have_text("box-a/ccl-auto-0")
    expect(page.locator('#projects tr[data-task="alpha:X1"] .title')).to_have_text(evil)
    expect(page.locator('#sessions article[data-session="ccl-auto-0"] .detail')).to_have_text(evil)
    expect(page.locator('#events li[data-kind="failed"] .detail')).to_have_text(evil)
    assert page.locator("img").count() == 0 and page.evaluate("window.__pwned") is None
