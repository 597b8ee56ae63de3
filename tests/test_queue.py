"""The durable queue end to end, against a running rill and its store:
async webhooks stored before the 202, idempotency, retries and dead runs,
fail(), replay from the command line, concurrency limits, crash recovery
after SIGKILL, cron ticks stored once, missed ticks, retention.

The store is SQLite under each test's directory; test_queue_pg.py runs the
same tests on Postgres."""
import json
import os
import threading
import time

from lib.harness import Rill, eq, main, temp_dir, test, wait_until

# Every test's rill gets these: short timings so retries and recovery are quick.
FAST = {"RILL_POLL_INTERVAL": "0.1s", "RILL_RETRY_BACKOFF": "50ms", "RILL_RETRY_MAX_BACKOFF": "200ms"}


# new_store() -> a URL of an empty store, or None for the default (SQLite
# under the test's directory); test_queue_pg.py sets it to new Postgres
# databases. A directory keeps its store across restarts.
new_store = None
_stores = {}


def rill(flows, env=None, dir=None):
    dir = dir or temp_dir()
    if new_store and dir not in _stores:
        _stores[dir] = new_store()
    store = {"RILL_STORE": _stores[dir]} if dir in _stores else {}
    return Rill(flows, env={**FAST, **store, **(env or {})}, dir=dir)


def finished(r, run_id, timeout=10):
    """Waits for a run to end (succeeded, failed or dead); returns it."""
    def done():
        run = r.runs("show", run_id)
        return run if run["state"] in ("succeeded", "failed", "dead") else None
    return wait_until(done, timeout, f"run {run_id} to finish")


def post(r, path, body, headers=None):
    return r.request("POST", path, body, headers)


ASYNC = """
return {
  triggers = { webhook { path = "/hooks/quote", mode = "async" } },
  run = function(ctx)
    log.info("quote received", { id = ctx.payload.id })
    return { id = ctx.payload.id, attempt = ctx.attempt }
  end,
}"""


@test
def async_webhook_is_stored_and_answered_with_its_run_id():
    with rill({"quote.lua": ASYNC}) as r:
        res = post(r, "/hooks/quote", {"id": "Q-1"})
        eq(res.status, 202, "status")
        run_id = res.json()["run_id"]
        run = finished(r, run_id)
        eq(run["state"], "succeeded", "state")
        eq(run["flow"], "quote", "flow")
        eq(json.loads(run["payload"]), {"id": "Q-1"}, "stored payload")
        eq(json.loads(run["result"]), {"id": "Q-1", "attempt": 1}, "stored result")
        eq(json.loads(run["trigger"])["type"], "webhook", "trigger")
        line = [l for l in run["logs"] if l["level"] == "info"]
        eq([l["message"] for l in line], ["quote received"], "the run's log lines")
        eq(json.loads(line[0]["fields"]), {"id": "Q-1"}, "log fields")
        listed = r.runs("list", "--flow", "quote")
        eq([x["id"] for x in listed], [run_id], "runs list --flow")
        code, out, _ = r.runs_cli("show", run_id)
        eq(code, 0, "runs show exit code")
        assert "quote received" in out and "succeeded" in out, out


IDEM = """
local n = 0
return {
  triggers = {
    webhook { path = "/hooks/esign", mode = "async", idempotency = "header:X-Delivery-Id" },
    webhook { path = "/hooks/bank", mode = "async", idempotency = "body:event.id" },
  },
  run = function(ctx)
    n = n + 1
    return { runs_so_far = n }
  end,
}"""


