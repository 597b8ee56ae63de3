"""`rill test` and the clock seam: a flow's test file sets "now" (a DST day,
a leap day, the 31st), fast-forwards days in an instant (a sleeping run
wakes, cron ticks fire), stubs outbound HTTP (an unstubbed call fails the
test) and asserts on results, database writes and calls; a failing
assertion names the test file's line. And a run sleeping two days across a
restart of `rill serve`, fast-forwarded with clock_offset."""
import os

from lib.harness import Rill, eq, main, run_cli, temp_dir, test, wait_until

NIGHTLY = """
-- Every night at 02:30 Paris time: count yesterday's quotes into a report.
return {
  triggers = { cron { "30 2 * * *", tz = "Europe/Paris" } },
  run = function(ctx)
    local n = db.query("SELECT count(*) AS n FROM quotes")[1].n
    http.post(env.REPORT_URL, { json = { quotes = n, at = ctx.payload.scheduled } })
    return { quotes = n, scheduled = ctx.payload.scheduled }
  end,
}"""

FOLLOW_UP = """
-- A quote sent gets a reminder three days later unless it was signed.
return {
  triggers = { webhook { path = "/hooks/quote-sent", mode = "async" } },
  run = function(ctx)
    local q = ctx.payload
    sleep_for("three days", "3d")
    local signed = db.query("SELECT signed FROM quotes WHERE id = $1", q.id)[1].signed
    if signed == 1 then return "signed, no reminder" end
    step("remind", function()
      return http.post(env.MAIL_URL, { json = { to = q.email, text = "Your quote is waiting" } }).status
    end)
    return "reminded at " .. time.iso(time.now(), "Europe/Paris")
  end,
}"""

TESTS = """
local SCHEMA = "CREATE TABLE quotes (id INTEGER PRIMARY KEY, email TEXT, signed INTEGER DEFAULT 0)"

test("the nightly report on the day clocks go forward (no 02:30 in Paris)", function(t)
  t.now("2026-03-28T12:00:00", "Europe/Paris")
  t.eq(t.next_fire("nightly"), "2026-03-29T03:30:00+02:00", "the tick on the DST day")
  t.now("2024-02-28T12:00:00", "Europe/Paris")
  t.eq(t.next_fire("nightly"), "2024-02-29T02:30:00+01:00", "a leap day")
end)

test("the nightly report counts quotes and posts them", function(t)
  t.db.exec(SCHEMA)
  t.db.exec("INSERT INTO quotes (id, email) VALUES (1, 'a@example.com'), (2, 'b@example.com')")
  t.env { REPORT_URL = "https://reports.example/in" }
  t.stub("POST", "https://reports.example/", { status = 200, json = { ok = true } })
  t.now("2026-01-31T12:00:00", "Europe/Paris")
  t.advance("1d")
  local runs = t.runs("nightly")
  t.eq(#runs, 1, "one tick in a day")
  t.eq(runs[1].result, { quotes = 2, scheduled = "2026-02-01T01:30:00Z" }, "the run's result")
  t.eq(t.calls("POST", "reports.example")[1].json, { quotes = 2, at = "2026-02-01T01:30:00Z" }, "what was posted")
end)

test("a quote not signed gets its reminder three days later, at once in the test", function(t)
  t.db.exec(SCHEMA)
  t.db.exec("INSERT INTO quotes (id, email) VALUES (7, 'c@example.com')")
  t.env { MAIL_URL = "https://mail.example/send" }
  t.stub("POST", "https://mail.example/", { status = 202 })
  t.now("2026-11-02T10:00:00", "Europe/Paris")
  local resp = t.webhook("POST", "/hooks/quote-sent", { json = { id = 7, email = "c@example.com" } })
  t.eq(resp.status, 202, "accepted")
  t.eq(t.runs("follow-up")[1].state, "sleeping", "parked")
  t.advance("2d")
  t.eq(t.runs("follow-up")[1].state, "sleeping", "still parked after two days")
  t.eq(#t.calls(), 0, "no mail yet")
  t.advance("1d")
  local run = t.runs("follow-up")[1]
  t.eq(run.state, "succeeded", "woken after three days")
  t.eq(run.result, "reminded at 2026-11-05T10:00:00+01:00", "when")
  t.eq(t.calls("POST")[1].json.to, "c@example.com", "the reminder's recipient")
end)

test("a signed quote gets no reminder", function(t)
  t.db.exec(SCHEMA)
  t.db.exec("INSERT INTO quotes (id, email, signed) VALUES (8, 'd@example.com', 1)")
  t.webhook("POST", "/hooks/quote-sent", { json = { id = 8, email = "d@example.com" } })
  t.advance("3d")
  t.eq(t.runs("follow-up")[1].result, "signed, no reminder")
  t.eq(#t.calls(), 0, "no call")
end)
"""

