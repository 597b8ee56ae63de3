"""Event triggers end to end: one event (a webhook's `emit`, a step's
`emit`) fanned out to every flow that declares `event { name = ... }`,
each subscriber's run stored in the same transaction as the event, once
per event even when a redelivery or a retry emits it again, and kept
across a SIGKILL right after the 202. `flows.trigger` from a stored run is
stored too. `rill runs show` names the event that started a run and the
runs an event started.

The store is SQLite under each test's directory; test_events_pg.py runs the
same tests on Postgres."""
import json

import os

from lib.harness import Rill, eq, main, run_cli, temp_dir, test, wait_until

TOKEN = "adm-events-5e1d"
FAST = {"RILL_POLL_INTERVAL": "0.1s", "RILL_RETRY_BACKOFF": "50ms", "RILL_RETRY_MAX_BACKOFF": "200ms",
        "RILL_ADMIN_TOKEN": TOKEN}

# new_store() -> a URL of an empty store, or None for SQLite under the
# test's directory (test_events_pg.py sets it); a directory keeps its store.
new_store = None
_stores = {}


def rill(flows, env=None, dir=None, config=None):
    dir = dir or temp_dir()
    if new_store and dir not in _stores:
        _stores[dir] = new_store()
    store = {"RILL_STORE": _stores[dir]} if dir in _stores else {}
    return Rill(flows, env={**FAST, **store, **(env or {})}, dir=dir, config=config)


def settled_runs(r, flow, n, timeout=15):
    """Waits until `flow` has at least n runs, all finished; returns them."""
    def done():
        runs = r.runs("list", "--flow", flow, "--limit", "1000")
        if len(runs) >= n and all(x["state"] in ("succeeded", "failed", "dead") for x in runs):
            return runs
        return None
    return wait_until(done, timeout, f"{n} finished run(s) of {flow}")


OWNER = """
return {
  triggers = { webhook { path = "/hooks/signed", mode = "async", emit = "quote.signed",
                         idempotency = "header:X-Id" } },
  run = function(ctx) return { owner = ctx.payload.n } end,
}"""

SUBSCRIBER = """
return {
  triggers = { event { name = "quote.signed"%s } },
  run = function(ctx)
    return { n = ctx.payload.n, event = ctx.trigger.event, event_id = ctx.trigger.event_id,
             emitted_by = ctx.trigger.emitted_by }
  end,
}"""


