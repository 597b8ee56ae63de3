"""Durable steps and sleeps in stored runs: a retried run does not repeat
completed steps (a stand-in service counts the calls and sees one
Idempotency-Key per step), a flow whose steps changed between attempts is
dead with both names, a sleeping run is parked in the store and woken when
due, also across a restart."""
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from lib.harness import Rill, eq, free_port, main, temp_dir, test, wait_until


class Counter:
    """A stand-in service: POST /NAME counts calls per name and per
    Idempotency-Key; /fail-N/NAME fails the first N calls of NAME."""

    def __init__(self):
        self.calls, self.keys = {}, {}
        self.lock = threading.Lock()
        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                parts = self.path.strip("/").split("/")
                name = parts[-1]
                with outer.lock:
                    n = outer.calls[name] = outer.calls.get(name, 0) + 1
                    key = self.headers.get("Idempotency-Key")
                    outer.keys.setdefault(name, []).append(key)
                fail = int(parts[0][5:]) if parts[0].startswith("fail-") else 0
                status = 500 if n <= fail else 200
                body = json.dumps({"call": n}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.port = free_port()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), H)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


FAST = {"RILL_POLL_INTERVAL": "0.1s"}

# store() -> settings naming a fresh store for a test: none (SQLite in the
# test's directory) here; test_steps_pg.py gives each test a Postgres database.
store = dict

THREE = """
return {
  retries = { attempts = 5, backoff = "50ms", max_backoff = "100ms" },
  triggers = { webhook { path = "/three", mode = "async" } },
  run = function(ctx)
    local base = env.COUNTER
    local function call(path)
      local res = http.post(base .. path, { json = {} })
      if not res.ok then error(path .. " answered " .. res.status) end
      return res:json().call
    end
    local a = step("reserve", function() return call("/s1") end)
    local b = step("invoice", function() return call("/s2") end)
    local c = step("notify", function() return call("/fail-2/s3") end)
    return { a = a, b = b, c = c, attempt = ctx.attempt }
  end,
}"""


def finished(r, run_id, timeout=15):
    def done():
        run = r.runs("show", run_id)
        return run if run["state"] in ("succeeded", "failed", "dead") else None
    return wait_until(done, timeout, f"run {run_id} to finish")


def run_of(r, path):
    """POSTs {} to an async webhook; -> its run, once it ended."""
    return finished(r, r.request("POST", path, {}).json()["run_id"])


def error_message(run):
    return json.loads(run["error"])["message"]


@test
def a_retried_run_does_not_repeat_its_completed_steps():
    c = Counter()
    with Rill({"three.lua": THREE}, env={**FAST, **store(), "COUNTER": c.url}) as r:
        run = run_of(r, "/three")
        eq((run["state"], run["attempt"]), ("succeeded", 3), "the run")
        eq(json.loads(run["result"]), {"a": 1, "b": 1, "c": 3, "attempt": 3}, "result: recorded steps replayed")
        eq(c.calls, {"s1": 1, "s2": 1, "s3": 3}, "calls to the service")
        eq(len(set(c.keys["s3"])), 1, "one Idempotency-Key for every attempt of a step")
        assert c.keys["s1"][0] != c.keys["s3"][0], c.keys
        eq([s["name"] for s in run["steps"]], ["reserve", "invoice", "notify"], "recorded steps")
        eq([s["attempts"] for s in run["steps"]], [1, 1, 1], "attempts per step")


CHANGED = """
return {
  retries = { attempts = 3, backoff = "50ms" },
  triggers = { webhook { path = "/changed", mode = "async" } },
  run = function(ctx)
    step(ctx.attempt == 1 and "first" or "renamed", function() return 1 end)
    if ctx.attempt == 1 then error("fails once") end
    return "done"
  end,
}"""


@test
def steps_changed_between_attempts_are_reported_and_the_run_is_dead():
    with Rill({"changed.lua": CHANGED}, env={**FAST, **store()}) as r:
        run = run_of(r, "/changed")
        eq(run["state"], "dead", "state")
        err = error_message(run)
        assert 'step 1 was "first", is now "renamed"' in err and "changed.lua:" in err, err