BROKEN_TESTS = """
test("an unstubbed call fails the test", function(t)
  t.db.exec("CREATE TABLE quotes (id INTEGER PRIMARY KEY, email TEXT, signed INTEGER DEFAULT 0)")
  t.env { REPORT_URL = "https://reports.example/in" }
  t.cron("nightly")
end)

test("a wrong expectation names its line", function(t)
  t.eq(1 + 1, 3, "arithmetic")
end)
"""


def flows_dir(tests, files=None):
    """A folder whose flows/ holds files (by default nightly's flows, with
    tests as nightly.test.lua)."""
    d = temp_dir()
    os.makedirs(f"{d}/flows")
    files = files or {"nightly.lua": NIGHTLY, "follow-up.lua": FOLLOW_UP, "nightly.test.lua": tests}
    for name, src in files.items():
        with open(f"{d}/flows/{name}", "w") as f:
            f.write(src)
    return d


@test
def flow_tests_set_the_clock_fast_forward_and_stub_http():
    d = flows_dir(TESTS)
    code, out, err = run_cli("test", "--flows", "flows", cwd=d, timeout=60)
    eq(code, 0, f"rill test exit code\n{out}\n{err}")
    assert "4 passed, 0 failed" in out, out
    assert "ok   flows/nightly.test.lua: a quote not signed gets its reminder" in out, out
    # one flow by name runs that flow's test file only
    code, out, _ = run_cli("test", "nightly", "--flows", "flows", cwd=d, timeout=60)
    eq(code, 0, "rill test nightly")
    # by a path: the folder (as a shell completes it), a flow's file: the
    # folder's path was read as a flow's name ("cannot open
    # flows/flows/.test.lua"), a flow file's path as flows/flows/nightly.test.lua
    for args in (["flows/"], ["flows"], ["flows/nightly.lua"], ["flows/nightly.test.lua"]):
        code, out, err = run_cli("test", *args, "--flows", "flows", cwd=d, timeout=60)
        eq(code, 0, f"rill test {args[0]}\n{out}\n{err}")
        assert "4 passed, 0 failed" in out, (args, out)


def read_tree(root):
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(dirpath, name)) as f:
                out[os.path.relpath(os.path.join(dirpath, name), root)] = f.read()
    return out


@test
def rill_test_writes_the_sequence_diagram_of_every_run_its_tests_store():
    d = flows_dir(TESTS)
    code, out, err = run_cli("test", "--flows", "flows", "--diagrams", "diagrams", cwd=d, timeout=60)
    eq(code, 0, f"rill test --diagrams exit code\n{out}\n{err}")
    first = read_tree(f"{d}/diagrams")
    # the follow-up tests fire the nightly report's ticks too (the test file's own flow) as days pass
    eq(sorted(first), ["nightly/02-01-nightly.mmd", "nightly/03-01-follow-up.mmd", "nightly/03-02-nightly.mmd",
                       "nightly/03-03-nightly.mmd", "nightly/03-04-nightly.mmd", "nightly/04-01-follow-up.mmd",
                       "nightly/04-02-nightly.mmd", "nightly/04-03-nightly.mmd", "nightly/04-04-nightly.mmd"],
       "one file per stored run, named by test, run and flow")
    reminder = first["nightly/03-01-follow-up.mmd"].splitlines()
    eq(reminder[0], "%% flows/nightly.test.lua: a quote not signed gets its reminder three days later, "
       "at once in the test", "the test named first")
    eq(reminder[1], "sequenceDiagram", "then the diagram")
    for want in ["  T->>F: webhook POST /hooks/quote-sent", "  Note over F: sleeps 3d (three days)",
                 "  F->>F: remind", "  F->>S1: POST /send", "  S1-->>F: 202", "  Note over F: succeeded"]:
        assert want in reminder, f"{want!r} not in {reminder}"
    assert "  T->>F: cron 30 2 * * * Europe/Paris" in first["nightly/02-01-nightly.mmd"], first
    # the same tests write the same text: no ids, no times that vary
    code, out, err = run_cli("test", "--flows", "flows", "--diagrams", "again", cwd=d, timeout=60)
    eq(code, 0, f"second run\n{out}\n{err}")
    eq(read_tree(f"{d}/again"), first, "the diagrams of a second run")


@test
def failing_flow_tests_fail_with_the_reason_and_the_line():
    d = flows_dir(BROKEN_TESTS)
    code, out, err = run_cli("test", "--flows", "flows", cwd=d, timeout=60)
    eq(code, 1, f"rill test exit code\n{out}")
    assert "0 passed, 2 failed" in out, out
    assert "outbound calls nobody stubbed: POST https://reports.example/in" in out, out
    assert "flows/nightly.test.lua:9: arithmetic: expected 3, got 2" in out, out


