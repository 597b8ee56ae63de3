"""rill's log on stderr: JSON lines by default off a terminal, text when
asked. Every line written during a run carries the run's id and flow (lines
of sync and async runs, of the http module, of a failing run and of its
retry), and lines outside runs carry no run id."""
import http.server
import json
import os

from lib.harness import Rill, eq, main, run_cli, serve_http, temp_dir, test, wait_until

FLOWS = {
    "hello.lua": """
return {
  triggers = { webhook { method = "POST", path = "/hooks/hello" } },
  run = function(ctx)
    log.info("hello from the run", { who = ctx.payload.who })
    log.warn("a field named run does not replace the run's id", { run = "not-this-one", flow = "nor-this" })
    return { run_id = ctx.run_id }
  end,
}""",
    "fetch.lua": """
return {
  triggers = { webhook { method = "POST", path = "/hooks/fetch", mode = "async" } },
  retries = { attempts = 2, backoff = "10ms" },
  run = function(ctx)
    local res = http.get(env.TARGET .. "/thing")
    log.info("fetched", { status = res.status })
    if ctx.attempt == 1 then error("first attempt fails") end
    return { ok = true }
  end,
}""",
}


class Target(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


@test
def every_line_of_a_run_carries_its_run_id_and_flow_and_no_other_line_does():
    target = serve_http(Target)
    env = {"TARGET": f"http://127.0.0.1:{target.server_address[1]}", "RILL_POLL_INTERVAL": "0.1s"}
    with Rill(FLOWS, env=env) as r:
        res = r.request("POST", "/hooks/hello", {"who": "Ada"})
        eq(res.status, 200, "hello")
        hello_id = res.json()["run_id"]
        res = r.request("POST", "/hooks/fetch", {})
        eq(res.status, 202, "fetch accepted")
        fetch_id = res.json()["run_id"]
        wait_until(lambda: r.runs("show", fetch_id)["state"] == "succeeded", 15, "the fetch run to succeed")

        for l in r.log_lines(msg_has="hello from the run") + r.log_lines(msg_has="a field named run"):
            eq((l.get("run"), l.get("flow")), (hello_id, "hello"), f"run and flow of {l}")
        eq(r.log_lines(msg="hello from the run")[0].get("who"), "Ada", "the line's own field")

        # the fetch run's lines: its http line, its own lines on both attempts,
        # the failure and the retry rill wrote about it
        fetch_lines = [l for l in r.log_lines() if l.get("run") == fetch_id]
        msgs = [l.get("msg") for l in fetch_lines]
        eq(msgs.count("http"), 2, f"an http line per attempt in {msgs}")
        eq(msgs.count("fetched"), 2, f"the flow's line per attempt in {msgs}")
        assert any(m.startswith("run failed: ") for m in msgs), msgs
        assert "run will be retried" in msgs, msgs
        assert all(l.get("flow") == "fetch" for l in fetch_lines), fetch_lines

        # no line of a run is without its id: every line naming a run's
        # messages carries one, and a line with a run id names a flow
        for l in r.log_lines():
            if l.get("msg") in ("hello from the run", "fetched", "http", "run will be retried"):
                assert l.get("run") in (hello_id, fetch_id), f"a run's line without its run id: {l}"
            if "run" in l:
                assert l.get("flow") in ("hello", "fetch"), f"a run id without its flow: {l}"
                assert l["run"] in (hello_id, fetch_id), f"an unknown run id: {l}"

        # lines outside runs: loading, serving, reloading
        outside = (r.log_lines(msg="store open") + r.log_lines(msg="flows reloaded") + r.log_lines(msg="flow loaded")
                   + r.log_lines(msg_has="serving"))
        assert len(outside) >= 4, outside
        for l in outside:
            assert "run" not in l, f"a line outside runs with a run id: {l}"
        for l in r.log_lines():
            assert "raw" not in l, f"a line that is not JSON: {l}"
            assert {"ts", "level", "msg"} <= set(l), f"a line without ts, level or msg: {l}"
    target.shutdown()


@test
def text_lines_show_the_flow_and_the_end_of_the_run_id():
    with Rill(FLOWS, env={"RILL_LOG_FORMAT": "text", "TARGET": "http://127.0.0.1:9"}) as r:
        res = r.request("POST", "/hooks/hello", {"who": "Ada"})
        run_id = res.json()["run_id"]
        line = wait_until(lambda: [l["raw"] for l in r.log_lines() if "hello from the run" in l.get("raw", "")],
                          5, "the run's text line")[0]
        assert f"[hello {run_id[-12:]}] hello from the run" in line, line
        assert "who=Ada" in line, line
        # the port opens before the "serving" line is written: wait for it
        serving = wait_until(lambda: [l["raw"] for l in r.log_lines() if " serving" in l.get("raw", "")],
                             10, "the serving line")
        assert "[" not in serving[0].split("serving")[0], serving


@test
def an_error_reported_by_c_is_a_line_of_the_json_log():
    script = os.path.join(temp_dir(), "c_error.lua")
    with open(script, "w") as f:
        f.write('require("rill.log").configure("info", "json")\n'
                'require("rill.c.timer").after(0, function() error("boom from a timer") end)\n')
    code, _, err = run_cli("lua", script)
    eq(code, 0, "exit code")
    lines = [json.loads(l) for l in err.splitlines()]  # not JSON: raises
    eq([(l["level"], "boom from a timer" in l["msg"], bool(l.get("ts"))) for l in lines],
       [("error", True, True)], "the C error's line")


if __name__ == "__main__":
    main()