NOT_RETRYABLE = """
return {
  retries = { attempts = 5, backoff = "10ms" },
  triggers = { webhook { path = "/charge", mode = "async" } },
  run = function(ctx)
    step("charge", function() return http.post(env.COUNTER .. "/fail-9/charge").status end,
      { retries = 1, backoff = 0.01, retry = false })
    return "charged"
  end,
}"""


@test
def a_step_marked_retry_false_makes_the_run_dead_after_its_own_tries():
    c = Counter()
    flow = NOT_RETRYABLE.replace(".status end", ".status >= 500 and error('declined') end")
    with Rill({"charge.lua": flow}, env={**FAST, **store(), "COUNTER": c.url}) as r:
        run = run_of(r, "/charge")
        eq(run["state"], "dead", "state")
        eq(run["attempt"], 1, "the run was not retried")
        eq(c.calls.get("charge"), 2, "the step's own tries (retries = 1)")
        err = error_message(run)
        assert 'step "charge" failed and is marked retry = false' in err and "declined" in err, err


@test
def a_step_marked_retry_false_stopped_by_the_run_deadline_makes_the_run_dead():
    c = Counter()
    # the charge's request is sent, then the step is still running at the deadline
    flow = NOT_RETRYABLE.replace("return {\n", 'return {\n  deadline = "0.5s",\n', 1).replace(
        ".status end", ".status, sleep(5) end")
    with Rill({"charge.lua": flow}, env={**FAST, **store(), "COUNTER": c.url}) as r:
        run = run_of(r, "/charge")
        eq((run["state"], run["attempt"]), ("dead", 1), "dead, not retried")
        eq(c.calls.get("charge"), 1, "the charge sent once")
        err = error_message(run)
        assert 'step "charge"' in err and "retry = false" in err and "deadline exceeded" in err, err


NESTED = """
return {
  retries = { attempts = 3, backoff = "50ms", max_backoff = "100ms" },
  triggers = { webhook { path = "/nested", mode = "async" } },
  run = function(ctx)
    local function call(path)
      local res = http.post(env.COUNTER .. path, { json = {} })
      if not res.ok then error(path .. " answered " .. res.status) end
      return res:json().call
    end
    local o = step("outer", function()
      local i = step("inner", function() return call("/inner") end)
      return { i = i, o = call("/outer") }
    end)
    local a = step("after", function() return call("/fail-1/after") end)
    return { o = o, a = a, attempt = ctx.attempt }
  end,
}"""


@test
def a_step_inside_a_step_is_part_of_it_and_a_retry_replays_both():
    # the inner step used to be recorded under a number of its own, after the
    # outer's: the retry replayed the outer, then found "after" where "inner"
    # was recorded and made the run dead ("steps changed"); and the outer's
    # requests after the inner step went without an Idempotency-Key
    c = Counter()
    with Rill({"nested.lua": NESTED}, env={**FAST, **store(), "COUNTER": c.url}) as r:
        run = run_of(r, "/nested")
        eq((run["state"], run["attempt"]), ("succeeded", 2), f"the run ({run.get('error')})")
        eq(json.loads(run["result"]), {"o": {"i": 1, "o": 1}, "a": 2, "attempt": 2}, "result")
        eq(c.calls, {"inner": 1, "outer": 1, "after": 2}, "calls to the service")
        eq(c.keys["outer"], c.keys["inner"], "the outer step's key, also after the inner step")
        assert c.keys["outer"][0], c.keys
        eq([s["name"] for s in run["steps"]], ["outer", "after"], "recorded steps")


NOT_UTF8 = """
return {
  retries = { attempts = 3, backoff = "50ms", max_backoff = "100ms" },
  triggers = { webhook { path = "/bytes", mode = "async" } },
  run = function(ctx)
    return step("download", function()
      http.post(env.COUNTER .. "/download", { json = {} })
      return "%PDF\\255\\254"
    end)
  end,
}"""