@test
def a_second_delivery_with_the_same_id_is_acknowledged_and_not_run():
    with rill({"idem.lua": IDEM}) as r:
        first = post(r, "/hooks/esign", {"x": 1}, {"X-Delivery-Id": "d-1"})
        eq(first.status, 202, "first delivery")
        again = post(r, "/hooks/esign", {"x": 1}, {"X-Delivery-Id": "d-1"})
        eq(again.status, 200, "second delivery")
        eq(again.json(), {"run_id": first.json()["run_id"], "duplicate": True}, "second answer")
        other = post(r, "/hooks/esign", {"x": 1}, {"X-Delivery-Id": "d-2"})
        eq(other.status, 202, "another delivery id")
        b1 = post(r, "/hooks/bank", {"event": {"id": 77}})
        b2 = post(r, "/hooks/bank", {"event": {"id": 77}, "retry": True})
        eq((b1.status, b2.status), (202, 200), "body field key")
        eq(b2.json()["run_id"], b1.json()["run_id"], "same run for the same body id")
        for res in (first, other, b1):
            finished(r, res.json()["run_id"])
        eq(len(r.runs("list", "--flow", "idem")), 3, "runs stored")
        # no delivery id: stored all the same (never refused), and said
        eq(post(r, "/hooks/esign", {"x": 1}).status, 202, "no delivery id")
        r.wait_log(msg_has="without its delivery id", level="warn")


FLAKY = """
return {
  retries = { attempts = 3, backoff = "50ms" },
  triggers = { webhook { path = "/hooks/flaky", mode = "async" } },
  run = function(ctx)
    log.info("trying", { attempt = ctx.attempt })
    if ctx.attempt < ctx.payload.succeed_at then
      error("invoicing service answered 503")
    end
    return "ok on attempt " .. ctx.attempt
  end,
}"""


@test
def a_failing_run_is_retried_then_dead_then_replayed():
    with rill({"flaky.lua": FLAKY}) as r:
        ok = post(r, "/hooks/flaky", {"succeed_at": 2}).json()["run_id"]
        dead = post(r, "/hooks/flaky", {"succeed_at": 99}).json()["run_id"]
        run = finished(r, ok)
        eq((run["state"], run["attempt"], json.loads(run["result"])), ("succeeded", 2, "ok on attempt 2"),
           "retried run")
        run = finished(r, dead)
        eq((run["state"], run["attempt"], run["max_attempts"]), ("dead", 3, 3), "dead run")
        err = json.loads(run["error"])
        assert "flaky.lua:8: invoicing service answered 503" in err["message"], err
        eq([l["attempt"] for l in run["logs"] if l["message"] == "trying"], [1, 2, 3], "one log line per attempt")
        eq([x["id"] for x in r.runs("list", "--state", "dead")], [dead], "runs list --state dead")
        # The dead run stays dead (no more attempts) until someone replays it.
        time.sleep(0.5)
        eq(r.runs("show", dead)["state"], "dead", "still dead")
        code, out, _ = r.runs_cli("show", dead)
        assert f"state:       dead (rill runs retry {dead} runs it again)" in out, out
        code, out, _ = r.runs_cli("retry", dead)
        eq(code, 0, "runs retry exit code")
        run = wait_until(lambda: (lambda x: x if x["attempt"] == 4 and x["state"] == "dead" else None)(
            r.runs("show", dead)), 10, "the replayed attempt")
        eq(run["max_attempts"], 4, "one more attempt")
        code, _, err = r.runs_cli("retry", ok)
        eq(code, 1, "retrying a succeeded run")
        assert "only a dead, failed or retrying run" in err, err


@test
def replaying_a_dead_run_runs_the_flow_as_it_is_now():
    broken = FLAKY.replace("ctx.payload.succeed_at", "99")
    with rill({"flaky.lua": broken}) as r:
        run_id = post(r, "/hooks/flaky", {}).json()["run_id"]
        eq(finished(r, run_id)["state"], "dead", "dead with the broken version")
        before = r.reloads()
        r.write_flow("flaky.lua", FLAKY.replace("ctx.payload.succeed_at", "0"))
        r.wait_reload(before)
        eq(r.runs_cli("retry", run_id)[0], 0, "runs retry")
        run = wait_until(lambda: (lambda x: x if x["state"] == "succeeded" else None)(r.runs("show", run_id)),
                         10, "the replay to succeed")
        eq(json.loads(run["result"]), "ok on attempt 4", "result of the replay")


FAIL = """
return {
  retries = { attempts = 5, backoff = "50ms" },
  triggers = { webhook { path = "/hooks/payment", mode = "async" } },
  run = function(ctx)
    if not ctx.payload.invoice then fail("payment without an invoice number") end
    return "recorded"
  end,
}"""


