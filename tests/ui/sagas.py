"""The dashboard's Sagas view in a real Chromium: an order placed while payments is away.

Called by tests/ui/dashboard.py with its signed-in page while the payments service is scaled
to 0, just after an order was placed through the gateway. The order saga then reserves stock
and finds payments away at `authorize-payment`: a step that waits for a dependency, without
giving up, is the state `waiting` (see the SDK's `flotilla::saga::SagaState`). The view lists
it at `/ui/sagas?state=waiting`, and its page shows the steps and their history.

    waiting_sagas(page, ui, step, screenshots)

`ui` is the dashboard's base URL (`http://127.0.0.1:PORT/ui`), `step` prints one line per
step, `screenshots` is the directory `sagas.png` and `saga.png` are written to.
"""

import re

from playwright.sync_api import expect

# The state of an order's saga while payments is away, and the step it waits at.
STATE = "waiting"
STEP = "authorize-payment"


def waiting_sagas(page, ui, step, screenshots):
    step(f"payments away: the order's saga is listed as {STATE} at {STEP}, and its page shows the step history")
    page.goto(f"{ui}/sagas?state={STATE}")
    expect(page.locator("h1")).to_have_text("Sagas")
    expect(page.locator(f"nav.saga-states a[data-state='{STATE}']")).to_have_attribute("aria-current", "page")
    # The saga reaches `authorize-payment` within a second of the order, and the page is live
    # (its <main> is fetched again every few seconds): no reload needed.
    # (An order placed before payments went away may wait too, at `confirm`, which captures.)
    row = page.locator(f"table.sagas tr[data-state='{STATE}']", has_text=STEP).first
    expect(row).to_be_visible(timeout=20000)
    expect(row.locator(".badge")).to_have_text(STATE)
    expect(row).to_contain_text("orders")
    # Only waiting instances under this filter.
    others = page.locator("table.sagas tr[data-state]:not([data-state='waiting'])")
    assert others.count() == 0, f"{others.count()} rows in another state under ?state={STATE}"
    counts = page.locator("table.saga-counts tr[data-service='orders']")
    expect(counts).to_be_visible()
    expect(page.locator(".error[role=alert]")).to_have_count(0)
    page.screenshot(path=f"{screenshots}/sagas.png", full_page=True)

    saga_id = row.get_attribute("data-saga")
    row.locator("th a").click()
    expect(page).to_have_url(re.compile(r"/ui/sagas/orders/"))
    expect(page.locator("h1")).to_contain_text(f"Saga {saga_id}")
    expect(page.locator("dl.saga-facts .badge")).to_have_text(STATE)
    # The plan: the first step done, the payment waiting, the rest to come.
    expect(page.locator("ol.saga-steps li[data-step='reserve-stock']")).to_have_attribute("data-mark", "done")
    expect(page.locator(f"ol.saga-steps li[data-step='{STEP}']")).to_have_attribute("data-mark", STATE)
    # The history: started, the stock reserved, then the waits with payments' error.
    history = page.locator("ol.saga-history li")
    expect(history.first).to_have_attribute("data-event", "started")
    expect(page.locator("ol.saga-history li[data-event='done']").first).to_contain_text("reserve-stock")
    waiting = page.locator(f"ol.saga-history li[data-event='{STATE}']").first
    expect(waiting).to_contain_text(STEP)
    expect(waiting.locator("p.error")).not_to_be_empty()
    expect(page.locator("ol.saga-history .took").first).to_contain_text("after ")
    trace = page.locator("dl.saga-facts a[data-trace]")
    expect(trace).to_have_attribute("href", re.compile(r"^/ui/traces/[0-9a-f]{32}$"))
    page.screenshot(path=f"{screenshots}/saga.png", full_page=True)
