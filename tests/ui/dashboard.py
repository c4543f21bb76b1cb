"""The dashboard in a real Chromium, driven by Playwright against a running `flotilla up`.

Run by tests/dashboard.rs, which starts the system and passes its addresses:

    python3 tests/ui/dashboard.py --control http://127.0.0.1:PORT --gateway http://127.0.0.1:PORT \
        --data-dir DIR --flotilla BINARY --screenshots DIR

Each step prints one line; any failure raises (non-zero exit) naming what was expected.
"""

import argparse
import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request

from playwright.sync_api import expect, sync_playwright

import events_logs
import sagas

# Playwright's own browser download does not work here: the machine's Chromium, with the flags
# a CI box needs.
CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOP = ["catalog", "identity", "inventory", "payments", "shipping", "orders", "notifications"]


class NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer to look at, not to follow."""

    def redirect_request(self, *args, **kwargs):
        return None


def step(text):
    print(f"- {text}", flush=True)


def load_ms(page):
    """How long the last navigation took to its DOMContentLoaded, by the browser's clock."""
    return page.evaluate(
        "() => { const n = performance.getEntriesByType('navigation')[0];"
        " return n ? n.domContentLoadedEventEnd - n.startTime : 0; }"
    )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--control", required=True)
    parser.add_argument("--gateway", required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--flotilla", required=True)
    parser.add_argument("--screenshots", required=True)
    # Timing belongs in benchmarks: the test reports load times, and fails on them only when
    # asked (a release build on a quiet machine, e.g. `--budget-ms 200`).
    parser.add_argument("--budget-ms", type=float)
    args = parser.parse_args()
    token = open(f"{args.data_dir}/token").read().strip()
    ui = f"{args.control}/ui"
    timings = {}

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        page = context.new_page()
        problems = []
        page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))

        step("refused without a credential: /ui sends to the sign-in form")
        page.goto(ui)
        expect(page).to_have_url(re.compile(r"/ui/sign-in\?next="))
        page.screenshot(path=f"{args.screenshots}/sign-in.png")
        try:
            urllib.request.build_opener(NoRedirect).open(f"{ui}/live", timeout=5)
            raise AssertionError("/ui/live answered without a session")
        except urllib.error.HTTPError as refused:
            assert refused.code in (303, 401), refused.code

        step("a wrong credential is refused, saying so")
        page.fill("#credential", "not-a-credential")
        page.click("button[type=submit]")
        expect(page.locator(".error")).to_contain_text("not a credential")

        step("signing in with the operator's token lands on the overview")
        page.fill("#credential", token)
        page.click("button[type=submit]")
        expect(page).to_have_url(ui)
        cookie = next(c for c in context.cookies() if c["name"] == "flotilla_session")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict", cookie

        step("the overview lists every shop service, passing")
        for service in SHOP:
            row = page.locator(f"tr[data-service='{service}']")
            expect(row).to_be_visible()
            expect(row.locator(".badge")).to_have_text("passing")
        page.goto(ui)
        timings["overview"] = load_ms(page)
        page.screenshot(path=f"{args.screenshots}/overview.png", full_page=True)

        step("keyboard: the first Tab reaches the skip link")
        page.keyboard.press("Tab")
        expect(page.locator("a.skip")).to_be_focused()

        step("an order through the gateway shows up on the map")
        place_order(args.gateway)
        page.goto(f"{ui}/map")
        timings["map"] = load_ms(page)
        expect(page.locator("[data-node='catalog']")).to_be_visible()
        expect(page.locator("[data-edge='gateway→orders']")).to_be_visible(timeout=15000)
        page.screenshot(path=f"{args.screenshots}/map.png", full_page=True)

        step("a service's page from the map: its instances")
        page.click("[data-node='catalog']")
        expect(page.locator("h1")).to_have_text("catalog")
        expect(page.locator("tr[data-instance]")).to_have_count(1)
        timings["service"] = load_ms(page)
        page.screenshot(path=f"{args.screenshots}/service.png", full_page=True)

        step("the order's trace from its service's page, as a waterfall")
        page.goto(f"{ui}/services/orders")
        page.click("text=Recent traces")
        expect(page).to_have_url(re.compile(r"/ui/traces\?service=orders"))
        first = page.locator("tr[data-trace] a").first
        expect(first).to_be_visible(timeout=15000)
        timings["traces"] = load_ms(page)
        page.screenshot(path=f"{args.screenshots}/traces.png", full_page=True)
        first.click()
        expect(page.locator("h1")).to_contain_text("Trace ")
        spans = page.locator("g[data-span]")
        expect(spans.first).to_be_visible()
        assert spans.count() >= 3, f"the order's trace has {spans.count()} spans"
        timings["trace"] = load_ms(page)
        page.screenshot(path=f"{args.screenshots}/trace.png", full_page=True)

        events_logs.logs_of_trace(page, ui, step, args.screenshots)
        timings["logs"] = load_ms(page)

        config_edit_diff_rollback(page, ui, step, args.screenshots, timings, problems)

        events_logs.dead_letter_and_replay(page, ui, args.control, token, step, args.screenshots)
        timings["events"] = load_ms(page)

        step("payments stopped: the overview and the map change without a reload")
        page.goto(ui)
        page.evaluate("() => { window.__notReloaded = true; }")
        scale(args, "payments", 0)
        payments = page.locator("tr[data-service='payments'] .badge")
        expect(payments).to_have_text("down", timeout=15000)
        assert page.evaluate("() => window.__notReloaded === true"), "the page was reloaded"
        page.screenshot(path=f"{args.screenshots}/overview-payments-down.png", full_page=True)
        place_order(args.gateway)
        sagas.waiting_sagas(page, ui, step, args.screenshots)
        timings["sagas"] = load_ms(page)
        page.goto(ui)
        page.goto(f"{ui}/map")
        expect(page.locator("a.node.down[data-node='payments']")).to_be_visible()
        page.evaluate("() => { window.__notReloaded = true; }")
        scale(args, "payments", 1)
        expect(page.locator("a.node.passing[data-node='payments']")).to_be_visible(timeout=15000)
        assert page.evaluate("() => window.__notReloaded === true"), "the map was reloaded"

        step("a read-only session sees config but may not change it")
        reader = browser.new_context(viewport={"width": 1280, "height": 800})
        looking = reader.new_page()
        looking.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        looking.goto(f"{ui}/sign-in")
        looking.fill("#credential", open(f"{args.data_dir}/read-token").read().strip())
        looking.click("button[type=submit]")
        expect(looking.locator("header .who span")).to_contain_text("read-only")
        looking.goto(f"{ui}/config/catalog/default/page_size")
        expect(looking.locator("pre.value")).to_be_visible()
        expect(looking.locator("form.edit")).to_have_count(0)
        expect(looking.locator("p.hint")).to_contain_text("read-only session")
        csrf = looking.locator("meta[name=csrf-token]").get_attribute("content")
        forged = looking.request.post(
            f"{ui}/config/catalog/default/page_size",
            form={"csrf": csrf, "value": "99", "expect": "0"},
            max_redirects=0,
        )
        assert forged.status == 403 and "read-only" in forged.text(), (forged.status, forged.text()[:200])
        replay = looking.request.post(f"{ui}/events/ui.check.dead-letter/replay", form={"csrf": csrf, "offset": "0"}, max_redirects=0)
        assert replay.status == 403, replay.status
        reader.close()

        step("a phone's width, and the dark scheme")
        phone = browser.new_context(viewport={"width": 390, "height": 844}, color_scheme="dark")
        phone.add_cookies([cookie])
        small = phone.new_page()
        small.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        small.goto(ui)
        expect(small.locator("tr[data-service='catalog']")).to_be_visible()
        width = small.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 390, f"the page is {width}px wide on a 390px screen"
        small.screenshot(path=f"{args.screenshots}/overview-phone-dark.png", full_page=True)
        phone.close()

        step("signing out closes it again")
        page.goto(ui)
        page.click("form.who button")
        expect(page).to_have_url(re.compile(r"/ui/sign-in"))
        page.goto(ui)
        expect(page).to_have_url(re.compile(r"/ui/sign-in"))

        browser.close()

    step(f"load times (DOMContentLoaded): {json.dumps(timings)}")
    if args.budget_ms is not None:
        slow = {view: ms for view, ms in timings.items() if ms > args.budget_ms}
        assert not slow, f"pages over {args.budget_ms} ms: {slow}"
    assert not problems, "\n".join(problems)
    step("no console errors")