@test
def fail_marks_an_error_not_worth_retrying():
    with rill({"payment.lua": FAIL}) as r:
        run_id = post(r, "/hooks/payment", {"amount": 10}).json()["run_id"]
        run = finished(r, run_id)
        eq((run["state"], run["attempt"]), ("dead", 1), "dead at once")
        assert "payment without an invoice number" in json.loads(run["error"])["message"], run["error"]
        code, out, _ = r.runs_cli("delete", run_id)
        eq(code, 0, "runs delete")
        code, _, err = r.runs_cli("show", run_id)
        eq(code, 1, "show after delete")
        assert "no run " + run_id in err, err


GAUGE = """
local active, most = 0, 0
return {
  %s
  triggers = { webhook { path = "/hooks/%s", mode = "async" } },
  run = function(ctx)
    active = active + 1
    if active > most then most = active end
    sleep(0.1)
    active = active - 1
    return most
  end,
}"""


BYTES = r"""
return {
  triggers = { webhook { path = "/hooks/bytes", mode = "async" } },
  run = function(ctx)
    local pdf = "%PDF-\255\254\0\200 end"
    log.info("downloaded \255", { body = pdf, nested = { b = pdf } })
    if ctx.attempt == 1 then error("bad answer: " .. pdf) end
    if ctx.payload.give_back then return pdf end
    return "ok"
  end,
}"""


@test
def a_run_logging_bytes_that_are_not_utf8_stores_its_outcome():
    # Postgres refused the outcome of a run whose log lines or error held
    # bytes that are not UTF-8 (a response's body): the run, succeeded, ran
    # again at each lease's end until it was dead ("its last attempt never
    # finished"); SQLite kept bytes that made runs show --json invalid
    with rill({"bytes.lua": BYTES}) as r:
        run_id = post(r, "/hooks/bytes", {}).json()["run_id"]
        run = finished(r, run_id)
        eq((run["state"], run["attempt"], json.loads(run["result"])), ("succeeded", 2, "ok"), "the run")
        logged = [l for l in run["logs"] if l["message"].startswith("downloaded")]
        eq(len(logged), 2, "the line of each attempt")
        eq(logged[0]["message"], "downloaded \ufffd", "message: the bad byte replaced")
        fields = json.loads(logged[0]["fields"])
        eq(fields["body"], "%PDF-\ufffd\ufffd\u0000\ufffd end", "field: each bad byte replaced")
        eq(fields["nested"]["b"], fields["body"], "a nested field too")
        failed = [l for l in run["logs"] if l["message"].startswith("run failed")]
        assert failed and "bad answer: %PDF-\ufffd\ufffd" in failed[0]["message"], failed
        # a result that is not UTF-8 is not JSON: dead, as a result that is not JSON is
        run_id = post(r, "/hooks/bytes", {"give_back": True}).json()["run_id"]
        run = finished(r, run_id)
        eq((run["state"], run["attempt"]), ("dead", 2), "a result of bytes")
        err = json.loads(run["error"])["message"]
        assert "the run's result is not JSON: byte 7 of it as JSON is not UTF-8" in err, err


def max_at_once(r, path, flow, n):
    ids = [post(r, path, {"i": i}).json()["run_id"] for i in range(n)]
    runs = [finished(r, i) for i in ids]
    eq({x["state"] for x in runs}, {"succeeded"}, f"{flow} runs")
    return max(json.loads(x["result"]) for x in runs)


BACKLOG = """
return {
  triggers = { webhook { path = "/hooks/backlog", mode = "async" } },
  concurrency = 1,
  deadline = "60s",
  run = function() sleep(30) end,
}"""

NAPPER = """
return {
  triggers = { webhook { path = "/hooks/nap", mode = "async" } },
  run = function() sleep_for("nap", "0.3s") return "woke" end,
}"""


@test
def a_flow_held_back_by_its_concurrency_with_a_long_backlog_does_not_hold_back_others():
    with rill({"backlog.lua": BACKLOG, "napper.lua": NAPPER}, env={"RILL_DRAIN_TIMEOUT": "0.1s"}) as r:
        # one backlog run holds the flow's only slot; more than the 1,000
        # runs a poll looks at wait behind it, due before the nap ends
        for n in range(1010):
            eq(post(r, "/hooks/backlog", {"n": n}).status, 202, "backlog run stored")
        nap = post(r, "/hooks/nap", {}).json()["run_id"]
        run = finished(r, nap)
        eq((run["state"], json.loads(run["result"])), ("succeeded", "woke"), "the nap woke")


