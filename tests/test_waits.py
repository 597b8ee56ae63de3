"""Runs that wait for events, and runs' causes and versions: wait_for parks a
run until a webhook (or another run) emits a matching event, or until its
timeout; a chain of flows starting flows is stopped at max_depth with the
chain named; `rill runs retry` runs the current version, --same-version the
one that failed, and each attempt's version is kept."""
import json
import time

from lib.harness import Rill, eq, main, run_cli, temp_dir, test, wait_until

# store() -> settings naming a fresh store for a test: none (SQLite in the
# test's folder) here; test_waits_pg.py names a Postgres database
store = dict

QUOTE = """
return {
  triggers = { webhook { path = "/hooks/quote", mode = "async" } },
  run = function(ctx)
    local q = ctx.payload
    step("send", function() return "sent" end)
    local signed = wait_for("signature", { event = "signed", match = { quote = q.id }, timeout = q.timeout or "1h" })
    if signed.timed_out then return { quote = q.id, outcome = "expired" } end
    return { quote = q.id, outcome = "signed", by = signed.data.by, event = signed.name }
  end,
}"""

SIGNED = """
return {
  triggers = { webhook { path = "/hooks/signed", mode = "async", emit = "signed",
                         idempotency = "header:X-Delivery" } },
  run = function(ctx) return ctx.payload end,
}"""

EMITTER = """
return {
  triggers = { webhook { path = "/hooks/sign-from-a-run", mode = "async" } },
  run = function(ctx)
    emit("signed", { quote = ctx.payload.quote, by = "a run" })
    return "emitted"
  end,
}"""


def run_of(r, flow, state=None):
    args = ["list", "--flow", flow, "--limit", "100"] + (["--state", state] if state else [])
    return r.runs(*args)


def result(r, run_id):
    row = r.runs("show", run_id)
    return row["state"], row.get("result") and json.loads(row["result"])


@test
def a_waiting_run_is_parked_until_a_webhook_emits_its_event():
    with Rill({"quote.lua": QUOTE, "signed.lua": SIGNED}, env=store()) as r:
        ids = {}
        for q in (1, 2):
            resp = r.request("POST", "/hooks/quote", {"id": q})
            eq(resp.status, 202, "quote accepted")
            ids[q] = resp.json()["run_id"]
        wait_until(lambda: len(run_of(r, "quote", "waiting")) == 2, 10, "both quotes waiting")
        eq(r.request("POST", "/hooks/signed", {"quote": 2, "by": "Ada"}, {"X-Delivery": "d1"}).status, 202, "event")
        wait_until(lambda: result(r, ids[2])[0] == "succeeded", 10, "quote 2 signed")
        eq(result(r, ids[2])[1], {"quote": 2, "outcome": "signed", "by": "Ada", "event": "signed"}, "its result")
        # the same delivery again: a duplicate, no second event
        resp = r.request("POST", "/hooks/signed", {"quote": 1, "by": "Eve"}, {"X-Delivery": "d1"})
        eq((resp.status, resp.json().get("duplicate")), (200, True), "redelivery")
        time.sleep(1.2)
        eq(result(r, ids[1])[0], "waiting", "quote 1, whose event never came")
        shown = r.runs("show", ids[2])
        eq([s["name"] for s in shown["steps"]], ["send", "signature"], "steps recorded")


@test
def an_event_emitted_by_a_run_ends_a_wait_and_survives_a_restart_of_the_waiter():
    d, env = temp_dir(), store()
    with Rill({"quote.lua": QUOTE}, dir=d, env=env) as r:
        rid = r.request("POST", "/hooks/quote", {"id": 7}).json()["run_id"]
        wait_until(lambda: result(r, rid)[0] == "waiting", 10, "waiting")
    # rill stopped: nothing holds the run; the next process emits and wakes it
    with Rill({"quote.lua": QUOTE, "emitter.lua": EMITTER}, dir=d, env=env) as r:
        eq(r.request("POST", "/hooks/sign-from-a-run", {"quote": 7}).status, 202, "emitter accepted")
        wait_until(lambda: result(r, rid)[0] == "succeeded", 10, "woken by the event")
        eq(result(r, rid)[1]["by"], "a run", "the event's data")