def expected_refusal(problems, before, status):
    """Chromium logs a page answered 4xx as a console error; where the test asked for that
    answer (a form refused), the one it asked for is not a problem."""
    wanted = f"status of {status}"
    added = problems[before:]
    del problems[before:]
    problems.extend(p for p in added if wanted not in p)


def config_edit_diff_rollback(page, ui, step, screenshots, timings, problems):
    """A catalog key made, applied by the catalog, changed to a value the catalog refuses
    (shown in red with its reason), diffed against the previous revision, rolled back."""
    step("config: a new key for the catalog, applied on its instance")
    page.goto(f"{ui}/config")
    timings["config"] = load_ms(page)
    new = page.locator("form.edit").last
    new.locator("input[name=scope]").fill("catalog")
    new.locator("input[name=key]").fill("page_size")
    new.locator("textarea[name=value]").fill("30")
    new.locator("input[name=comment]").fill("smaller pages")
    new.locator("button[type=submit]").click()
    expect(page).to_have_url(re.compile(r"/ui/config/catalog/default/page_size\?saved=\d+"))
    expect(page.locator(".notice")).to_contain_text("Saved as revision")
    good = page.locator("dd[data-revision]").get_attribute("data-revision")
    # The key page keeps its form as typed and refreshes what the instances applied.
    expect(page.locator("#applied [data-runs='current']").first).to_be_visible(timeout=20000)

    step("config: a value the catalog refuses shows red, with its reason")
    page.fill("#value", "5000")
    page.click("form.edit button[type=submit]")
    expect(page.locator(".notice")).to_contain_text("Saved as revision")
    refused = page.locator("#applied tr.refused")
    expect(refused.first).to_be_visible(timeout=20000)
    expect(refused.first).to_contain_text("page_size must be")
    page.screenshot(path=f"{screenshots}/config.png", full_page=True)

    step("config: not JSON is refused on the page (400), keeping what was typed")
    before = len(problems)
    page.fill("#value", "thirty")
    page.click("form.edit button[type=submit]")
    expect(page.locator("p.error")).to_contain_text("not JSON")
    expect(page.locator("#value")).to_have_value("thirty")
    expected_refusal(problems, before, 400)

    step("config: the diff against the previous revision, side by side")
    page.goto(f"{ui}/config/catalog/default/page_size")
    page.locator("a", has_text=f"diff with {good}").click()
    expect(page.locator("table.side-by-side td.del")).to_contain_text("30")
    expect(page.locator("table.side-by-side td.add")).to_contain_text("5000")
    page.screenshot(path=f"{screenshots}/config-diff.png", full_page=True)

    step("config: a stale edit is a conflict showing both values")
    stale = page.context.new_page()
    stale.goto(f"{ui}/config/catalog/default/page_size")
    page.fill("#value", "40")
    page.click("form.edit button[type=submit]")
    expect(page.locator(".notice")).to_contain_text("Saved")
    stale.fill("#value", "50")
    stale.click("form.edit button[type=submit]")
    expect(stale.locator("[data-conflict]")).to_contain_text("moved on")
    expect(stale.locator("table.side-by-side")).to_contain_text("40")
    expect(stale.locator("table.side-by-side")).to_contain_text("50")
    stale.close()

    step("config: rolled back to the good revision, applied again")
    page.goto(f"{ui}/config/catalog/default/page_size")
    page.locator("button", has_text=f"Roll back to {good}").click()
    expect(page.locator(".notice")).to_contain_text("Saved as revision")
    expect(page.locator("pre.value")).to_have_text("30")
    expect(page.locator("#applied tr.refused")).to_have_count(0, timeout=20000)
    expect(page.locator("#applied [data-runs='current']").first).to_be_visible(timeout=20000)


