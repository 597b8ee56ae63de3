"""GET /metrics on the admin listener of a running rill: traffic of every
kind (sync and async webhooks, unmatched routes, outbound HTTP to a local
stand-in, a database, cron ticks, reloads with a broken file, a queue that
waits), then the Prometheus text parsed here and its values checked."""
import http.client
import http.server
import re
import signal

from lib.harness import Rill, eq, main, serve_http, test, wait_until

FLOWS = {
    "ok.lua": """
return {
  triggers = { webhook { method = "POST", path = "/hooks/ok" } },
  run = function(ctx) return { ok = true } end,
}""",
    "boom.lua": """
return {
  triggers = { webhook { method = "POST", path = "/hooks/boom" } },
  run = function(ctx) error("boom") end,
}""",
    "outbound.lua": """
return {
  triggers = { webhook { method = "POST", path = "/hooks/outbound", mode = "async" } },
  run = function(ctx)
    local res = http.get(env.TARGET .. "/status/" .. ctx.payload.status)
    db.query("SELECT 1 AS one")
    return { status = res.status }
  end,
}""",
    "flaky.lua": """
return {
  triggers = { webhook { method = "POST", path = "/hooks/flaky", mode = "async" } },
  retries = { attempts = 3, backoff = "1h" },
  run = function(ctx) error("not yet") end,
}""",
    "tick.lua": """
return {
  triggers = { cron { "* * * * * *" } },
  run = function(ctx) return ctx.payload.scheduled end,
}""",
}

# slow.lua holds its flow's only slot until the stand-in opens its gate.
FLOWS["slow.lua"] = """
return {
  triggers = { webhook { method = "POST", path = "/hooks/slow", mode = "async" } },
  concurrency = 1,
  run = function(ctx)
    while http.get(env.TARGET .. "/gate").status ~= 200 do sleep(0.05) end
  end,
}"""


class Target(http.server.BaseHTTPRequestHandler):
    """A stand-in service: /status/N answers N; /gate 423 until opened."""
    gate_open = False

    def do_GET(self):
        if self.path.startswith("/status/"):
            status = int(self.path.rsplit("/", 1)[1])
        elif self.path == "/gate":
            status = 200 if Target.gate_open else 423
        else:
            status = 404
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')


def unescape(v):
    return re.sub(r'\\(.)', lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), v)


def parse(text):
    """Prometheus text format -> (types {family: kind}, helps, samples
    {(name, frozenset(labels.items())): value}). Raises on a malformed line."""
    types, helps, samples = {}, {}, {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, h = line[7:].partition(" ")
            helps[name] = h
        elif line.startswith("# TYPE "):
            name, kind = line[7:].split(" ")
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped"), line
            types[name] = kind
        elif line.startswith("#") or not line:
            continue
        else:
            m = SAMPLE.match(line)
            assert m, f"malformed sample line: {line!r}"
            name, labels, value = m.groups()
            lab = {}
            if labels:
                pos = 0
                while pos < len(labels):
                    lm = LABEL.match(labels, pos)
                    assert lm, f"malformed labels in {line!r}"
                    lab[lm.group(1)] = unescape(lm.group(2))
                    pos = lm.end()
            family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in types else name
            assert family in types, f"sample before its TYPE line: {line!r}"
            assert family in helps, f"no HELP for {family}"
            samples[(name, frozenset(lab.items()))] = float(value)
    return types, helps, samples


def scrape(port):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        r = conn.getresponse()
        body = r.read().decode()
        eq(r.status, 200, "GET /metrics status")
        ctype = r.getheader("Content-Type")
        assert ctype.startswith("text/plain; version=0.0.4"), ctype
        return parse(body)
    finally:
        conn.close()


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())))


def family(samples, name):
    """{frozenset(labels): value} of one sample name."""
    return {k[1]: v for k, v in samples.items() if k[0] == name}


def rill_with_admin(flows, env=None):
    """A rill polling its store often; the harness gives it an admin port (r.admin_port)."""
    return Rill(flows, env={"RILL_POLL_INTERVAL": "0.1s", **(env or {})})