@test
def one_webhook_event_fans_out_to_two_flows_each_stored_once():
    flows = {"owner.lua": OWNER, "alert.lua": SUBSCRIBER % "", "audit.lua": SUBSCRIBER % "",
             "big.lua": SUBSCRIBER % ", match = { n = 99 }",
             "odd.lua": SUBSCRIBER % ", match = function(data) return data.n % 2 == 1 end"}
    with rill(flows) as r:
        first = r.request("POST", "/hooks/signed", {"n": 4}, {"X-Id": "d-1"})
        eq(first.status, 202, "status")
        owner_id = first.json()["run_id"]
        # the sender delivers again: no second event, no second run anywhere
        again = r.request("POST", "/hooks/signed", {"n": 4}, {"X-Id": "d-1"})
        eq((again.status, again.json()["run_id"]), (200, owner_id), "redelivery")
        for flow in ("alert", "audit"):
            runs = settled_runs(r, flow, 1)
            eq(len(runs), 1, f"runs of {flow}")
            run = r.runs("show", runs[0]["id"])
            eq(run["state"], "succeeded", f"{flow}'s state")
            result = json.loads(run["result"])
            eq((result["n"], result["event"], result["emitted_by"]), (4, "quote.signed", owner_id), f"{flow}'s ctx")
            eq(run["started_by"]["event"], "quote.signed", f"{flow} started by")
            eq(run["started_by"]["emitted_by"], owner_id, f"{flow} emitted by")
            eq(run["parent"], owner_id, f"{flow}'s parent")
        # a match on the data: no run for a value that differs
        settled_runs(r, "owner", 1)
        eq(r.runs("list", "--flow", "big"), [], "runs of a flow whose match differs")
        # a match function: the run is stored, and skipped without running the flow
        odd = settled_runs(r, "odd", 1)
        eq(json.loads(r.runs("show", odd[0]["id"])["result"]), {"skipped": "the event did not match"}, "odd")
        # the emitting run lists the runs its event started
        shown = r.runs("show", owner_id)
        started = sorted(x["flow"] for x in shown["event_runs"])
        eq(started, ["alert", "audit", "odd"], "runs the event started")
        code, out, _ = r.runs_cli("show", owner_id)
        eq(code, 0, "runs show")
        assert "event quote.signed" in out and "alert" in out, out
        code, out, _ = r.runs_cli("show", r.runs("list", "--flow", "alert")[0]["id"])
        assert "started by:" in out and owner_id in out, out
        # the admin API (the console's run view reads it) says the same
        detail = r.admin("GET", "/api/runs/" + owner_id, token=TOKEN).json()
        eq(sorted(x["flow"] for x in detail["event_runs"]), ["alert", "audit", "odd"], "admin API event_runs")
        alert = r.admin("GET", "/api/runs/" + r.runs("list", "--flow", "alert")[0]["id"], token=TOKEN).json()
        eq(alert["started_by"]["emitted_by"], owner_id, "admin API started_by")
        # counted, and logged, once per run an event started
        eq(r.metric('rill_event_runs_total{event="quote.signed",flow="alert"}'), 1.0, "the counter")
        line = r.wait_log(msg="event starts runs", event="quote.signed")
        eq(line["flows"], "alert, audit, odd", "the log line's flows")
        # the flows list says what each flow listens to
        listed = {f["name"]: f["triggers"] for f in r.admin("GET", "/api/flows", token=TOKEN).json()["flows"]}
        eq(listed["big"], [{"type": "event", "name": "quote.signed", "match": True}], "big's trigger")
        eq(listed["alert"], [{"type": "event", "name": "quote.signed"}], "alert's trigger")


EMITTER = """
local tries = 0
return {
  triggers = { webhook { path = "/hooks/deal", mode = "async" } },
  run = function(ctx)
    -- the step that emits fails once after emitting: its retry emits again
    step("announce", function()
      tries = tries + 1
      emit("deal.won", { n = ctx.payload.n })
      if tries == 1 then error("flaky service") end
      return "announced"
    end, { retries = 2, backoff = 0.01 })
    emit("deal.closed", { n = ctx.payload.n })
    -- and the whole run fails once after both: the retry replays them
    if ctx.attempt == 1 then error("the run fails after emitting") end
    return "done"
  end,
}"""


@test
def a_retry_of_the_emitting_step_or_run_starts_no_second_run():
    flows = {"deal.lua": EMITTER, "won.lua": SUBSCRIBER.replace("quote.signed", "deal.won") % "",
             "closed.lua": SUBSCRIBER.replace("quote.signed", "deal.closed") % ""}
    with rill(flows) as r:
        deal = r.request("POST", "/hooks/deal", {"n": 7}).json()["run_id"]
        wait_until(lambda: r.runs("show", deal)["state"] == "succeeded", 15, "the emitting run to succeed")
        eq(r.runs("show", deal)["attempt"], 2, "attempts of the emitting run")
        for flow in ("won", "closed"):
            runs = settled_runs(r, flow, 1)
            eq(len(runs), 1, f"runs of {flow}")
            eq(json.loads(r.runs("show", runs[0]["id"])["result"])["n"], 7, f"{flow}'s payload")


EXPLICIT = """
return {
  triggers = { webhook { path = "/hooks/paid", mode = "async" } },
  run = function(ctx)
    -- two notices of one payment (two runs): one event, by its own id
    emit("payment.received", { invoice = ctx.payload.invoice }, { id = "invoice-" .. ctx.payload.invoice })
    return "noted"
  end,
}"""


