"""The report viewer at `/reports/ui` in a real browser: headless Chromium (Debian's package,
driven by Playwright) against a deployed system with posted events. Each section must show
what the API answers for the same filters; the page runs under its own Content Security
Policy, as users get it.

Screenshots of every section go to `ADFUNNEL_SCREENSHOTS` (CI sets it), else a temporary
folder.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, Locator, Page, Route, expect, sync_playwright
from ray import serve

import serve_app
from adfunnel import replay, ui
from adfunnel.replay import ReplayOptions
from adfunnel.testing import Deployed, run, wait_until
from adfunnel.tools.generator import Generator

pytestmark = pytest.mark.integration

KEY = "viewer-test-key"


@pytest.fixture(scope="module")
def browser(module_system: Deployed) -> Iterator[Browser]:
    # Playwright's sync API marks an event loop as running in this thread until it stops,
    # and the system's fixtures call `asyncio.run`: the system is set up first, so it is
    # torn down last, outside that loop.
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    # Not a skip: without a browser this module proves nothing, and CI installs one.
    assert executable, "no Chromium on PATH: `bash .ci/test-deps` installs Debian's chromium"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, headless=True)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(os.environ.get("ADFUNNEL_SCREENSHOTS") or tmp_path_factory.mktemp("ui"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def posted(module_system: Deployed) -> dict[str, Any]:
    """3,000 events of the last 12 hours, returning users among them, and rejected ones."""
    generator = Generator(seed=77, returning_share=0.3)
    events = generator.batch(3_000, out_of_order_share=0.3)
    bad = [generator.corrupt(generator.event()) for _ in range(12)]
    with module_system.client() as client:
        answer = client.post("/webhook", json=events + bad).json()
        assert answer["rejected"] == len(bad), answer
        stored = answer["accepted"]
        wait_until(lambda: module_system.total() >= stored, what="the posted events stored")

        def rejected() -> bool:
            body = client.get("/reports/rejected").json()
            return bool(body["total"] >= len(bad))

        wait_until(rejected, what="the rejected events recorded")
    return {"events": events, "correlation_id": answer["correlationId"]}


def _watched(opened: Page, errors: list[str]) -> Page:
    """`opened`, with its script errors and what its Content-Security-Policy blocked (which
    the browser only logs) added to `errors`."""
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.on(
        "console",
        lambda message: (
            errors.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    return opened


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    yield _watched(context.new_page(), errors)
    context.close()
    assert not errors, f"the page's script failed or was blocked: {errors}"


def _open(page: Page, system: Deployed, query: str = "") -> None:
    page.goto(f"{system.base_url}/reports/ui{query}")
    _settled(page)


def _settled(page: Page) -> None:
    expect(page.locator("section.report[aria-busy=true]")).to_have_count(0)


def _api(system: Deployed, path: str, **params: str) -> Any:
    with system.client() as client:
        answer = client.get(f"/reports/{path}", params=params)
        answer.raise_for_status()
        return answer.json()


def _value(node: Locator) -> str:
    """What a cell shows: numbers by the exact value they were drawn from, text as text."""
    value = node.get_attribute("data-value")
    return value if value is not None else node.inner_text().strip()


def _rows(table: Locator) -> list[list[str]]:
    """The data rows of a table (not "and N more"), each cell but the bars."""
    return [
        [_value(cell) for cell in row.locator("td:not(.bar), th").all()]
        for row in table.locator("tbody tr:not(.more):not(.empty)").all()
    ]


def _field(page: Page, section: str, name: str) -> Locator:
    return page.locator(f'#{section} [data-field="{name}"]')


def _number(page: Page, section: str, name: str) -> int:
    return int(_value(_field(page, section, name)))


def _held(page: Page, path: str) -> list[Route]:
    """The requests `page` sends to `path`, held until the test continues each one."""
    held: list[Route] = []

    def hold(route: Route) -> None:
        held.append(route)

    page.route(lambda url: urlsplit(url).path == path, hold)
    return held


def _replay_text(state: dict[str, Any] | None) -> str:
    """How the page shows a sample's replay state."""
    return "not replayed" if state is None else f"{state['outcome']} ({state['replayedAt']})"