@test
def metrics_count_webhooks_runs_outbound_http_db_queue_cron_and_reloads():
    target = serve_http(Target)
    tgt = f"127.0.0.1:{target.server_address[1]}"
    with rill_with_admin(FLOWS, {"TARGET": "http://" + tgt}) as r:
        for _ in range(5):
            eq(r.request("POST", "/hooks/ok", {}).status, 200, "ok")
        for _ in range(2):
            eq(r.request("POST", "/hooks/boom", {}).status, 500, "boom")
        eq(r.request("GET", "/nowhere").status, 404, "unmatched")
        for status in (200, 200, 503):
            eq(r.request("POST", "/hooks/outbound", {"status": status}).status, 202, "outbound accepted")
        eq(r.request("POST", "/hooks/flaky", {}).status, 202, "flaky accepted")
        # one slow run holds the flow's only slot: two more wait in the store, due
        for _ in range(3):
            eq(r.request("POST", "/hooks/slow", {}).status, 202, "slow accepted")

        def outbound_done():
            _, _, s = scrape(r.admin_port)
            return s if value(s, "rill_queue_outcomes_total", flow="outbound", state="succeeded") == 3 else None
        wait_until(outbound_done, 15, "the three outbound runs to succeed")

        def queue_seen():
            _, _, s = scrape(r.admin_port)
            ok = value(s, "rill_queue_runs", state="queued") == 2 and value(s, "rill_queue_runs", state="retrying") == 1
            return s if ok else None
        s = wait_until(queue_seen, 10, "the queue's depth: 2 queued, 1 retrying")
        types, helps, s = scrape(r.admin_port)

        # webhooks, by method, route and status
        eq(value(s, "rill_webhook_requests_total", method="POST", route="/hooks/ok", status="200"), 5, "ok 200")
        eq(value(s, "rill_webhook_requests_total", method="POST", route="/hooks/boom", status="500"), 2, "boom 500")
        eq(value(s, "rill_webhook_requests_total", method="GET", route="none", status="404"), 1, "unmatched 404")
        eq(value(s, "rill_webhook_requests_total", method="POST", route="/hooks/outbound", status="202"), 3,
           "outbound 202")
        eq(types["rill_webhook_requests_total"], "counter", "webhook requests type")

        # runs, by flow and state; durations
        eq(value(s, "rill_runs_started_total", flow="ok"), 5, "ok runs started")
        eq(value(s, "rill_runs_finished_total", flow="ok", state="succeeded"), 5, "ok runs succeeded")
        eq(value(s, "rill_runs_finished_total", flow="boom", state="failed"), 2, "boom runs failed")
        eq(value(s, "rill_runs_finished_total", flow="flaky", state="failed"), 1, "flaky's first attempt")
        eq(types["rill_run_duration_seconds"], "histogram", "duration type")
        eq(value(s, "rill_run_duration_seconds_count", flow="ok"), 5, "ok durations observed")
        buckets = sorted(((float(dict(k)["le"]), v) for k, v in family(s, "rill_run_duration_seconds_bucket").items()
                          if dict(k)["flow"] == "ok"))
        eq(buckets[-1], (float("inf"), 5.0), "+Inf bucket holds every run")
        assert all(a[1] <= b[1] for a, b in zip(buckets, buckets[1:])), f"buckets not cumulative: {buckets}"
        assert value(s, "rill_run_duration_seconds_sum", flow="ok") > 0, "duration sum"

        # the durable queue
        eq(value(s, "rill_queue_outcomes_total", flow="flaky", state="retrying"), 1, "flaky retrying")
        eq(value(s, "rill_queue_submitted_total", flow="slow"), 3, "slow submitted")
        eq(value(s, "rill_queue_runs", state="running"), 1, "one slow run running")
        assert value(s, "rill_queue_oldest_due_age_seconds") > 0, "two runs wait while due: their age shows"

        # outbound HTTP, by host and status
        eq(value(s, "rill_http_client_requests_total", host=tgt, status="200"), 2, "outbound 200s")
        eq(value(s, "rill_http_client_requests_total", host=tgt, status="503"), 1, "outbound 503")
        assert value(s, "rill_http_client_request_duration_seconds_count", host=tgt) >= 3, "outbound durations"

        # the database the flow used (SQLite main: one connection, pool of one)
        eq(value(s, "rill_db_pool_connections", database="main", kind="statements"), 1, "db connections")
        eq(value(s, "rill_db_pool_in_use", database="main", kind="statements"), 0, "db idle now")
        eq(value(s, "rill_db_pool_max", database="main"), 1, "db pool max")

        # cron: the every-second tick fired, each firing's lateness observed
        def ticked():
            _, _, s2 = scrape(r.admin_port)
            return s2 if (value(s2, "rill_cron_fires_total", flow="tick") or 0) >= 1 else None
        s2 = wait_until(ticked, 10, "a cron tick")
        eq(value(s2, "rill_cron_lateness_seconds_count", flow="tick"), value(s2, "rill_cron_fires_total", flow="tick"),
           "one lateness per fire")

        # the gate opens: the waiting runs drain, the queue empties
        Target.gate_open = True

        def drained():
            _, _, s3 = scrape(r.admin_port)
            ok = value(s3, "rill_queue_runs", state="queued") == 0 and value(s3, "rill_queue_runs", state="running") == 0
            return s3 if ok else None
        s3 = wait_until(drained, 15, "the slow runs to drain")
        eq(value(s3, "rill_queue_oldest_due_age_seconds"), 0, "nothing waits")
        eq(value(s3, "rill_queue_outcomes_total", flow="slow", state="succeeded"), 3, "slow runs succeeded")

        # reloads: a broken file is a load error; SIGHUP reloads too
        _, _, before = scrape(r.admin_port)
        reloads, errors = value(before, "rill_flow_reloads_total"), value(before, "rill_flow_load_errors_total")
        eq(value(before, "rill_flows_active"), len(FLOWS), "active flows")
        n = r.reloads()
        r.write_flow("broken.lua", "return {")
        r.wait_reload(n)
        _, _, after = scrape(r.admin_port)
        eq(value(after, "rill_flow_reloads_total"), reloads + 1, "a reload counted")
        eq(value(after, "rill_flow_load_errors_total"), errors + 1, "its load error counted")
        eq(value(after, "rill_flow_files_failing"), 1, "one file failing")
        n = r.reloads()
        r.signal(signal.SIGHUP)
        r.wait_reload(n)
        _, _, hup = scrape(r.admin_port)
        eq(value(hup, "rill_flow_reloads_total"), reloads + 2, "SIGHUP reloads")
    target.shutdown()