@test
def an_event_with_an_explicit_id_starts_its_flows_once_whichever_run_emits_it():
    flows = {"paid.lua": EXPLICIT, "thanks.lua": SUBSCRIBER.replace("quote.signed", "payment.received") % ""}
    with rill(flows) as r:
        first = r.request("POST", "/hooks/paid", {"invoice": 12}).json()["run_id"]
        second = r.request("POST", "/hooks/paid", {"invoice": 12}).json()["run_id"]
        third = r.request("POST", "/hooks/paid", {"invoice": 13}).json()["run_id"]
        settled_runs(r, "paid", 3)
        runs = settled_runs(r, "thanks", 2)
        eq(len(runs), 2, "one run per payment")
        by = sorted(r.runs("show", x["id"])["started_by"]["event_id"] for x in runs)
        eq(by, ["payment.received invoice-12", "payment.received invoice-13"], "the events' ids")
        emitters = {r.runs("show", x["id"])["started_by"]["emitted_by"] for x in runs}
        assert emitters <= {first, second, third} and third in emitters, emitters


PAUSABLE = """
return {
  triggers = { event { name = "quote.signed" } },
  run = function(ctx) return { n = ctx.payload.n } end,
}"""


@test
def a_sigkill_after_the_202_still_runs_the_subscribers_after_a_restart():
    d = temp_dir()
    flows = {"owner.lua": OWNER, "alert.lua": PAUSABLE}
    with rill(flows, dir=d) as r:
        # the subscriber is paused: its run can only be in the store
        eq(r.admin("POST", "/api/flows/alert/pause", token=TOKEN).status, 200, "pause")
        res = r.request("POST", "/hooks/signed", {"n": 5}, {"X-Id": "d-5"})
        eq(res.status, 202, "status")
        r.kill()
    with rill(flows, dir=d) as r:
        eq(r.admin("POST", "/api/flows/alert/resume", token=TOKEN).status, 200, "resume")
        runs = settled_runs(r, "alert", 1)
        eq(len(runs), 1, "runs of the subscriber")
        run = r.runs("show", runs[0]["id"])
        eq((run["state"], json.loads(run["result"])), ("succeeded", {"n": 5}), "the subscriber's run")


CALLER = """
return {
  triggers = { webhook { path = "/hooks/caller", mode = "async" } },
  run = function(ctx)
    local id = flows.trigger("callee", { n = ctx.payload.n }, { wait = false })
    if ctx.attempt == 1 then error("fails after the trigger") end
    return id
  end,
}"""

CALLEE = """
return {
  triggers = { from_flow() },
  run = function(ctx) return { n = ctx.payload.n, stored = ctx.attempt } end,
}"""


@test
def flows_trigger_from_a_stored_run_is_stored_once_per_call():
    with rill({"caller.lua": CALLER, "callee.lua": CALLEE}) as r:
        caller = r.request("POST", "/hooks/caller", {"n": 3}).json()["run_id"]
        wait_until(lambda: r.runs("show", caller)["state"] == "succeeded", 15, "the caller to succeed")
        runs = settled_runs(r, "callee", 1)
        eq(len(runs), 1, "runs of the callee (the caller ran twice)")
        callee = r.runs("show", runs[0]["id"])
        eq(json.loads(r.runs("show", caller)["result"]), callee["id"], "the id the caller got")
        eq((callee["state"], callee["parent"]), ("succeeded", caller), "the stored child")


WAITING_CALLER = """
return {
  triggers = { webhook { path = "/hooks/caller", mode = "async" } },
  run = function(ctx)
    local got = flows.trigger("flaky", { n = ctx.payload.n })   -- waits for the stored run's end
    if ctx.attempt == 1 then error("fails after the trigger") end
    return got
  end,
}"""

FLAKY = """
return {
  triggers = { from_flow() },
  run = function(ctx)
    if ctx.attempt == 1 then error("the first attempt fails") end
    return { n = ctx.payload.n, attempt = ctx.attempt }
  end,
}"""