def _drawn(page: Page, section: str) -> list[tuple[str | None, str | None]]:
    """The bars of a section's series chart: (bucket, the value each was drawn from)."""
    bars = _field(page, section, "series").locator("rect").all()
    return [(b.get_attribute("data-bucket"), b.get_attribute("data-value")) for b in bars]


def _ranked(items: list[dict[str, Any]], *keys: str, top: int = 10) -> list[list[str]]:
    return [[str(item[k]) for k in keys] for item in items[:top]]


def test_the_viewer_files_are_served_with_their_policy(module_system: Deployed) -> None:
    with module_system.client() as client:
        for name in ui.FILES:
            path = "/reports/ui" if name == "index.html" else f"/reports/ui/{name}"
            answer = client.get(path)
            assert answer.status_code == 200, path
            assert answer.headers["content-type"] == ui.asset(name).media_type  # type: ignore[union-attr]
            assert "script-src 'self'" in answer.headers["content-security-policy"]
        missing = client.get("/reports/ui/secrets.env")
        assert (missing.status_code, missing.json()["error"]) == (404, "not_found")
        # Its relative links resolve only at /reports/ui: the other spellings lead there.
        for other in ("/reports/ui/", "/reports/ui/index.html"):
            moved = client.get(other)
            assert moved.status_code == 308, other
            assert httpx.URL(f"{module_system.base_url}{other}").join(
                moved.headers["location"]
            ) == httpx.URL(f"{module_system.base_url}/reports/ui")
        paths = client.get("/reports/openapi.json").json()["paths"]
        assert "/events" in paths
        assert not [p for p in paths if p.startswith("/ui")]


def test_every_section_shows_what_the_api_answers(
    page: Page, module_system: Deployed, posted: dict[str, Any], screenshots: Path
) -> None:
    _open(page, module_system, "?interval=hour")
    for section in ("events", "revenue", "demographics", "rejected"):
        expect(page.locator(f"#{section}")).to_have_attribute("data-state", "ready")

    events = _api(module_system, "events", interval="hour")
    assert _number(page, "events", "total") == events["total"] > 0
    assert _number(page, "events", "breakdown-total") == events["total"]
    assert _rows(_field(page, "events", "breakdown")) == [
        [r["source"], r["funnelStage"], r["eventType"], str(r["count"])]
        for r in events["breakdown"]
    ]
    assert _drawn(page, "events") == [(p["bucket"], str(p["count"])) for p in events["series"]]

    revenue = _api(module_system, "revenue", interval="hour")
    # Exact decimal strings, shown as they came.
    assert _field(page, "revenue", "total").inner_text() == revenue["total"]
    assert _number(page, "revenue", "transactions") == revenue["transactions"] > 0
    assert _rows(_field(page, "revenue", "bySource")) == _ranked(
        revenue["bySource"], "source", "revenue", "transactions"
    )
    assert revenue["byCampaign"]
    assert _rows(_field(page, "revenue", "byCampaign")) == _ranked(
        revenue["byCampaign"], "campaignId", "revenue", "transactions"
    )
    assert _drawn(page, "revenue") == [(p["bucket"], p["revenue"]) for p in revenue["series"]]
    assert revenue["series"]

    demographics = _api(module_system, "demographics")
    facebook, tiktok = demographics["facebook"], demographics["tiktok"]
    assert _number(page, "demographics", "facebook-users") == facebook["users"] > 0
    for name, keys in (("age", ("bucket",)), ("gender", ("gender",))):
        table = _field(page, "demographics", f"facebook-{name}")
        assert _rows(table) == _ranked(facebook[name], *keys, "users", top=100)
    assert _rows(_field(page, "demographics", "facebook-countries")) == _ranked(
        facebook["countries"], "country", "users"
    )
    assert _rows(_field(page, "demographics", "facebook-cities")) == _ranked(
        facebook["cities"], "city", "country", "users"
    )
    assert _number(page, "demographics", "tiktok-users") == tiktok["users"] > 0
    assert _rows(_field(page, "demographics", "tiktok-followers")) == [
        [name, str(tiktok["followers"][name])] for name in ("min", "max", "avg", "median")
    ]
    assert _rows(_field(page, "demographics", "tiktok-followerBuckets")) == _ranked(
        tiktok["followerBuckets"], "bucket", "users"
    )
    assert _rows(_field(page, "demographics", "tiktok-devices")) == _ranked(
        tiktok["devices"], "device", "users"
    )
    assert _rows(_field(page, "demographics", "tiktok-countries")) == _ranked(
        tiktok["countries"], "country", "users"
    )

    rejected = _api(module_system, "rejected", limit="10")
    assert _number(page, "rejected", "total") == rejected["total"] >= 12
    assert _number(page, "rejected", "notReplayed") == rejected["replay"]["notReplayed"]
    assert _rows(_field(page, "rejected", "byReason")) == _ranked(
        rejected["byReason"], "reason", "count"
    )
    samples = _rows(_field(page, "rejected", "samples"))
    assert [s[:4] for s in samples] == [
        [s["receivedAt"], s["reason"], s["correlationId"], _replay_text(s["replay"])]
        for s in rejected["samples"]
    ]
    assert {s[2] for s in samples} == {posted["correlation_id"]}

    for section in ("events", "revenue", "demographics", "rejected"):
        page.locator(f"#{section}").screenshot(path=screenshots / f"{section}.png")
    page.screenshot(path=screenshots / "page.png", full_page=True)