@test
def a_wait_ends_with_its_timeout_when_no_event_comes():
    with Rill({"quote.lua": QUOTE, "signed.lua": SIGNED}, env=store()) as r:
        rid = r.request("POST", "/hooks/quote", {"id": 3, "timeout": "1s"}).json()["run_id"]
        wait_until(lambda: result(r, rid)[0] == "waiting", 10, "waiting")
        wait_until(lambda: result(r, rid)[0] == "succeeded", 10, "timed out")
        eq(result(r, rid)[1], {"quote": 3, "outcome": "expired"}, "the timeout path")
        # an event for it now changes nothing: the wait is over
        r.request("POST", "/hooks/signed", {"quote": 3, "by": "late"}, {"X-Delivery": "late"})
        time.sleep(0.5)
        eq(result(r, rid)[1]["outcome"], "expired", "still expired")


@test
def an_event_stored_before_the_wait_begins_is_found_by_it():
    flow = QUOTE.replace('step("send", function() return "sent" end)',
                         'step("send", function() return "sent" end)\n    sleep_for("pause", "1s")')
    with Rill({"quote.lua": flow, "signed.lua": SIGNED}, env=store()) as r:
        rid = r.request("POST", "/hooks/quote", {"id": 4}).json()["run_id"]
        wait_until(lambda: result(r, rid)[0] == "sleeping", 10, "sleeping before its wait")
        r.request("POST", "/hooks/signed", {"quote": 4, "by": "early"}, {"X-Delivery": "e4"})
        wait_until(lambda: result(r, rid)[0] == "succeeded", 10, "the early event found")
        eq(result(r, rid)[1]["by"], "early", "its data")


@test
def an_event_older_than_retention_is_kept_for_a_run_created_before_it():
    # retention deleted delivered events older than it, also those a run
    # still asleep (created before them) would wait for: it waited for ever
    flow = QUOTE.replace('step("send", function() return "sent" end)',
                         'step("send", function() return "sent" end)\n    sleep_for("pause", "6s")')
    env = {**store(), "RILL_RETENTION": "1s", "RILL_POLL_INTERVAL": "0.1s"}
    with Rill({"quote.lua": flow, "signed.lua": SIGNED}, env=env) as r:
        rid = r.request("POST", "/hooks/quote", {"id": 5}).json()["run_id"]
        wait_until(lambda: result(r, rid)[0] == "sleeping", 10, "sleeping before its wait")
        sid = r.request("POST", "/hooks/signed", {"quote": 5, "by": "early"}, {"X-Delivery": "e5"}).json()["run_id"]
        # the event's run pruned: a prune pass ran once the event was past retention
        wait_until(lambda: r.runs_cli("show", sid)[0] == 1, 10, "the event's run to be pruned")
        eq(result(r, rid)[0], "sleeping", "still asleep when the prune ran")
        wait_until(lambda: result(r, rid)[0] == "succeeded", 15, "the event found after the sleep")
        eq(result(r, rid)[1]["by"], "early", "its data")


TWICE = """
return {
  triggers = { webhook { path = "/hooks/twice", mode = "async" } },
  run = function()
    local first = wait_for("first", { event = "tick", timeout = "1h" })
    local second = wait_for("second", { event = "tick", timeout = "1h" })
    return { first.data.n, second.data.n }
  end,
}"""

TICK = """
return {
  triggers = { webhook { path = "/hooks/tick", mode = "async", emit = "tick" } },
  run = function(ctx) return ctx.payload end,
}"""