def scale(args, service, count):
    subprocess.run(
        [args.flotilla, "scale", service, str(count), "--data-dir", args.data_dir],
        check=True,
        capture_output=True,
    )


def post(url, body, headers):
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read() or b"null")


def place_order(gateway):
    email = f"ui-{int(time.time() * 1000)}@example.com"
    post(
        f"{gateway}/api/v1/accounts",
        json.dumps({"email": email, "password": "correct horse battery", "name": "Ana"}).encode(),
        {"Content-Type": "application/json"},
    )
    form = f"grant_type=password&client_id=shop-web&username={email.replace('@', '%40')}&password=correct+horse+battery"
    tokens = post(f"{gateway}/oauth2/token", form.encode(), {"Content-Type": "application/x-www-form-urlencoded"})
    order = {
        "lines": [{"product_id": 1, "quantity": 1}],
        "shipping_address": {"name": "Ana Lima", "line1": "Hafenstraße 1", "city": "Hamburg",
                             "postal_code": "20457", "country": "DE"},
    }
    post(
        f"{gateway}/api/v1/orders",
        json.dumps(order).encode(),
        {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {tokens['access_token']}",
            "Idempotency-Key": email,
        },
    )


if __name__ == "__main__":
    try:
        main()
    except Exception as failure:  # one line naming what failed, for the Rust harness
        print(f"FAILED: {failure}", file=sys.stderr)
        raise
