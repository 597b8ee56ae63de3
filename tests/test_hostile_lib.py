"""Hostile flows against the string and table library (tests/hostile/lib_*.lua,
issue 14): backtracking patterns, callbacks that loop inside sort and gsub,
builders that amplify a string, writes into shared tables. Each file says
what must happen on an `-- expect:` line; each is run under `rill run` and
under `rill serve` while another webhook is being called. A run ends with a
readable error (bounded by the subprocess timeout and the request timeout,
never by a measured duration), and the other webhook keeps answering."""
import glob
import json
import os
import re
import threading

from lib.harness import Rill, eq, main, run_cli, serve_http, temp_dir, test

HERE = os.path.dirname(os.path.abspath(__file__))
HOSTILE = sorted(glob.glob(os.path.join(HERE, "hostile", "lib_*.lua")))
DEADLINE = 2  # every hostile flow says deadline = "2s"
GRACE = 8     # generous: the machine is shared; a run that holds the loop never ends at all

HELPERS = {
    "ping.lua": """
return {
  triggers = { webhook { method = "GET", path = "/hooks/ping" } },
  run = function() return { pong = true } end,
}""",
    "reader.lua": """
-- What another flow sees after the hostile ones ran.
return {
  triggers = { webhook { method = "GET", path = "/hooks/reader" } },
  run = function(ctx)
    return { channel = env.SLACK_CHANNEL, query_empty = next(ctx.request.query) == nil,
             path = ctx.trigger.path, slot = rawget(env, 1) == nil }
  end,
}""",
}


def expectation(path):
    """(state, text the error must contain) from the file's `-- expect:` line."""
    with open(path) as f:
        m = re.search(r"^-- expect: (succeeded|failed)(?:: (.+))?$", f.read(), re.M)
    assert m, path + " has no -- expect: line"
    return m.group(1), m.group(2)


def sources():
    out = {}
    for path in HOSTILE:
        with open(path) as f:
            out[os.path.basename(path)] = f.read()
    return out


@test
def the_suite_is_there():
    assert len(HOSTILE) >= 12, HOSTILE
    for path in HOSTILE:
        expectation(path)


@test
def each_hostile_flow_ends_as_it_says_under_rill_run():
    for path in HOSTILE:
        name = os.path.basename(path)[:-4]
        state, text = expectation(path)
        d = temp_dir()
        with open(os.path.join(d, name + ".lua"), "w") as f, open(path) as src:
            f.write(src.read())
        code, out, err = run_cli("run", name, "--flows", d, timeout=DEADLINE + GRACE)
        if state == "succeeded":
            eq(code, 0, name + " exit code: " + err[-500:])
        else:
            eq(code, 1, name + " exit code: " + err[-500:])
            message = json.loads(out)["error"]
            assert text in message, f"{name}: {message!r} does not say {text!r}"


def _while_pinging(r, path):
    """Calls path while another thread pings; returns the response, the
    pings' statuses and whether a ping was answered before path was."""
    done = threading.Event()
    result, pings = {}, []

    def hostile():
        result["res"] = r.request("POST", path, {}, timeout=DEADLINE + GRACE)
        done.set()

    t = threading.Thread(target=hostile)
    t.start()
    before = False
    while True:  # at least one ping, however fast the hostile run ends
        status = r.request("GET", "/hooks/ping", timeout=DEADLINE + GRACE).status
        pings.append(status)
        if done.is_set():
            break
        before = True
    t.join()
    return result["res"], pings, before


@test
def each_hostile_flow_ends_as_it_says_under_serve_while_another_webhook_answers():
    flows = dict(HELPERS)
    flows.update(sources())
    with Rill(flows, env={"SLACK_CHANNEL": "#general"}) as r:
        for path in HOSTILE:
            name = os.path.basename(path)[:-4]
            state, text = expectation(path)
            try:
                res, pings, before = _while_pinging(r, "/hooks/" + name)
            except OSError as e:  # a ping or the hostile request got no answer in time
                raise AssertionError(f"{name}: {e!r}") from e
            eq(set(pings), {200}, name + ": the pings' statuses")
            if state == "succeeded":
                eq(res.status, 200, name + " status: " + res.body)
                continue
            assert res.status in (500, 504), f"{name}: {res.status} {res.body}"
            line = r.wait_log(level="error", run=res.json()["run_id"])
            assert text in line["msg"], f"{name}: {line['msg']!r} does not say {text!r}"
            if text == "deadline exceeded":
                assert before, name + ": no ping was answered while it ran"
        eq(r.request("GET", "/hooks/ping").status, 200, "rill serves after the suite")
        metrics = r.admin("GET", "/metrics").body
        for limit in ("pattern_max_steps", "max_string"):
            m = re.search(r'^rill_limit_refusals\{limit="%s"\} (\d+)' % limit, metrics, re.M)
            assert m and int(m.group(1)) > 0, f"/metrics counts the calls {limit} stopped: {m and m.group(0)}"