def test_a_filter_changes_the_request_the_view_and_the_address(
    page: Page, module_system: Deployed, posted: dict[str, Any]
) -> None:
    _open(page, module_system)
    everything = _number(page, "events", "total")
    page.select_option('#filters select[name="source"]', "tiktok")
    _settled(page)

    events = page.locator("#events")
    request = urlsplit(events.get_attribute("data-request") or "")
    assert (request.path, parse_qs(request.query)) == ("/reports/events", {"source": ["tiktok"]})
    assert parse_qs(urlsplit(page.url).query) == {"source": ["tiktok"]}
    tiktok = _api(module_system, "events", source="tiktok")["total"]
    assert _number(page, "events", "total") == tiktok < everything
    expect(page.locator('#demographics [data-part="facebook"]')).to_be_hidden()
    # The event types offered are the chosen source's.
    offered = page.locator('#filters select[name="eventType"] option').all_inner_texts()
    assert "purchase" in offered and "checkout.complete" not in offered

    page.select_option('#filters select[name="eventType"]', "purchase")
    _settled(page)
    purchases = _api(module_system, "events", source="tiktok", eventType="purchase")["total"]
    assert _number(page, "events", "total") == purchases
    assert parse_qs(urlsplit(page.url).query) == {
        "source": ["tiktok"],
        "eventType": ["purchase"],
    }

    # A shared link opens the same view.
    shared = page.url
    page.goto("about:blank")
    page.goto(shared)
    _settled(page)
    assert page.locator('#filters select[name="eventType"]').input_value() == "purchase"
    assert _number(page, "events", "total") == purchases

    # A quick range sets `from`, and the reports are asked for it.
    page.goto(f"{module_system.base_url}/reports/ui")
    _settled(page)
    page.get_by_role("button", name="Last hour").click()
    _settled(page)
    start = page.locator('#filters input[name="from"]').input_value()
    assert start
    query = parse_qs(urlsplit(events.get_attribute("data-request") or "").query)
    assert query == {"from": [start]}
    assert (
        _number(page, "events", "total")
        == _api(module_system, "events", **{"from": start})["total"]
    )

    # A link may carry any ISO-8601 time the API takes, offsets included, and keeps it.
    page.goto(f"{module_system.base_url}/reports/ui?from=2026-01-01T00:00:00Z")
    _settled(page)
    assert page.locator('#filters input[name="from"]').input_value() == "2026-01-01T00:00:00Z"
    query = parse_qs(urlsplit(events.get_attribute("data-request") or "").query)
    assert query == {"from": ["2026-01-01T00:00:00Z"]}

    # The breakdown sorts by a column on a click, and back on the next.
    page.locator("#events th[data-key=eventType]").click()
    types = [row[2] for row in _rows(_field(page, "events", "breakdown"))]
    assert types == sorted(types)
    page.locator("#events th[data-key=eventType]").click()
    assert [row[2] for row in _rows(_field(page, "events", "breakdown"))] == sorted(
        types, reverse=True
    )


