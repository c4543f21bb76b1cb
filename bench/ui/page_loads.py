"""Page loads of the dashboard in a real Chromium, for bench/dashboard.

    python3 bench/ui/page_loads.py --control http://127.0.0.1:PORT --token-file FILE \
        --rounds N PATH...

Signs in with the operator's token, then loads each path N times (after one to warm the
cache, as a user's second visit) and prints one JSON line: per path the times to
DOMContentLoaded and to the load event, in ms, by the browser's own navigation timing.
"""

import argparse
import json

from playwright.sync_api import sync_playwright

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--control", required=True)
    parser.add_argument("--token-file", required=True)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("paths", nargs="+")
    args = parser.parse_args()
    token = open(args.token_file).read().strip()
    found = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS, headless=True)
        page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
        page.goto(f"{args.control}/ui/sign-in")
        page.fill("#credential", token)
        page.click("button[type=submit]")
        page.wait_for_url(f"{args.control}/ui")
        for path in args.paths:
            page.goto(f"{args.control}{path}")
            ready, loaded = [], []
            for _ in range(args.rounds):
                page.goto(f"{args.control}{path}", wait_until="load")
                timing = page.evaluate(
                    "() => { const n = performance.getEntriesByType('navigation')[0];"
                    " return [n.domContentLoadedEventEnd - n.startTime, n.loadEventEnd - n.startTime]; }"
                )
                ready.append(timing[0])
                loaded.append(timing[1])
            found[path] = {"dom_content_loaded": ready, "load": loaded}
        browser.close()
    print(json.dumps(found))


if __name__ == "__main__":
    main()