@test
def concurrency_limits_per_flow_and_per_instance():
    flows = {"limited.lua": GAUGE % ("concurrency = 2,", "limited"), "free.lua": GAUGE % ("", "free")}
    with rill(flows, env={"RILL_CONCURRENCY": "3"}) as r:
        eq(max_at_once(r, "/hooks/limited", "limited", 8), 2, "limited flow: runs at once")
        eq(max_at_once(r, "/hooks/free", "free", 8), 3, "instance limit: runs at once")


SLOW_EVENT = """
return {
  triggers = { webhook { path = "/hooks/event", mode = "async", idempotency = "header:X-Id" } },
  run = function(ctx)
    sleep(0.2)
    return ctx.payload.n
  end,
}"""


@test
def sigkill_in_the_middle_of_runs_loses_nothing_and_doubles_nothing():
    d = temp_dir()
    env = {"RILL_LEASE": "1s", "RILL_CONCURRENCY": "50"}
    accepted = {}  # n -> run id, for every 202 received
    lock = threading.Lock()

    def sender(r, ns):
        for n in ns:
            try:
                res = post(r, "/hooks/event", {"n": n}, {"X-Id": f"ev-{n}"})
            except OSError:
                return  # rill is gone
            if res.status == 202:
                with lock:
                    accepted[n] = res.json()["run_id"]

    r = rill({"event.lua": SLOW_EVENT}, env=env, dir=d)
    with r:
        threads = [threading.Thread(target=sender, args=(r, range(k, 400, 4))) for k in range(4)]
        for t in threads:
            t.start()
        wait_until(lambda: len(accepted) >= 200, 30, "200 accepted events")
        r.kill()  # mid-flight: runs executing, posts arriving
        for t in threads:
            t.join()
    assert 200 <= len(accepted) < 400, len(accepted)
    with rill({"event.lua": SLOW_EVENT}, env=env, dir=d) as r:
        def settled():
            runs = r.runs("list", "--flow", "event", "--limit", "1000")
            return runs if all(x["state"] in ("succeeded", "dead") for x in runs) else None
        runs = wait_until(settled, 60, "every run to settle")
        by_id = {x["id"]: x for x in runs}
        # every accepted event has its run, and it succeeded: none lost
        eq(sorted(n for n, i in accepted.items() if by_id.get(i, {}).get("state") != "succeeded"), [],
           "accepted events without a successful run")
        # one run per event: none doubled (a redelivery is a duplicate)
        eq(len(runs), len({x["id"] for x in runs}), "distinct runs")
        for x in runs:
            eq(json.loads(r.runs("show", x["id"])["payload"])["n"] is not None, True, "payload kept")
        results = [json.loads(r.runs("show", i)["result"]) for i in list(accepted.values())[:20]]
        eq(results, list(accepted.keys())[:20], "each run's result is its own event")
        n = next(iter(accepted))
        again = post(r, "/hooks/event", {"n": n}, {"X-Id": f"ev-{n}"})
        eq((again.status, again.json()["run_id"]), (200, accepted[n]), "redelivery after the restart")
        recovered = [x for x in runs if x["attempt"] > 1]
        assert recovered, "some runs were executing at the kill and ran again after their lease"


LONG = """
return {
  triggers = { webhook { path = "/hooks/long", mode = "async" } },
  run = function(ctx)
    if ctx.attempt == 1 then sleep(20) end
    return "done on attempt " .. ctx.attempt
  end,
}"""


@test
def sigterm_puts_runs_that_outlast_the_drain_back_in_the_queue():
    d = temp_dir()
    env = {"RILL_DRAIN_TIMEOUT": "0.3s"}  # the lease stays 60 s: only the release makes the restart quick
    first = rill({"long.lua": LONG}, env=env, dir=d)
    with first:
        run_id = post(first, "/hooks/long", {}).json()["run_id"]
        wait_until(lambda: first.runs("show", run_id)["state"] == "running", 10, "the run to start")
    first.wait_log(msg_has="go back to the queue", level="warn")
    with rill({"long.lua": LONG}, env=env, dir=d) as r:
        run = finished(r, run_id)
        eq((run["state"], json.loads(run["result"])), ("succeeded", "done on attempt 2"), "after the restart")