def test_a_report_shows_that_it_is_loading(
    page: Page, module_system: Deployed, posted: dict[str, Any]
) -> None:
    held = _held(page, "/reports/events")
    page.goto(f"{module_system.base_url}/reports/ui")
    events = page.locator("#events")
    expect(events).to_have_attribute("data-state", "loading")
    expect(events).to_have_attribute("aria-busy", "true")
    expect(page.locator("#events .status")).to_have_text("Loading…")
    # The other reports do not wait for it.
    expect(page.locator("#revenue")).to_have_attribute("data-state", "ready")
    assert len(held) == 1
    held[0].continue_()
    expect(events).to_have_attribute("data-state", "ready")
    expect(page.locator("#events .status")).to_have_text("")


def test_rejected_samples_show_their_replay(
    page: Page, module_system: Deployed, posted: dict[str, Any]
) -> None:
    options = ReplayOptions(
        module_system.settings["database_url"], f"{module_system.base_url}/webhook"
    )
    # `adfunnel replay` runs its own event loop, which this thread's browser already holds.
    with ThreadPoolExecutor(1) as pool:
        summary = pool.submit(run, replay.replay(options)).result()
    # Sent again unedited, each is refused again, and says so.
    assert (summary.selected, summary.rejected) == (12, 12)
    _open(page, module_system)
    rejected = _api(module_system, "rejected", limit="10")
    assert _number(page, "rejected", "replayed") == rejected["replay"]["replayed"] == 12
    shown = [row[3] for row in _rows(_field(page, "rejected", "samples"))]
    assert shown == [_replay_text(s["replay"]) for s in rejected["samples"]]
    assert [text for text in shown if text.startswith("rejected: ")]


@pytest.mark.parametrize(
    ("query", "refusing"),
    [
        (
            {"from": "2026-12-02T00:00:00", "to": "2026-12-01T00:00:00"},
            ("events", "revenue", "demographics", "rejected"),
        ),
        # An edited link: the filter the API does not know is sent all the same, and named.
        ({"source": "myspace"}, ("events", "revenue", "demographics")),
    ],
)
def test_a_refused_filter_shows_the_api_message(
    page: Page,
    module_system: Deployed,
    posted: dict[str, Any],
    query: dict[str, str],
    refusing: tuple[str, ...],
) -> None:
    with module_system.client() as client:
        refused = client.get("/reports/events", params=query)
    assert refused.status_code == 400
    message = refused.json()["message"]
    _open(page, module_system, "?" + "&".join(f"{k}={v}" for k, v in query.items()))
    for section in refusing:
        expect(page.locator(f"#{section}")).to_have_attribute("data-state", "error")
        expect(page.locator(f"#{section} .status")).to_contain_text(message)
        expect(page.locator(f"#{section} .body")).to_be_hidden()
    for section in {"events", "revenue", "demographics", "rejected"} - set(refusing):
        expect(page.locator(f"#{section}")).to_have_attribute("data-state", "ready")