@test
def a_step_whose_result_is_not_utf8_is_dead_and_its_work_not_repeated():
    # Postgres refused the step's row: the step, done, was not recorded and
    # each retry downloaded again; SQLite stored bytes that no JSON reader
    # (runs show --json) could read
    c = Counter()
    with Rill({"bytes.lua": NOT_UTF8}, env={**FAST, **store(), "COUNTER": c.url}) as r:
        run = run_of(r, "/bytes")
        eq((run["state"], run["attempt"]), ("dead", 1), "dead, not retried")
        eq(c.calls, {"download": 1}, "the step's work done once")
        err = error_message(run)
        assert "step download returned a value that is not JSON" in err and "not UTF-8" in err, err


TRIGGER_BYTES = """
return {
  retries = { attempts = 3, backoff = "50ms", max_backoff = "100ms" },
  triggers = { webhook { path = "/caller", mode = "async" } },
  run = function(ctx)
    http.post(env.COUNTER .. "/before", { json = {} })
    return flows.trigger("child", { pdf = "%PDF-\\255\\254" })
  end,
}"""

CHILD = """
return {
  triggers = { from_flow() },
  run = function(ctx) return ctx.payload end,
}"""


@test
def a_flow_triggered_with_a_payload_that_is_not_utf8_makes_the_caller_dead():
    # the child's payload is stored as JSON text: Postgres refused the row,
    # and each retry of the caller tried again
    c = Counter()
    with Rill({"caller.lua": TRIGGER_BYTES, "child.lua": CHILD}, env={**FAST, **store(), "COUNTER": c.url}) as r:
        run = run_of(r, "/caller")
        eq((run["state"], run["attempt"]), ("dead", 1), "dead, not retried")
        err = error_message(run)
        assert "flows.trigger: the payload is not JSON" in err and "not UTF-8" in err, err
        eq(c.calls, {"before": 1}, "the caller ran once")
        eq([x["flow"] for x in r.runs("list")], ["caller"], "runs stored")


SLEEP_IN_STEP = """
return {
  retries = { attempts = 3, backoff = "50ms", max_backoff = "100ms" },
  triggers = { webhook { path = "/nap", mode = "async" } },
  run = function(ctx)
    step("outer", function()
      http.post(env.COUNTER .. "/before", { json = {} })
      sleep_for("nap", 0.2)
      return 1
    end)
    return "woke"
  end,
}"""


@test
def a_sleep_inside_a_step_is_refused():
    # parked inside the step, the run ran the step again from its start at
    # the wake: its work before the sleep was done twice
    c = Counter()
    with Rill({"nap.lua": SLEEP_IN_STEP}, env={**FAST, **store(), "COUNTER": c.url}) as r:
        run = run_of(r, "/nap")
        eq(run["state"], "dead", "state")
        eq(c.calls, {"before": 1}, "the step's work done once")
        err = error_message(run)
        assert 'sleep_for and sleep_until cannot be inside a step (step "outer")' in err and "nap.lua:8:" in err, err


@test
def a_step_marked_retry_false_inside_a_step_stopped_by_the_deadline_makes_the_run_dead():
    c = Counter()
    # the same charge, called by a helper inside an enclosing step
    flow = NOT_RETRYABLE.replace("return {\n", 'return {\n  deadline = "0.5s",\n', 1).replace(
        ".status end", ".status, sleep(5) end").replace('step("charge"', 'step("order", function() step("charge"').replace(
        "retry = false })", "retry = false }) end)")
    with Rill({"charge.lua": flow}, env={**FAST, **store(), "COUNTER": c.url}) as r:
        run = run_of(r, "/charge")
        eq((run["state"], run["attempt"]), ("dead", 1), "dead, not retried")
        eq(c.calls.get("charge"), 1, "the charge sent once")
        err = error_message(run)
        assert "retry = false" in err and "deadline exceeded" in err, err


SLEEPER = """
return {
  triggers = { webhook { path = "/sleep", mode = "async" } },
  run = function(ctx)
    local before = step("before", function() return time.now() end)
    sleep_for("wait", ctx.payload.seconds)
    local after = step("after", function() return time.now() end)
    return { slept = after - before, attempt = ctx.attempt }
  end,
}"""