@test
def a_run_sleeping_two_days_wakes_after_a_restart_two_days_later():
    flow = """
return {
  triggers = { webhook { path = "/hooks/nap", mode = "async" } },
  run = function()
    local before = step("before", function() return time.now() end)
    sleep_for("two days", "2d")
    return step("after", function() return math.floor((time.now() - before) / 3600) end)
  end,
}"""
    d = temp_dir()
    with Rill({"nap.lua": flow}, dir=d) as r:
        rid = r.request("POST", "/hooks/nap", {}).json()["run_id"]
        wait_until(lambda: r.runs("show", rid)["state"] == "sleeping", 10, "sleeping")
    with Rill({"nap.lua": flow}, dir=d, env={"RILL_CLOCK_OFFSET": "1d"}) as r:
        r.wait_log(msg_has="clock runs ahead")
        import time
        time.sleep(1.5)  # a poll or two: nothing is due yet
        eq(r.runs("show", rid)["state"], "sleeping", "one day later")
    with Rill({"nap.lua": flow}, dir=d, env={"RILL_CLOCK_OFFSET": "2d"}) as r:
        wait_until(lambda: r.runs("show", rid)["state"] == "succeeded", 10, "woken two days later")
        eq(r.runs("show", rid)["result"], "48", "hours slept, by rill's clock")


BACKOFF_FLOWS = {
    "flaky.lua": """
-- a step retried with backoff (1 s, then 2 s), and a plain sleep
return {
  triggers = { webhook { path = "/hooks/flaky" } },
  run = function(ctx)
    local status = step("call", function()
      local r = http.get("https://api.example/thing")
      if r.status >= 500 then error("status " .. r.status) end
      return r.status
    end, { retries = 3, backoff = 1 })
    local before = time.now()
    sleep(90)
    return { status = status, slept = time.now() - before }
  end,
}""",
    "again.lua": """
-- a stored run that fails once: retried after the run backoff
return {
  triggers = { webhook { path = "/hooks/again", mode = "async" } },
  retries = { attempts = 3, backoff = "10s" },
  run = function(ctx)
    local r = http.get("https://api.example/again")
    if r.status >= 500 then error("status " .. r.status) end
    return "done at attempt " .. ctx.attempt
  end,
}""",
    "netretry.lua": """
-- http's own retries after a network error (0.25 s, then 0.5 s)
return {
  triggers = { manual() },
  run = function(ctx) return http.get("https://api.example/net", { retries = 2 }).status end,
}""",
    "flaky.test.lua": """
test("a step's retry backoff and a sleep move the test clock, not the wall clock", function(t)
  local at = {}
  t.stub("GET", "https://api.example/thing", function()
    at[#at + 1] = t.now()
    return { status = #at < 3 and 500 or 200 }
  end)
  local start = t.now()
  local resp = t.webhook("POST", "/hooks/flaky", { json = {} })
  t.eq(resp.status, 200, "answered")
  t.eq(resp.json, { status = 200, slept = 90 }, "the sleep took 90 s of the test's clock")
  t.eq({ at[1] - start, at[2] - at[1], at[3] - at[2] }, { 0, 1, 2 }, "the backoff: 1 s, then 2 s")
  t.eq(t.now() - start, 93, "the clock moved by the backoff and the sleep")
end)

test("http's retry after a network error waits on the test clock", function(t)
  local at = {}
  t.stub("GET", "https://api.example/net", function()
    at[#at + 1] = t.now()
    if #at < 3 then return { error = "connection refused" } end
    return { status = 204 }
  end)
  local start = t.now()
  t.eq(t.run("netretry").result, 204, "the third try answered")
  t.eq({ at[2] - at[1], at[3] - at[2] }, { 0.25, 0.5 }, "the waits between tries")
  t.eq(t.now() - start, 0.75, "the clock moved by them")
end)

test("a stored run's retry waits on the test clock", function(t)
  local n = 0
  t.stub("GET", "https://api.example/again", function()
    n = n + 1
    return { status = n == 1 and 503 or 200 }
  end)
  t.webhook("POST", "/hooks/again", { json = {} })
  t.eq(t.runs("again")[1].state, "retrying", "the first attempt failed")
  t.advance("1m")
  t.eq(t.runs("again")[1].state, "succeeded", "retried once the backoff passed on the test clock")
end)
""",
}