@test
def label_values_are_escaped_in_the_exposition():
    # a route's path with a backslash: escaped in the label, read back whole
    flows = {"q.lua": 'return { triggers = { webhook { path = "/hooks/q\\\\x" } }, run = function() end }'}
    with rill_with_admin(flows) as r:
        eq(r.request("POST", "/hooks/q\\x", {}).status, 204, "route with a backslash")
        _, _, s = scrape(r.admin_port)
        eq(value(s, "rill_webhook_requests_total", method="POST", route="/hooks/q\\x", status="204"), 1,
           "the backslash survives escaping and parsing")


@test
def a_long_turn_of_the_loop_shows_in_its_busy_histogram():
    # string.rep of 8 MB is one C call the watchdog cannot pause: the turn
    # running it works for milliseconds (memory touched: 16 MB at least)
    flows = {"ok.lua": FLOWS["ok.lua"], "rep.lua": """
return {
  triggers = { webhook { method = "POST", path = "/hooks/rep" } },
  run = function() return { n = #("x"):rep(8e6) } end,
}"""}
    with rill_with_admin(flows) as r:
        def over_1ms(s):
            return value(s, "rill_loop_busy_seconds_count") - value(s, "rill_loop_busy_seconds_bucket", le="0.001")

        types, _, before = scrape(r.admin_port)
        eq(types.get("rill_loop_busy_seconds"), "histogram", "its type")
        eq(r.request("POST", "/hooks/rep", {}).json(), {"n": 8000000}, "the run")
        _, _, after = scrape(r.admin_port)
        assert over_1ms(after) > over_1ms(before), (over_1ms(before), over_1ms(after))
        assert value(after, "rill_loop_busy_seconds_sum") > value(before, "rill_loop_busy_seconds_sum")
        buckets = sorted((float(dict(k)["le"]), v) for k, v in family(after, "rill_loop_busy_seconds_bucket").items())
        eq([v for _, v in buckets], sorted(v for _, v in buckets), "cumulative buckets")
        eq(buckets[-1][1], value(after, "rill_loop_busy_seconds_count"), "+Inf is the count")


@test
def metrics_need_no_token_and_are_not_on_the_webhook_port():
    with rill_with_admin({"ok.lua": FLOWS["ok.lua"]}, {"RILL_ADMIN_TOKEN": "a-long-admin-token"}) as r:
        types, _, _ = scrape(r.admin_port)  # no Authorization header
        assert "rill_runs_started_total" in types
        eq(r.request("GET", "/metrics").status, 404, "the webhook port has no /metrics")


if __name__ == "__main__":
    main()