@test
def a_sleeping_run_is_parked_in_the_store_and_woken_when_due():
    with Rill({"sleeper.lua": SLEEPER}, env={**FAST, **store()}) as r:
        run_id = r.request("POST", "/sleep", {"seconds": 1.5}).json()["run_id"]
        wait_until(lambda: r.runs("show", run_id)["state"] == "sleeping", 10, "the run to be parked")
        run = finished(r, run_id)
        res = json.loads(run["result"])
        eq((run["state"], res["attempt"]), ("succeeded", 1), "woken, the sleep cost no attempt")
        assert 1.4 <= res["slept"] < 5, res
        sleeps = [l for l in r.log_lines(msg="run sleeps") if l.get("run") == run_id]
        eq(len(sleeps), 1, f"the sleep is logged once, with its step: {sleeps}")
        eq(sleeps[0].get("step"), "wait", "the logged sleep names its step")


EVENT = """
return {
  triggers = { webhook { path = "/event", mode = "async", idempotency = "header:X-Id" } },
  run = function(ctx)
    local one = step("one", function() return http.post(env.COUNTER .. "/one", { json = {} }).status end)
    sleep(0.1)
    local two = step("two", function() return http.post(env.COUNTER .. "/two", { json = {} }).status end)
    sleep(0.1)
    return { one, two }
  end,
}"""


@test
def sigkill_in_the_middle_of_runs_with_steps_repeats_no_completed_step():
    c = Counter()
    d = temp_dir()
    env = {**FAST, **store(), "COUNTER": c.url, "RILL_LEASE": "1s", "RILL_CONCURRENCY": "50"}
    accepted = {}
    lock = threading.Lock()

    def sender(r, ns):
        for n in ns:
            try:
                res = r.request("POST", "/event", {"n": n}, {"X-Id": f"e{n}"})
            except OSError:
                return
            if res.status == 202:
                with lock:
                    accepted[n] = res.json()["run_id"]

    with Rill({"event.lua": EVENT}, env=env, dir=d) as r:
        threads = [threading.Thread(target=sender, args=(r, range(k, 300, 3))) for k in range(3)]
        for t in threads:
            t.start()
        wait_until(lambda: len(accepted) >= 150, 30, "150 accepted events")
        killed_ms = time.time() * 1000
        r.kill()
        for t in threads:
            t.join()
    with Rill({"event.lua": EVENT}, env=env, dir=d) as r:
        def settled():
            runs = r.runs("list", "--flow", "event", "--limit", "1000")
            return runs if all(x["state"] in ("succeeded", "dead") for x in runs) else None
        runs = {x["id"]: x for x in wait_until(settled, 60, "every run to settle")}
        eq(sorted(n for n, i in accepted.items() if runs.get(i, {}).get("state") != "succeeded"), [],
           "accepted events without a successful run")
        calls = {}
        for name in ("one", "two"):
            for key in c.keys[name]:
                calls[key] = calls.get(key, 0) + 1
        for run_id, run in runs.items():
            counts = [calls.get(f"{run_id}-{seq}", 0) for seq in (1, 2)]
            assert min(counts) >= 1, (run_id, counts)
            # only the step in flight at the kill may have run twice: a step
            # run twice must have been recorded after the kill
            extra = sum(n - 1 for n in counts)
            assert extra <= (1 if run["attempt"] > 1 else 0), (run_id, run["attempt"], counts)
            if extra:
                steps = r.runs("show", run_id)["steps"]
                for seq, n in zip((1, 2), counts):
                    if n > 1:
                        assert steps[seq - 1]["finished"] > killed_ms - 5, (run_id, seq, "completed, then ran again")
        assert any(run["attempt"] > 1 for run in runs.values()), "some runs were recovered"


@test
def a_sleep_lasts_across_a_restart():
    d = temp_dir()
    env = {**FAST, **store()}
    with Rill({"sleeper.lua": SLEEPER}, env=env, dir=d) as r:
        run_id = r.request("POST", "/sleep", {"seconds": 2}).json()["run_id"]
        wait_until(lambda: r.runs("show", run_id)["state"] == "sleeping", 10, "the run to be parked")
    time.sleep(2.5)
    with Rill({"sleeper.lua": SLEEPER}, env=env, dir=d) as r:
        run = finished(r, run_id)
        eq(run["state"], "succeeded", "woken by the next start")
        eq([s["name"] for s in run["steps"]], ["before", "wait", "after"], "steps")


if __name__ == "__main__":
    main()