@test
def flows_trigger_that_waits_from_a_stored_run_gets_the_stored_runs_result_after_its_retries():
    with rill({"caller.lua": WAITING_CALLER, "flaky.lua": FLAKY}) as r:
        caller = r.request("POST", "/hooks/caller", {"n": 8}).json()["run_id"]
        wait_until(lambda: r.runs("show", caller)["state"] == "succeeded", 20, "the caller to succeed")
        eq(json.loads(r.runs("show", caller)["result"]), {"n": 8, "attempt": 2}, "the child's result, retried")
        runs = settled_runs(r, "flaky", 1)
        eq(len(runs), 1, "runs of the child (the caller ran twice)")
        eq(r.runs("show", runs[0]["id"])["parent"], caller, "the child's parent")


IN_A_STEP = """
local tries = 0
return {
  triggers = { webhook { path = "/hooks/caller", mode = "async" } },
  run = function(ctx)
    local got = step("hand over", function()
      tries = tries + 1
      local r = flows.trigger("callee", { n = ctx.payload.n })
      if tries == 1 then error("flaky after the trigger") end
      return r
    end, { retries = 1, backoff = 0.01 })
    step("after", function() return "done" end)
    if ctx.attempt == 1 then error("the run fails after its steps") end
    return got
  end,
}"""


@test
def flows_trigger_inside_a_step_is_part_of_the_step_and_stored_once():
    with rill({"caller.lua": IN_A_STEP, "callee.lua": CALLEE}) as r:
        caller = r.request("POST", "/hooks/caller", {"n": 4}).json()["run_id"]
        wait_until(lambda: r.runs("show", caller)["state"] in ("succeeded", "dead"), 20, "the caller to end")
        run = r.runs("show", caller)
        eq((run["state"], run["attempt"]), ("succeeded", 2), "the caller, replayed once")
        eq([s["name"] for s in run["steps"]], ["hand over", "after"], "the caller's steps")
        eq(json.loads(run["result"]), {"n": 4, "stored": 1}, "the child's result")
        eq(len(settled_runs(r, "callee", 1)), 1, "runs of the child (the step ran twice)")


BIG_EMIT = """
return {
  triggers = { webhook { path = "/hooks/big" } },
  run = function(ctx)
    local ok, err = pcall(emit, "big", { s = ("x"):rep(ctx.payload.n) })
    local ok2, err2 = pcall(emit, ("n"):rep(201), 1)
    local bytes = {}
    for i, args in ipairs { { "big", { s = "%PDF\\255" } }, { "big\\255", 1 }, { "big", 1, { id = "a\\192\\175" } } } do
      local okb, errb = pcall(emit, unpack(args))
      bytes[i] = okb and "stored" or errb
    end
    return { ok = ok, err = not ok and err or nil, long_name = ok2, long_name_err = not ok2 and err2 or nil,
             bytes = bytes }
  end,
}"""


@test
def an_event_over_max_event_size_is_refused_naming_the_limit():
    with rill({"big.lua": BIG_EMIT, "sub.lua": SUBSCRIBER.replace('"quote.signed"', '"big"') % ""},
              env={"RILL_MAX_EVENT_SIZE": "64KiB"}) as r:
        res = r.request("POST", "/hooks/big", {"n": 100000}).json()
        eq(res["ok"], False, "a 100 KB event over 64 KiB: " + str(res))
        assert "max_event_size" in res["err"] and "64 KiB" in res["err"] and "big" in res["err"], res
        eq(res["long_name"], False, "a 201-character name")
        assert "1 to 200 characters" in res["long_name_err"], res
        # bytes that are not UTF-8 (a stored event's data and name are text):
        # SQLite stored them, Postgres refused them with its own error
        for got, part in zip(res["bytes"], ("data as JSON is not UTF-8 (byte 11)", "name is not UTF-8 (byte 4)",
                                            "id is not UTF-8 (byte 6)")):
            assert "emit: the event's " + part in got, res["bytes"]
        eq(r.metric('rill_events_refused_total{reason="max_event_size"}'), 1, "counted")
        eq(r.request("POST", "/hooks/big", {"n": 1000}).json()["ok"], True, "a small one is stored")
        settled_runs(r, "sub", 1)
        eq(len(r.runs("list", "--flow", "sub")), 1, "only the small one started the subscriber")