# Parked runs that wake at once: "quick" ones end at once, "slow" ones hold
# their slot (an in-memory sleep, %s) after waking.
BURST = """
local active = 0
return {
  triggers = { webhook { path = "/hooks/burst", mode = "async" } },
  retries = { attempts = 1 },
  deadline = "60s",
  run = function(ctx)
    sleep_until("wake", ctx.payload.at)
    active = active + 1
    log.info("at once", { n = active })
    %s
    active = active - 1
    return { attempt = ctx.attempt }
  end,
}"""


def burst(r, slow_hold):
    """Parks 6 quick and 4 slow BURST runs due at once; -> (quick, slow) ids."""
    at = time.time() + 3
    quick = [post(r, "/hooks/burst", {"at": at}).json()["run_id"] for _ in range(6)]
    slow = [post(r, "/hooks/burst", {"at": at + 0.001 * (i + 1), "hold": slow_hold}).json()["run_id"]
            for i in range(4)]
    return quick, slow


def woken(r, runs, n):
    """Waits until n of the runs woke (each holds a slot); -> their ids."""
    def found():
        ids = [i for i in runs if r.log_lines(msg="at once", run=i)]
        return ids if len(ids) >= n else None
    return wait_until(found, 15, f"{n} runs to wake")


@test
def runs_claimed_ahead_that_find_no_slot_go_back_unstarted():
    # Claims come back full and their runs end at once: the next claim goes
    # before they start. The slow runs then hold both slots, and the runs
    # claimed ahead of them go back to the store at once, their attempt not
    # counted: a SIGKILL then leaves them attempt 1 after the restart (a
    # claimed run kept waiting for a slot would have spent its one attempt,
    # and be dead without having run)
    env = {"RILL_CONCURRENCY": "2", "RILL_LEASE": "1s"}
    for tries in range(3):
        # (a claim goes ahead only after runs that ended at once: a quick
        # run that the machine's load stretched past its time slice makes
        # this burst go without one; such a burst is tried again)
        d = temp_dir()
        first = rill({"burst.lua": BURST % "if ctx.payload.hold then sleep(ctx.payload.hold) end"}, env=env, dir=d)
        with first:
            quick, slow = burst(first, 30)
            for q in quick:
                eq(finished(first, q)["state"], "succeeded", "a quick run")
            held = woken(first, slow, 2)
            given = first.log_lines(msg_has="given back to the queue", level="info")
            if not given and tries < 2:
                try:
                    first.wait_log(timeout=3, msg_has="given back to the queue", level="info")
                except AssertionError:
                    continue
            first.wait_log(msg_has="given back to the queue", level="info")
            eq(max(x["n"] for x in first.log_lines(msg="at once")), 2, "runs at once")
            first.kill()
            break
    with rill({"burst.lua": BURST % ""}, env=env, dir=d) as r:
        wait_until(lambda: all(r.runs("show", i)["state"] in ("succeeded", "dead") for i in slow), 30,
                   "the slow runs to end")
        results = {i: r.runs("show", i) for i in slow}
    eq([(results[i]["state"], results[i]["attempt"]) for i in slow],
       [("dead", 2) if i in held else ("succeeded", 1) for i in slow],
       "killed mid-run (one attempt: dead), given back unstarted (run once)")