def test_one_event_shows_its_trace(
    page: Page, module_system: Deployed, posted: dict[str, Any]
) -> None:
    event_id = posted["events"][5]["eventId"]
    trace = _api(module_system, f"events/{event_id}")
    _open(page, module_system)
    page.fill('#lookup-form input[name="eventId"]', event_id)
    page.get_by_role("button", name="Show trace").click()
    _settled(page)
    expect(page.locator("#lookup")).to_have_attribute("data-state", "ready")
    for name in ("correlationId", "receivedAt", "storedAt"):
        assert _field(page, "lookup", name).inner_text() == trace[name]
    assert json.loads(_field(page, "lookup", "event").inner_text()) == trace["event"]
    assert parse_qs(urlsplit(page.url).query) == {"event": [event_id]}

    page.fill('#lookup-form input[name="eventId"]', "fb-no-such-event")
    page.get_by_role("button", name="Show trace").click()
    _settled(page)
    expect(page.locator("#lookup")).to_have_attribute("data-state", "error")
    expect(page.locator("#lookup .status")).to_contain_text(
        "no stored event with eventId 'fb-no-such-event'"
    )


def _reporter(settings: dict[str, Any]) -> None:
    serve.run(
        serve_app.reports(serve_app.ReportsArgs(settings=settings)),
        name="reports",
        route_prefix="/reports",
    )


def test_an_api_key_is_asked_for_and_kept_for_the_tab(
    page: Page, module_system: Deployed, posted: dict[str, Any]
) -> None:
    stored = module_system.total()
    _reporter({**module_system.settings, "reports_api_keys": KEY})
    try:
        with module_system.client() as client:

            def locked() -> bool:
                return client.get("/reports/events").status_code == 401

            wait_until(locked, what="the reporter with keys")
            # The page itself carries no data: it loads without a key.
            assert client.get("/reports/ui").status_code == 200
        page.goto(f"{module_system.base_url}/reports/ui")
        dialog = page.locator("#key-dialog")
        expect(dialog).to_be_visible()
        expect(dialog).to_contain_text("this report needs an API key")

        page.fill('#key-dialog input[name="key"]', "wrong-key")
        page.get_by_role("button", name="Use this key").click()
        expect(dialog).to_be_visible()
        expect(dialog).to_contain_text("the API key is not one of REPORTS_API_KEYS")

        page.fill('#key-dialog input[name="key"]', KEY)
        page.get_by_role("button", name="Use this key").click()
        expect(dialog).to_be_hidden()
        _settled(page)
        expect(page.locator("#events")).to_have_attribute("data-state", "ready")
        assert _number(page, "events", "total") == stored
        # Kept for the tab: a reload asks no more.
        page.reload()
        _settled(page)
        expect(dialog).to_be_hidden()
        expect(page.locator("#events")).to_have_attribute("data-state", "ready")
        # sessionStorage only: nothing is left on disk for the next session.
        storage = page.context.storage_state()
        assert not [o for o in storage["origins"] if o.get("localStorage")]
        assert not storage["cookies"]

        # Dismissed instead of answered, the prompt leaves the API's message in each section,
        # also in one whose 401 comes only after the dismissal: it does not ask again.
        errors: list[str] = []
        fresh = _watched(page.context.browser.new_page(), errors)  # type: ignore[union-attr]
        late = _held(fresh, "/reports/demographics")
        try:
            fresh.goto(f"{module_system.base_url}/reports/ui")
            prompt = fresh.locator("#key-dialog")
            expect(prompt).to_be_visible()
            fresh.keyboard.press("Escape")
            expect(prompt).to_be_hidden()
            # The route handler runs only while Playwright has the loop: wait in the page.
            for _ in range(100):
                if late:
                    break
                fresh.wait_for_timeout(50)
            late[0].continue_()
            _settled(fresh)
            expect(prompt).to_be_hidden()
            for section in ("events", "revenue", "demographics", "rejected"):
                expect(fresh.locator(f"#{section}")).to_have_attribute("data-state", "error")
                expect(fresh.locator(f"#{section} .status")).to_contain_text("needs an API key")
            # A later action's reports ask again.
            fresh.get_by_role("button", name="All time").click()
            expect(prompt).to_be_visible()
        finally:
            fresh.close()
        assert not errors, errors
    finally:
        _reporter(module_system.settings)
        with module_system.client() as client:
            wait_until(
                lambda: client.get("/reports/events").status_code == 200,
                what="the reporter without keys",
            )