@test
def two_waits_for_one_event_name_take_two_events():
    with Rill({"twice.lua": TWICE, "tick.lua": TICK}, env=store()) as r:
        rid = r.request("POST", "/hooks/twice", {}).json()["run_id"]
        wait_until(lambda: result(r, rid)[0] == "waiting", 10, "first wait")
        r.request("POST", "/hooks/tick", {"n": 1})
        wait_until(lambda: [s["name"] for s in r.runs("show", rid)["steps"]] == ["first"], 10, "first wait ended")
        wait_until(lambda: result(r, rid)[0] == "waiting", 10, "second wait: the first event is taken")
        r.request("POST", "/hooks/tick", {"n": 2})
        wait_until(lambda: result(r, rid)[0] == "succeeded", 10, "second wait ended")
        eq(result(r, rid)[1], [1, 2], "each wait its own event")


@test
def wait_for_outside_a_stored_run_is_refused_clearly():
    flow = """
return {
  triggers = { webhook { path = "/hooks/w" } },
  run = function()
    local v = wait_for("x", { event = "e" })
    return v
  end,
}"""
    with Rill({"w.lua": flow}, env=store()) as r:
        resp = r.request("POST", "/hooks/w", {})
        eq(resp.status, 500, "a sync run cannot be parked")
        run = r.runs("show", resp.json()["run_id"])
        assert "only in a stored run" in run["error"], run["error"]
        assert "w.lua:5:" in run["error"], run["error"]


@test
def a_chain_of_flows_deeper_than_max_depth_is_refused_naming_the_chain():
    flow = """
return {
  triggers = { manual(), from_flow() },
  run = function(ctx)
    local n = (ctx.payload or {}).n or 0
    return flows.trigger("loop", { n = n + 1 })
  end,
}"""
    d = temp_dir()
    with open(f"{d}/loop.lua", "w") as f:
        f.write(flow)
    code, out, err = run_cli("run", "loop", "--flows", d, cwd=d)
    eq(code, 1, "rill run exits non-zero")
    msg = json.loads(out.strip().splitlines()[-1])["error"]
    assert "deeper than 8" in msg and "loop > loop > loop > loop > loop > loop > loop > loop" in msg, msg


@test
def retry_runs_the_current_version_or_with_same_version_the_one_that_failed():
    v1 = """
return {
  retries = { attempts = 1 },
  triggers = { webhook { path = "/hooks/v", mode = "async" } },
  run = function() error("version one is broken") end,
}"""
    v2 = v1.replace('error("version one is broken")', 'return "fixed in version two"')
    with Rill({"v.lua": v1}, env=store()) as r:
        rid = r.request("POST", "/hooks/v", {}).json()["run_id"]
        wait_until(lambda: result(r, rid)[0] == "dead", 10, "dead")
        first = r.runs("show", rid)["version"]
        n = r.reloads()
        r.write_flow("v.lua", v2)
        r.wait_reload(n)
        code, out, err = r.runs_cli("retry", rid, "--same-version")
        eq(code, 0, f"retry --same-version ({err})")
        assert "the version it failed with" in out, out
        wait_until(lambda: r.runs("show", rid)["attempt"] == 2 and result(r, rid)[0] == "dead", 10, "dead again")
        row = r.runs("show", rid)
        assert "version one is broken" in row["error"], row["error"]
        eq(row["versions"], f"1:{first} 2:{first}", "both attempts ran the first version")
        code, out, err = r.runs_cli("retry", rid)
        eq(code, 0, f"retry ({err})")
        wait_until(lambda: result(r, rid)[0] == "succeeded", 10, "succeeded on the current version")
        row = r.runs("show", rid)
        eq(result(r, rid)[1], "fixed in version two", "the result")
        assert row["versions"].startswith(f"1:{first} 2:{first} 3:") and row["version"] != first, row["versions"]
        code, out, _ = r.runs_cli("show", rid)
        assert "versions:" in out and "attempt:version" in out, out


if __name__ == "__main__":
    main()