@test
def the_test_clock_covers_step_backoff_sleeps_and_run_retries():
    d = flows_dir(None, BACKOFF_FLOWS)
    code, out, err = run_cli("test", "--flows", "flows", cwd=d, timeout=120)
    eq(code, 0, f"rill test exit code\n{out}\n{err}")
    assert "3 passed, 0 failed" in out, out


TYPO_FLOW = """
return {
  triggers = { webhook { path = "/hooks/signed" } },
  run = function(ctx)
    local quote = db.query("SELECT id, amount, note FROM quotes WHERE id = $1", ctx.payload.id)[1]
    if quote.amout > 10000 then return "big" end
    return "small"
  end,
}"""

TYPO_TESTS = """
test("a big quote", function(t)
  t.db.exec("CREATE TABLE quotes (id INTEGER PRIMARY KEY, amount INTEGER, note TEXT)")
  t.db.exec("INSERT INTO quotes (id, amount) VALUES (1, 12000)")
  local resp = t.webhook("POST", "/hooks/signed", { json = { id = 1 } })
  t.eq(resp.status, 200, "answered")
end)

test("a row compared with t.eq", function(t)
  t.db.exec("CREATE TABLE quotes (id INTEGER PRIMARY KEY, amount INTEGER, note TEXT)")
  t.db.exec("INSERT INTO quotes (id, amount) VALUES (1, 12000)")
  t.eq(t.db.query("SELECT id, amount FROM quotes")[1], { id = 1, amount = 12000 }, "the same row")
  t.eq(t.db.query("SELECT id FROM quotes")[1], { id = 1, amount = 12000 }, "a column short")
end)
"""


@test
def a_misspelt_column_fails_the_flow_test_naming_it():
    d = flows_dir(None, {"signed.lua": TYPO_FLOW, "signed.test.lua": TYPO_TESTS})
    code, out, err = run_cli("test", "--flows", "flows", cwd=d, timeout=60)
    eq(code, 1, f"rill test exit code\n{out}\n{err}")
    assert "flows/signed.lua:6: quotes row has no column amout (columns: id, amount, note)" in out + err, out + err
    # t.eq compares a row as a table: a column short is a difference, not an error
    line = [x for x in out.splitlines() if "a column short" in x and "signed.test.lua:13" in x]
    assert line and line[0].endswith(', got {"id":1}') and '"amount":12000' in line[0], out


NOTIFY = """
return {
  triggers = { event { name = "payment.stored" } },
  run = function(ctx)
    local res = htp.post("https://chat.test/post", { json = { text = "paid " .. ctx.payload.id } })
    return { status = res.status }
  end,
}"""

NOTIFY_TESTS = """
test("a run that fails shows why under the failed test", function(t)
  t.stub("POST", "https://chat.test/", { json = { ok = true } })
  local runs = t.emit("payment.stored", { id = "pi_1" })
  t.eq(runs[1].result, { status = 200 }, "posted")
end)
test("a misspelt t function names the closest", function(t)
  t.stubb("POST", "https://chat.test/", { json = { ok = true } })
end)
test("json and crypto are there, as in flows", function(t)
  t.eq(json.decode(json.encode({ a = 1 })), { a = 1 })
  t.eq(#crypto.hex(crypto.hmac_sha256("k", "v")), 64)
end)
"""


@test
def a_failing_test_says_why_its_runs_failed_and_names_a_misspelt_t_function():
    d = flows_dir(None, {"notify.lua": NOTIFY, "notify.test.lua": NOTIFY_TESTS})
    code, out, err = run_cli("test", "--flows", "flows", cwd=d, timeout=60)
    eq(code, 1, f"rill test exit code\n{out}\n{err}")
    assert "1 passed, 2 failed" in out, out + err
    block = out.split("FAIL flows/notify.test.lua: a run that fails shows why")[1].split("\nok   ")[0]
    assert "flows/notify.test.lua:5: posted: expected" in block, out
    assert "run of notify failed: flows/notify.lua:5: attempt to index global 'htp' (a nil value)" in block, out
    assert "flows/notify.test.lua:8: t has no function 'stubb' (did you mean 'stub'?)" in out, out
    assert "ok   flows/notify.test.lua: json and crypto are there, as in flows" in out, out


@test
def the_company_flows_tests_leave_no_timer_behind_them():
    # the queue's first prune, a second after each test's start, fired after
    # that test's store was closed ('store.lua: attempt to index upvalue conn')
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code, out, err = run_cli("test", "--flows", "flows", cwd=repo, timeout=300)
    eq(code, 0, f"rill test exit code\n{out[-2000:]}\n{err[-2000:]}")
    stray = [l for l in err.splitlines() if "error in a timer callback" in l]
    eq(stray, [], "timer callbacks that failed between tests")


if __name__ == "__main__":
    main()