@test
def a_webhook_body_whose_event_is_over_max_event_size_is_a_413_and_a_long_delivery_id_is_kept_hashed():
    # a body within max_body can be over max_event_size as the event's JSON
    # (cjson writes "/" as "\\/"): it was a 500 "internal error", logged at
    # each try; a 16,000-byte delivery id got "503 retry later" for ever on
    # Postgres (its index refuses it): it is kept as its SHA-256
    with rill({"owner.lua": OWNER}, env={"RILL_MAX_EVENT_SIZE": "64KiB"}) as r:
        res = r.request("POST", "/hooks/signed", {"s": "/" * 40000}, {"X-Id": "slashes"})
        eq(res.status, 413, "an event over max_event_size once encoded: " + res.body[:200])
        assert "max_event_size" in res.json()["error"], res.body
        long_id = "k" * 16000  # kept as its digest: still a duplicate the second time
        eq(r.request("POST", "/hooks/signed", {"n": 1}, {"X-Id": long_id}).status, 202, "a 16,000-byte id")
        eq(r.request("POST", "/hooks/signed", {"n": 1}, {"X-Id": long_id}).status, 200, "the same id again")
        eq(r.request("POST", "/hooks/signed", {"n": 2}, {"X-Id": "k" * 15999 + "j"}).status, 202, "another")
        settled_runs(r, "owner", 2)


VERIFY_EMITS = """
return {
  triggers = { webhook { path = "/hooks/unsigned", verify = function(req)
    emit("quote.signed", { n = 99 })
    return false
  end } },
  run = function() return {} end,
}"""


@test
def a_verify_function_cannot_emit():
    # emit in a verify stored its event before the request was refused: an
    # unsigned request started the event's runs
    with rill({"v.lua": VERIFY_EMITS, "sub.lua": SUBSCRIBER % ""}) as r:
        eq(r.request("POST", "/hooks/unsigned", {}).status, 401, "refused")
        line = r.wait_log(msg="a webhook's verify function failed")
        assert "only a run emits events" in line["error"], line
        eq(r.runs("list", "--flow", "sub"), [], "no run of the event's subscriber")


WAITER = """
return {
  triggers = { webhook { path = "/hooks/wait", mode = "async" } },
  run = function(ctx)
    local e = wait_for("signature", { event = "quote.signed", match = { n = 5 }, timeout = "1h" })
    return { got = e.data.n, id = e.id }
  end,
}"""


REFUSER = """
return {
  retries = { attempts = 1 },
  triggers = { event { name = "quote.signed" } },
  run = function(ctx) fail("refused") end,
}"""


@test
def an_event_whose_run_is_kept_starts_no_second_run_once_retention_pruned_the_event():
    # retention deleted every event_runs row older than it, also those of
    # runs it keeps (dead): the event, delivered and pruned, emitted again
    # with its id started a second run of the flow beside the dead one
    with rill({"refuser.lua": REFUSER}, env={"RILL_RETENTION": "1s"}) as r:
        first = r.admin("POST", "/api/events/quote.signed?id=kept-1", token=TOKEN, body={"n": 1})
        eq(first.status, 202, "emitted: " + first.body)
        dead = settled_runs(r, "refuser", 1)[0]["id"]
        eq(r.runs("show", dead)["state"], "dead", "the event's run")
        # the event is pruned once delivered and older than retention
        wait_until(lambda: r.admin("POST", "/api/events/quote.signed?id=kept-1", token=TOKEN,
                                   body={"n": 1}).json()["new"], 15, "the event to be forgotten")
        settled_runs(r, "refuser", 1)
        eq([x["id"] for x in r.runs("list", "--flow", "refuser")], [dead], "the flow's runs")