@test
def a_paused_flows_runs_claimed_ahead_do_not_start():
    env = {"RILL_CONCURRENCY": "2", "RILL_ADMIN_TOKEN": "adm-q-4a1c", "RILL_DRAIN_TIMEOUT": "0.3s"}
    with rill({"burst.lua": BURST % "if ctx.payload.hold then sleep(ctx.payload.hold) end"}, env=env) as r:
        quick, slow = burst(r, 2)
        for q in quick:
            eq(finished(r, q)["state"], "succeeded", "a quick run")
        held = woken(r, slow, 2)
        eq(r.admin("POST", "/api/flows/burst/pause", token="adm-q-4a1c").status, 200, "pause")
        for i in held:
            eq(finished(r, i)["state"], "succeeded", "a slow run that had started")
        # polls after the slots freed (the depth they read counts only the
        # runs given back, still marked running): the paused flow's other
        # runs stay in the store, none woken
        others = [i for i in slow if i not in held]
        given_back = [i for i in others if r.runs("show", i)["state"] == "running"]
        wait_until(lambda: r.metric("rill_queue_slots_used") == 0, 10, "the slots to free")
        wait_until(lambda: r.metric('rill_queue_runs{state="running"}') == len(given_back), 10,
                   "a poll after the slow runs")
        eq([len(r.log_lines(msg="at once", run=i)) for i in others], [0, 0], "the others woken")


KEPT_REQUEST = """
local TOKEN = env.HOOK_TOKEN
return {
  retries = { attempts = 2, backoff = "50ms" },
  triggers = { webhook { path = "/hooks/kept", mode = "async" } },
  run = function(ctx)
    local q = ctx.request.query
    if ctx.attempt == 1 then
      log.info("first attempt", { real = ctx.request.headers["x-token"] == TOKEN })
      error("once more")
    end
    return { query = type(q), a = q.a }
  end,
}"""


@test
def the_request_kept_for_later_attempts_has_its_secrets_masked_and_a_query_always():
    secret = "kept-s3cret-9f2"
    with rill({"kept.lua": KEPT_REQUEST}, env={"HOOK_TOKEN": secret}) as r:
        res = post(r, f"/hooks/kept?a=1&t={secret}", {"n": 1}, {"X-Token": secret})
        run = finished(r, res.json()["run_id"])
        eq((run["state"], json.loads(run["result"])), ("succeeded", {"query": "table", "a": "1"}), "the retried run")
        eq(r.wait_log(msg="first attempt")["real"], True, "the first attempt read the real header")
        kept = json.loads(run["request"])
        eq((kept["headers"]["x-token"], kept["query"]), ("***", {"a": "1", "t": "***"}), "the stored request")
        assert secret not in run["request"], run["request"]
        # no query string: the later attempt's request has an empty query all the same
        run = finished(r, post(r, "/hooks/kept", {"n": 2}).json()["run_id"])
        eq(json.loads(run["result"]), {"query": "table"}, "a query-less request, retried")
        eq(json.loads(run["request"])["query"], {}, "stored with an empty query")


PASSED_OVER = """
return {
  triggers = { webhook { path = "/hooks/%s", mode = "async" } },
  run = function() return "ran" end,
}"""


@test
def seventy_paused_flows_hold_back_no_other_flows_retries():
    # a poll passes the paused flows over: more of them than a statement
    # takes parameters (64) stopped every poll, and every other flow's retries
    flows = {f"p{i}.lua": PASSED_OVER % f"p{i}" for i in range(70)}
    flows["flaky.lua"] = FLAKY
    with rill(flows, env={"RILL_ADMIN_TOKEN": "adm-q-70p"}) as r:
        for i in range(70):
            eq(r.admin("POST", f"/api/flows/p{i}/pause", token="adm-q-70p").status, 200, f"pause p{i}")
        run = finished(r, post(r, "/hooks/flaky", {"succeed_at": 2}).json()["run_id"])
        eq((run["state"], run["attempt"]), ("succeeded", 2), "a run retried while 70 flows are paused")


TICK = """
return {
  triggers = { cron { "* * * * * *", missed = "%s" } },
  run = function(ctx)
    return { scheduled = ctx.payload.scheduled, missed = ctx.payload.missed or false }
  end,
}"""


def cron_runs(r):
    out = []
    for x in r.runs("list", "--flow", "tick", "--limit", "1000"):
        if x["state"] == "succeeded":
            out.append(json.loads(r.runs("show", x["id"])["result"]))
    return out


