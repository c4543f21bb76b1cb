"""The dashboard's Events and Logs views in a real browser: steps tests/ui/dashboard.py runs.

`dead_letter_and_replay` makes a dead letter for real through the control plane's event API
(publish, fetch as a group, nack until the log gives up on it), then finds it in the browser
and replays it. `logs_of_trace` follows a trace's waterfall to its log lines.
"""

import json
import re
import time
import urllib.parse
import urllib.request

from playwright.sync_api import expect

# A topic and group of the test's own, so the shop's topics are left alone.
TOPIC = "ui.check"
GROUP = "ui-check"
REASON = "ui check: the handler refused it"
# The control plane's default `max_deliveries`: after this many deliveries without an ack the
# next fetch moves the event to `<topic>.dead-letter`.
MAX_DELIVERIES = 5


def api(control, token, method, path, body=None):
    """One call to the control plane's API with the operator's token; the JSON answer."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"{control}{path}",
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=15) as answer:
        raw = answer.read()
    return json.loads(raw) if raw else None


def fetch(control, token, topic, group):
    """What the log hands `group` now (without waiting)."""
    query = urllib.parse.urlencode({"group": group, "max": 10})
    return api(control, token, "GET", f"/v1/events/{topic}?{query}")


def make_dead_letter(control, token):
    """Publishes one event to TOPIC and nacks it as GROUP until it is dead-lettered; a second
    event stays unfetched, so the group has lag. Returns the dead letter's event id."""
    marker = f"ui-check-{int(time.time() * 1000)}"
    event = {
        "specversion": "1.0",
        "id": marker,
        "source": "/ui-check",
        "type": "ui.checked",
        "subject": f"check/{marker}",
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "data": {"marker": marker, "note": "made by the dashboard's browser test"},
    }
    offset = api(control, token, "POST", f"/v1/events/{TOPIC}", event)[0]["offset"]
    # Skip whatever an earlier run left for the group: only this event is nacked.
    for _ in range(MAX_DELIVERIES + 1):
        handed = fetch(control, token, TOPIC, GROUP)
        mine = [d for d in handed if d["offset"] == offset]
        others = [d["offset"] for d in handed if d["offset"] != offset]
        if others:
            api(control, token, "POST", f"/v1/events/{TOPIC}/ack", {"group": GROUP, "offsets": others})
        if not mine:
            break
        api(
            control,
            token,
            "POST",
            f"/v1/events/{TOPIC}/nack",
            {"group": GROUP, "offset": offset, "reason": REASON},
        )
    else:
        raise AssertionError(f"the event was still handed out after {MAX_DELIVERIES + 1} fetches")
    dead = api(control, token, "GET", f"/v1/events/{TOPIC}.dead-letter/messages?from=0&limit=1000")
    assert any(d["event"]["id"] == marker for d in dead), f"{marker} is not among the dead letters: {dead}"
    # One more event, not fetched: the group lags behind by it.
    lagging = dict(event, id=f"{marker}-lag", subject=f"check/{marker}-lag")
    api(control, token, "POST", f"/v1/events/{TOPIC}", lagging)
    return marker


def dead_letter_and_replay(page, ui, control, token, step, screenshots):
    """A dead letter made through the API, seen on /ui/events and its dead-letter topic with
    its reason, replayed with the button, and back in its topic under a new id."""
    step("an event nacked until it is dead-lettered shows on the events page")
    marker = make_dead_letter(control, token)
    page.goto(f"{ui}/events")
    expect(page.locator("h1")).to_have_text("Events")
    topic_row = page.locator(f"table.topics tr[data-topic='{TOPIC}']")
    expect(topic_row).to_be_visible()
    group_row = page.locator(f"table.groups tr[data-topic='{TOPIC}'][data-group='{GROUP}']")
    expect(group_row).to_be_visible()
    expect(group_row).to_have_attribute("data-lag", re.compile(r"^[1-9]\d*$"))
    expect(group_row).to_have_attribute("data-in-flight", re.compile(r"^\d+$"))
    expect(group_row.locator("td.lagging").first).to_be_visible()
    dead_row = page.locator(f"table.dead-letters tr[data-topic='{TOPIC}.dead-letter']")
    expect(dead_row).to_be_visible()

    step("the dead-letter topic shows the reason, and Replay brings the event back")
    dead_row.locator("a").first.click()
    expect(page).to_have_url(re.compile(rf"/ui/events/{re.escape(TOPIC)}\.dead-letter$"))
    letter = page.locator(f"table.events tr[data-id='{marker}']")
    expect(letter).to_be_visible()
    expect(letter.locator("td.reason")).to_contain_text(REASON)
    letter.get_by_role("button", name=re.compile("Replay")).click()
    expect(page).to_have_url(re.compile(r"\?replayed=1$"))
    expect(page.locator(".notice[role=status]")).to_contain_text("Replayed 1 dead letter")
    page.screenshot(path=f"{screenshots}/events.png", full_page=True)
    page.locator(".notice a").click()
    expect(page).to_have_url(re.compile(rf"/ui/events/{re.escape(TOPIC)}$"))
    expect(page.locator(f"table.events tr[data-id^='{marker}~replay-']")).to_be_visible()


def logs_of_trace(page, ui, step, screenshots):
    """From a trace's waterfall (where the page must be) to its log lines, each naming it."""
    step("a trace's waterfall links to the log lines of that trace")
    match = re.search(r"/ui/traces/([0-9a-f]{32})", page.url)
    assert match, f"not on a trace's page: {page.url}"
    trace = match.group(1)
    page.get_by_role("link", name="Logs of this trace").click()
    expect(page).to_have_url(re.compile(rf"/ui/logs\?trace={trace}$"))
    expect(page.locator("h1")).to_have_text("Logs")
    lines = page.locator("table.logs tbody tr")
    expect(lines.first).to_be_visible(timeout=15000)
    count = lines.count()
    for i in range(count):
        expect(lines.nth(i)).to_have_attribute("data-trace", trace)
    expect(lines.first.locator(f"a[href='/ui/traces/{trace}']")).to_be_visible()
    page.screenshot(path=f"{screenshots}/logs.png", full_page=True)
    step(f"{count} log lines of trace {trace[:8]}")