@test
def ops_emit_an_event_by_hand_through_the_admin_api():
    with rill({"alert.lua": SUBSCRIBER % "", "waiter.lua": WAITER}) as r:
        waiting = r.request("POST", "/hooks/wait", {}).json()["run_id"]
        wait_until(lambda: r.runs("show", waiting)["state"] == "waiting", 15, "the run to wait")
        eq(r.admin("POST", "/api/events/quote.signed", body={"n": 5}).status, 401, "no token")
        res = r.admin("POST", "/api/events/quote.signed", token=TOKEN, body={"n": 5})
        eq(res.status, 202, "emitted: " + res.body)
        body = res.json()
        eq((body["event"], body["new"], body["starts"]), ("quote.signed", True, ["alert"]), "the answer")
        runs = settled_runs(r, "alert", 1)
        run = r.runs("show", runs[0]["id"])
        result = json.loads(run["result"])
        eq((result["n"], result["event_id"], result.get("emitted_by")), (5, body["id"], None), "the run's ctx")
        # stored like a flow's emit: it ends the wait that matches it
        wait_until(lambda: r.runs("show", waiting)["state"] == "succeeded", 15, "the waiting run to end")
        eq(json.loads(r.runs("show", waiting)["result"]), {"got": 5, "id": body["id"]}, "the wait's result")
        # an id of its own: sent twice (a retried curl), stored and fanned out once
        first = r.admin("POST", "/api/events/quote.signed?id=manual-1", token=TOKEN, body={"n": 6})
        eq((first.status, first.json()["id"], first.json()["new"]), (202, "manual-1", True), "first: " + first.body)
        again = r.admin("POST", "/api/events/quote.signed?id=manual-1", token=TOKEN, body={"n": 6})
        eq((again.status, again.json()["new"]), (200, False), "again: " + again.body)
        settled_runs(r, "alert", 2)
        eq(len(r.runs("list", "--flow", "alert")), 2, "one run per event id")
        # no body: the event's data is null
        eq(r.admin("POST", "/api/events/ping", token=TOKEN).status, 202, "no data")
        # bad input: a clear 4xx, nothing stored
        bad = r.admin("POST", "/api/events/quote.signed", token=TOKEN, body=b"{not json",
                      headers={"Content-Type": "application/json"})
        eq(bad.status, 400, "not JSON: " + bad.body)
        assert "not JSON" in bad.json()["error"], bad.body
        long = r.admin("POST", "/api/events/" + "x" * 201, token=TOKEN, body={})
        eq(long.status, 400, "a 201-character name: " + long.body)
        eq(r.admin("GET", "/api/events/quote.signed", token=TOKEN).status, 405, "GET")
        eq(len(r.runs("list", "--flow", "alert")), 2, "nothing more stored")


@test
def an_event_by_hand_whose_name_data_or_id_is_not_utf8_is_refused():
    # a webhook's JSON body is checked for UTF-8 (cjson copies a string's
    # bytes as they are); the admin endpoint's name, data and id alike
    with rill({"alert.lua": SUBSCRIBER % ""}) as r:
        name = r.admin("POST", "/api/events/quote.%FFsigned", token=TOKEN, body={"n": 1})
        eq(name.status, 400, "a name that is not UTF-8: " + name.body)
        assert "UTF-8" in name.json()["error"], name.body
        data = r.admin("POST", "/api/events/quote.signed", token=TOKEN, body=b'{"n": "\xff"}',
                       headers={"Content-Type": "application/json"})
        eq(data.status, 400, "data that is not UTF-8: " + data.body)
        assert "UTF-8" in data.json()["error"], data.body
        id = r.admin("POST", "/api/events/quote.signed?id=a%C0%AF", token=TOKEN, body={"n": 1})
        eq(id.status, 400, "an id that is not UTF-8: " + id.body)
        assert "UTF-8" in id.json()["error"], id.body
        eq(r.admin("POST", "/api/events/quote.signed", token=TOKEN, body={"n": 1}).status, 202, "a good one")
        eq(len(settled_runs(r, "alert", 1)), 1, "only the good one stored and started a run")


