"""The web console in a real browser: Debian's chromium, headless, driven by
playwright-core (tests/browser/console.mjs). A flow fails while its upstream
answers 500 (one attempt: the run is dead); the upstream is fixed, and the
console is used to find the dead run and retry it, until the page shows it
succeeded, with the run's sequence diagram drawn in the page (SVG, no
request leaves rill); then to pause, resume and reload on the flows page, and
to change a flow's setting. The screenshot build/screenshots/console.png is
for the README; console-sequence.png shows the diagram alone."""
import json
import os
import subprocess

from lib.harness import ROOT, Rill, eq, main, test, wait_until
from lib.upstream import CHECKED, Upstream

TOKEN = "console-5b0e91d2"

TUNED = """
return {
  settings = { threshold = { type = "number", default = 10000, description = "EUR" } },
  triggers = { manual() },
  run = function(ctx) return ctx.settings.threshold end,
}
"""

BROWSER_DIR = os.path.join(ROOT, "tests", "browser")
SCREENSHOT = os.path.join(ROOT, "build", "screenshots", "console.png")
SEQUENCE_SCREENSHOT = os.path.join(ROOT, "build", "screenshots", "console-sequence.png")


def run_of(r, run_id):
    res = r.admin("GET", f"/api/runs/{run_id}", token=TOKEN)
    eq(res.status, 200, f"GET /api/runs/{run_id}: {res.body}")
    return res.json()


def ended(r, run_id):
    return wait_until(lambda: (lambda run: run if run["state"] in ("succeeded", "dead") else None)(
        run_of(r, run_id)), 10, f"run {run_id} to end")


def drive(r, run_id):
    os.makedirs(os.path.dirname(SCREENSHOT), exist_ok=True)
    p = subprocess.run(["node", os.path.join(BROWSER_DIR, "console.mjs"), f"http://127.0.0.1:{r.admin_port}",
                        TOKEN, run_id, SCREENSHOT], capture_output=True, text=True, timeout=120, cwd=BROWSER_DIR)
    lines = p.stdout.strip().splitlines()
    if p.returncode != 0 or not lines:
        raise AssertionError(f"the browser run failed ({p.returncode}): {p.stdout}\n{p.stderr}")
    return json.loads(lines[-1])