@test
def each_cron_tick_is_one_stored_run_and_a_missed_tick_runs_once():
    d = temp_dir()
    with rill({"tick.lua": TICK % "run_once"}, dir=d) as r:
        wait_until(lambda: len(cron_runs(r)) >= 2, 10, "two ticks")
    time.sleep(3.2)  # about three ticks pass with no rill running
    with rill({"tick.lua": TICK % "run_once"}, dir=d) as r:
        wait_until(lambda: any(x["missed"] for x in cron_runs(r)), 10, "the catch-up run")
        time.sleep(1.2)
        runs = cron_runs(r)
    scheduled = [x["scheduled"] for x in runs if not x["missed"]]
    eq(len(scheduled), len(set(scheduled)), "one run per tick")
    eq(sum(1 for x in runs if x["missed"]), 1, "catch-up runs for three missed ticks")


@test
def missed_ticks_are_skipped_by_default():
    d = temp_dir()
    with rill({"tick.lua": TICK % "skip"}, dir=d) as r:
        wait_until(lambda: len(cron_runs(r)) >= 1, 10, "a tick")
    time.sleep(2.2)
    with rill({"tick.lua": TICK % "skip"}, dir=d) as r:
        wait_until(lambda: len(cron_runs(r)) >= 3, 10, "ticks after the restart")
        eq([x for x in cron_runs(r) if x["missed"]], [], "catch-up runs")


GO = """
return {
  triggers = { webhook { path = "/hooks/go", mode = "async", emit = "batch.go" } },
  run = function(ctx) return { n = ctx.payload.n } end,
}"""

# A run of the event (ENDING % its flow's name): returns the name and the
# event's n, or fails (its attempts: one) when the name ends with "fail".
ENDING = """
return {
  triggers = { event { name = "batch.go" } },
  retries = { attempts = 1 },
  run = function(ctx)
    local name = "%s"
    if name:match("fail$") then fail("no " .. ctx.payload.n) end
    return { flow = name, n = ctx.payload.n }
  end,
}"""


@test
def runs_ending_in_one_turn_each_store_their_own_outcome():
    """The runs an event starts are claimed together and end in the same
    turn of the loop, so their outcomes go to the store in one batch: each
    run still gets its own."""
    names = ["a", "b", "c", "d", "e_fail", "f"]
    flows = {"go.lua": GO, **{f"{n}.lua": ENDING % n for n in names}}
    with rill(flows) as r:
        for n in (1, 2):
            eq(post(r, "/hooks/go", {"n": n}).status, 202, f"event {n}")

        def settled():
            runs = [x for x in r.runs("list", "--limit", "100") if x["flow"] != "go"]
            done = len(runs) == 2 * len(names) and all(x["state"] in ("succeeded", "dead") for x in runs)
            return runs if done else None
        runs = wait_until(settled, 20, "every run of the events to end")
        for x in runs:
            run = r.runs("show", x["id"])
            n = json.loads(run["payload"])["n"] if run.get("payload") else None
            if x["flow"].endswith("fail"):
                eq(run["state"], "dead", f"{x['flow']}'s state")
                assert "no " in run["error"], run["error"]
            else:
                eq(run["state"], "succeeded", f"{x['flow']}'s state")
                result = json.loads(run["result"])
                eq(result["flow"], x["flow"], "the result of the run's own flow")
                if n is not None:
                    eq(result["n"], n, f"{x['flow']}'s n")
            eq(run.get("owner"), None, f"{x['flow']}'s lease")
        eq(sorted(json.loads(r.runs("show", x["id"])["result"])["n"] for x in runs if x["flow"] == "a"), [1, 2],
           "the two events' runs of one flow")


@test
def finished_runs_are_pruned_after_retention_and_dead_ones_kept():
    flows = {"quote.lua": ASYNC, "payment.lua": FAIL}
    with rill(flows, env={"RILL_RETENTION": "1s"}) as r:
        done = post(r, "/hooks/quote", {"id": "Q-9"}).json()["run_id"]
        dead = post(r, "/hooks/payment", {}).json()["run_id"]
        eq(finished(r, done)["state"], "succeeded", "run")
        eq(finished(r, dead)["state"], "dead", "dead run")
        wait_until(lambda: r.runs_cli("show", done)[0] == 1, 10, "the finished run to be pruned")
        time.sleep(1.2)  # another prune pass
        eq(r.runs("show", dead)["state"], "dead", "dead run kept")