@test
def rill_emit_sends_an_event_to_the_running_server():
    with rill({"alert.lua": SUBSCRIBER % ""}) as r:
        env = {"RILL_ADMIN_TOKEN": TOKEN, "RILL_ADMIN_LISTEN": f"127.0.0.1:{r.admin_port}"}
        code, out, err = run_cli("emit", "quote.signed", '{"n": 8}', "--id", "cli 1", env=env)
        eq(code, 0, "exit code: " + err)
        eq(json.loads(out), {"event": "quote.signed", "id": "cli 1", "new": True, "starts": ["alert"]}, "printed")
        runs = settled_runs(r, "alert", 1)
        eq(json.loads(r.runs("show", runs[0]["id"])["result"])["n"], 8, "the run's payload")
        code, out, err = run_cli("emit", "quote.signed", '{"n": 8}', "--id", "cli 1", env=env)
        eq((code, json.loads(out)["new"]), (0, False), "again: " + err)
        code, out, err = run_cli("emit", "quote.signed", "{oops", env=env)
        eq(code, 2, "data that is not JSON: " + err)
        assert "not JSON" in err, err
        code, out, err = run_cli("emit", "quote.signed", env={**env, "RILL_ADMIN_TOKEN": "wrong"})
        eq(code, 1, "a wrong token: " + err)
        assert "401" in err and "bearer token" in err, err
        # which rill answered: another one on the default admin address is a common mix-up
        assert f"127.0.0.1:{r.admin_port} answered 401" in err and "--admin-listen" in err, err
        code, out, err = run_cli("emit", "quote.signed", env={**env, "RILL_ADMIN_TOKEN": ""})
        eq(code, 2, "no token: " + err)
        assert "RILL_ADMIN_TOKEN" in err, err
        eq(len(r.runs("list", "--flow", "alert")), 1, "one run")
    # no rill listening there: said so with the address, not a stack position
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    closed = s.getsockname()[1]
    s.close()
    code, out, err = run_cli("emit", "quote.signed", env={"RILL_ADMIN_TOKEN": TOKEN,
                                                         "RILL_ADMIN_LISTEN": f"127.0.0.1:{closed}"})
    eq(code, 1, "nothing listening: " + err)
    assert f"127.0.0.1:{closed}" in err and "--admin-listen" in err and ".lua:" not in err, err


@test
def check_reports_mistakes_in_event_triggers_at_their_line():
    d = temp_dir()
    files = {
        "noname.lua": "return {\n  triggers = {\n    event { match = { a = 1 } },\n  },\n  run = function() end,\n}",
        "badmatch.lua": "return {\n  triggers = { event { name = \"x\", match = 3 } },\n  run = function() end,\n}",
        "typo.lua": "return {\n  triggers = {\n    event {\n      name = \"x\",\n      mach = { a = 1 },\n    },\n  },\n"
                    "  run = function() end,\n}",
        "dbemit.lua": "return {\n  triggers = { db_event { table = \"quotes\", emit = 5 } },\n  run = function() end,\n}",
        "ok.lua": "return {\n  triggers = { event \"quote.signed\", event { name = \"a\", match = function() end } },\n"
                  "  run = function() end,\n}",
    }
    for name, src in files.items():
        with open(os.path.join(d, name), "w") as f:
            f.write(src)
    code, _, err = run_cli("check", d)
    eq(code, 1, "exit code")
    for expected in [f"{d}/noname.lua:3: event: name must be an event name",
                     f"{d}/badmatch.lua:2: event: match must be a table of fields",
                     f"{d}/typo.lua:5: event: unknown option 'mach' (did you mean 'match'?)",
                     f"{d}/dbemit.lua:2: db_event: emit must be an event name",
                     "4 flow file(s) with errors"]:
        assert expected in err, f"{expected!r} not in:\n{err}"
    assert "ok.lua" not in err, err


if __name__ == "__main__":
    main()