CAUGHT = """
return {
  triggers = { webhook { path = "/hooks/caught" } },
  run = function(ctx)
    local s = ("x"):rep(5e6)
    local calls = { rep = function() return s:rep(2) end,
                    encode = function() return json.encode { a = s, b = s } end }
    return { caught = not pcall(calls[ctx.payload.call]), run = ctx.run_id }
  end,
}"""


@test
def a_result_over_max_string_is_logged_in_the_run_even_when_the_flow_catches_it():
    # each builder's refusal says so in the run's log, json.encode's too
    with Rill({"caught.lua": CAUGHT}) as r:
        for call in ("rep", "encode"):
            res = r.request("POST", "/hooks/caught", {"call": call})
            eq((res.status, res.json()["caught"]), (200, True), call + ": " + res.body)
            line = r.wait_log(msg="a string over max_string refused", run=res.json()["run"])
            assert line["max_string"] == 8 * 1024 * 1024 and line["bytes"] > 8 * 1024 * 1024, line

@test
def writes_into_shared_tables_reach_no_other_flow():
    flows = dict(HELPERS)
    flows.update({k: v for k, v in sources().items() if k in ("lib_env_rawset.lua", "lib_query_poison.lua")})
    with Rill(flows, env={"SLACK_CHANNEL": "#general"}) as r:
        r.request("POST", "/hooks/lib_env_rawset", {})
        eq(r.request("POST", "/hooks/lib_query_poison", {}).status, 200, "poison run")
        seen = r.request("GET", "/hooks/reader").json()
        eq(seen, {"channel": "#general", "query_empty": True, "path": "/hooks/reader", "slot": True},
           "what another flow sees")
        again = r.request("POST", "/hooks/lib_query_poison", {})
        eq(again.json(), {"path": "/hooks/lib_query_poison", "query_empty": True},
           "what a second run of the poisoning flow sees")


@test
def an_http_response_gives_no_way_to_the_metatables_every_response_shares():
    import http.server

    class Target(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    target = serve_http(Target)
    url = f"http://127.0.0.1:{target.server_address[1]}/"
    flows = {
        # Replaces the methods every http response shares, when it can reach them.
        "poison.lua": """
return {
  triggers = { webhook { path = "/hooks/poison" } },
  run = function()
    local res = http.get("%s")
    local mt, hmt = getmetatable(res), getmetatable(res.headers)
    if type(mt) == "table" then mt.json = function() return "poisoned" end end
    if type(hmt) == "table" then hmt.__index = function() return "poisoned" end end
    return { mt = type(mt), hmt = type(hmt) }
  end,
}""" % url,
        "victim.lua": """
return {
  triggers = { webhook { path = "/hooks/victim" } },
  run = function()
    local res = http.get("%s")
    return { json = type(res:json()), ctype = res.headers["Content-Type"] }
  end,
}""" % url,
    }
    with Rill(flows) as r:
        eq(r.request("POST", "/hooks/poison", {}).json(), {"mt": "boolean", "hmt": "boolean"}, "what getmetatable gives")
        eq(r.request("POST", "/hooks/victim", {}).json(), {"json": "table", "ctype": "application/json"},
           "another flow's response")
    target.shutdown()


@test
def top_level_code_that_backtracks_or_loops_in_patterns_fails_rill_check():
    cases = {
        # issue 14: this hung `rill check`
        "backtrack.lua": ('local x = ("a"):rep(2e5):find(".-.-.-.-.-b")\n', "pattern too complex"),
        "many.lua": ('while true do ("a"):rep(1500):find(".-b") end\n', "deadline exceeded"),
    }
    for name, (top, text) in cases.items():
        d = temp_dir()
        with open(os.path.join(d, name), "w") as f:
            f.write(top + "return { triggers = { manual() }, run = function() end }\n")
        code, out, err = run_cli("check", d, timeout=DEADLINE + GRACE)
        eq(code, 1, name + " exit code")
        assert text in out + err, f"{name}: {out + err!r} does not say {text!r}"


if __name__ == "__main__":
    main()