@test
def retry_a_dead_run_from_the_console():
    up = Upstream()
    with Rill({"checked.lua": CHECKED, "other.lua": "return { triggers = { manual() }, run = function() end }",
               "tuned.lua": TUNED},
              env={"UPSTREAM_URL": up.url, "RILL_ADMIN_TOKEN": TOKEN, "RILL_POLL_INTERVAL": "0.1s"}) as r:
        res = r.request("POST", "/hooks/checked", {"n": 42})
        eq(res.status, 202, "webhook")
        run_id = res.json()["run_id"]
        eq(ended(r, run_id)["state"], "dead", "before")
        up.status = 200
        seen = drive(r, run_id)
        eq(seen["dead_rows"], 1, "rows of the dead filter")
        assert seen["error"].endswith("upstream answered 500"), seen
        eq((seen["attempts_before"], seen["attempts_after"]), (1, 2), "attempts in the timeline")
        eq(seen["result"], {"n": 42, "prepared": 42}, "the result shown")
        eq(seen["retry_button_after"], 0, "no retry button on a succeeded run")
        eq(seen["problems"], [], "page and console errors, requests elsewhere")
        seq = seen["sequence"]
        port = up.url.split(":")[2].split("/")[0]
        eq(seq["participants"], ["webhook POST /hooks/checked", "checked", f"127.0.0.1:{port}"], "participants")
        eq(seq["lifelines"], 3, "a lifeline each")
        eq([m for m in seq["messages"] if not m[0].isdigit()],
           ["webhook POST /hooks/checked", "prepare", "GET /check", "GET /check"], "trigger, step and calls")
        replies = [m for m in seq["messages"] if m[0].isdigit()]
        eq(len(replies), 2, f"two answers: {seq['messages']}")
        assert replies[0].startswith("500 (") and replies[1].startswith("200 ("), replies
        eq(seq["arrows"], len(seq["messages"]), "an arrow per message")
        assert seq["notes"][0].startswith("failed: ") and seq["notes"][0].endswith("upstream answered 500"), seq
        eq(seq["notes"][1:], ["attempt 2", "succeeded"], "notes")
        assert seq["mermaid"].startswith("sequenceDiagram\n"), seq["mermaid"]
        eq(seen["flow_states"], ["active", "paused", "active"], "the flow's status on the flows page")
        eq(seen["reload_notice"], "Reloaded: 0 loaded, 0 removed, 0 with errors.", "reload notice")
        eq(seen["setting_before"], "threshold = 10000 change", "the setting shown")
        assert 'threshold: expected a number, got "lots"' in seen["bad_notice"], seen
        eq(seen["setting_after"], "threshold = 25000 (default 10000) change", "the setting changed")
        eq(seen["settings_problems"], ["console error: Failed to load resource: the server responded with a status "
                                       "of 400 (Bad Request)"], "the bad value's 400 only")
        with open(os.path.join(r.flows_dir, "settings.json")) as f:
            eq(json.load(f), {"tuned": {"threshold": 25000}}, "settings.json")
        r.wait_log(msg="flow paused from the admin API", flow="checked")
        r.wait_log(msg="flow resumed from the admin API", flow="checked")
        r.wait_log(msg="flows reloaded", why="admin API")
        run = ended(r, run_id)
        eq((run["state"], run["attempt"]), ("succeeded", 2), "the run in the store")
        eq(up.calls, 2, "upstream calls")
        with open(SCREENSHOT, "rb") as f:
            eq(f.read(8), b"\x89PNG\r\n\x1a\n", "the screenshot is a PNG")
        with open(SEQUENCE_SCREENSHOT, "rb") as f:
            eq(f.read(8), b"\x89PNG\r\n\x1a\n", "the diagram's screenshot is a PNG")


OWNER = """
return {
  triggers = { webhook { path = "/hooks/signed", mode = "async", emit = "quote.signed" } },
  run = function(ctx) return "signed" end,
}"""

ALERT = """
return {
  triggers = { event { name = "quote.signed" } },
  run = function(ctx) return "alerted" end,
}"""


@test
def a_run_page_shows_the_event_that_started_it_and_the_runs_an_event_started():
    with Rill({"owner.lua": OWNER, "alert.lua": ALERT},
              env={"RILL_ADMIN_TOKEN": TOKEN, "RILL_POLL_INTERVAL": "0.1s"}) as r:
        owner = r.request("POST", "/hooks/signed", {"n": 1}).json()["run_id"]
        started = wait_until(lambda: run_of(r, owner)["event_runs"] or None, 10, "the event's run")
        alert = started[0]["run_id"]
        ended(r, alert)
        p = subprocess.run(["node", os.path.join(BROWSER_DIR, "event-runs.mjs"), f"http://127.0.0.1:{r.admin_port}",
                            TOKEN, alert], capture_output=True, text=True, timeout=120, cwd=BROWSER_DIR)
        lines = p.stdout.strip().splitlines()
        if p.returncode != 0 or not lines:
            raise AssertionError(f"the browser run failed ({p.returncode}): {p.stdout}\n{p.stderr}")
        seen = json.loads(lines[-1])
        event_id = started[0]["event_id"]
        eq(seen["started_by"], f"event quote.signed {event_id} emitted by run {owner}", "started by")
        eq(seen["emitted_by"], owner, "the link to the emitting run")
        eq(seen["event_runs"], [["quote.signed", event_id, "alert", alert]], "the runs its event started")
        eq(seen["problems"], [], "page and console errors")


if __name__ == "__main__":
    main()