KEPT = """
return {
  retries = { attempts = 1 },
  triggers = { webhook { path = "/hooks/kept", mode = "async", idempotency = "header:X-Delivery-Id" } },
  run = function(ctx)
    if ctx.payload.fail then fail("refused") end
    if ctx.payload.sleep then sleep_for("a long wait", "1h") end
    return "done"
  end,
}"""


@test
def the_delivery_id_of_a_run_still_kept_is_not_forgotten_by_retention():
    # retention deleted every delivery id older than it, also those of runs
    # it keeps (dead, asleep, waiting): a redelivery made a second run of
    # one delivery beside the first (which `runs retry` could run again)
    with rill({"kept.lua": KEPT}, env={"RILL_RETENTION": "1s"}) as r:
        def deliver(key, body):
            return post(r, "/hooks/kept", body, {"X-Delivery-Id": key})
        dead = deliver("d-dead", {"fail": True}).json()["run_id"]
        asleep = deliver("d-asleep", {"sleep": True}).json()["run_id"]
        done = deliver("d-done", {}).json()["run_id"]
        eq(finished(r, dead)["state"], "dead", "dead run")
        eq(finished(r, done)["state"], "succeeded", "finished run")
        wait_until(lambda: r.runs("show", asleep)["state"] == "sleeping", 10, "the run to sleep")
        wait_until(lambda: r.runs_cli("show", done)[0] == 1, 10, "the finished run to be pruned")
        for key, run_id in (("d-dead", dead), ("d-asleep", asleep)):
            again = deliver(key, {})
            eq((again.status, again.json()), (200, {"run_id": run_id, "duplicate": True}), f"{key} delivered again")
        # forgotten with its run, as documented
        eq(deliver("d-done", {}).status, 202, "the pruned run's delivery id")


@test
def sync_webhook_runs_are_kept_in_the_history():
    flow = """
return {
  triggers = { webhook { path = "/hooks/sync" } },
  run = function(ctx) log.info("answering") return { ok = true } end,
}"""
    with rill({"sync.lua": flow}) as r:
        eq(post(r, "/hooks/sync", {"a": 1}).status, 200, "sync answer")
        time.sleep(0.3)
        eq(r.runs("list", "--flow", "sync"), [], "a success is not recorded by default (record_sync = failed)")
    with rill({"sync.lua": flow}, env={"RILL_RECORD_SYNC": "all"}) as r:
        res = post(r, "/hooks/sync", {"a": 1})
        eq(res.status, 200, "sync answer")
        runs = wait_until(lambda: r.runs("list", "--flow", "sync"), 10, "the recorded run")
        run = r.runs("show", runs[0]["id"])
        eq((run["state"], json.loads(run["result"])), ("succeeded", {"ok": True}), "recorded run")
        eq([l["message"] for l in run["logs"] if l["level"] == "info"], ["answering"], "recorded log")


@test
def a_request_failing_verify_gets_401_and_is_not_stored():
    flow = """
return {
  triggers = { webhook { path = "/hooks/signed", mode = "async",
    verify = function(req) return req.headers["x-token"] == "s3cret" end } },
  run = function(ctx) return "ran" end,
}"""
    with rill({"signed.lua": flow}) as r:
        bad = post(r, "/hooks/signed", {"a": 1}, {"X-Token": "nope"})
        eq(bad.status, 401, "bad token")
        eq(bad.json()["error"], "signature check failed", "reason")
        good = post(r, "/hooks/signed", {"a": 1}, {"X-Token": "s3cret"})
        eq(good.status, 202, "good token")
        finished(r, good.json()["run_id"])
        eq(len(r.runs("list", "--flow", "signed")), 1, "runs stored")


@test
def runs_commands_report_bad_usage():
    with rill({"quote.lua": ASYNC}) as r:
        code, _, err = r.runs_cli("show", "no-such-run")
        eq(code, 1, "show unknown run")
        assert "no run no-such-run" in err, err
        code, _, err = r.runs_cli("frobnicate")
        eq(code, 2, "unknown subcommand")
        assert "expected list, show, retry, delete or count" in err, err
        code, out, _ = r.runs_cli("count")
        eq((code, out.strip()), (0, "0"), "count on an empty store")


if __name__ == "__main__":
    os.chdir(os.path.dirname(os.path.abspath(__file__)))
    main()
