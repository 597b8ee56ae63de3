"""The HTTP edge against hostile clients (issue 13): resets in the middle of
a request, readers that never read, descriptor exhaustion, header shapes a
flow gets wrong, requests that never end, and the conformance details a
proxy in front of rill relies on. Every limit that bites is seen in the log
and in /metrics."""
import json
import os
import resource
import socket
import struct
import threading

from lib import harness
from lib.harness import Rill, eq, main, test, wait_until

FLOWS = {
    "echo.lua": """
return {
  triggers = { webhook { path = "/hooks/echo" } },
  run = function(ctx)
    return { payload = ctx.payload, sig = ctx.request.headers["x-signature"] }
  end,
}""",
    "slow.lua": """
return {
  deadline = "20s",
  triggers = { webhook { path = "/hooks/slow" } },
  run = function(ctx) sleep(ctx.payload.s or 0.05) return { slept = true } end,
}""",
    "async.lua": """
return {
  triggers = { webhook { path = "/hooks/async", mode = "async" } },
  run = function(ctx) return {} end,
}""",
    "listheaders.lua": """
return {
  triggers = { webhook { path = "/hooks/listheaders" } },
  run = function(ctx) return response(200, "hi", { "x-a: 1", "X-B: two" }) end,
}""",
    "big.lua": """
return {
  triggers = { webhook { method = "GET", path = "/hooks/big" } },
  run = function(ctx) return response(200, string.rep("b", 65536)) end,
}""",
    "target.lua": """
return {
  triggers = { webhook { path = "/hooks/target" } },
  run = function(ctx)
    return { host = ctx.request.headers.host, path = ctx.request.path, query = ctx.request.query }
  end,
}""",
    "work.lua": """
return {
  triggers = { webhook { path = "/hooks/work" } },
  run = function(ctx)
    local s = 0
    for i = 1, 20000 do s = s + i % 7 end
    return { id = ctx.payload.id, s = s }
  end,
}""",
    "item.lua": """
return {
  triggers = { webhook { method = "GET", path = "/hooks/item/:id" } },
  run = function(ctx) return { id = ctx.request.params.id, q = ctx.payload } end,
}""",
    "form.lua": """
return {
  triggers = { webhook { path = "/hooks/form", body = "form" } },
  run = function(ctx) return { form = ctx.payload } end,
}""",
    "badheaders.lua": """
return {
  triggers = { webhook { path = "/hooks/badheaders" } },
  run = function(ctx) return response(200, "hi", { 42 }) end,
}""",
    "bigger.lua": """
return {
  triggers = { webhook { method = "GET", path = "/hooks/bigger" } },
  run = function(ctx) return response(200, string.rep("b", 1000000)) end,
}""",
    "nocontent.lua": """
return {
  triggers = { webhook { path = "/hooks/nocontent" } },
  run = function(ctx)
    if ctx.payload.empty then return nil end
    return response(ctx.payload.status, "HTTP/1.1 200 OK\\r\\nContent-Length: 5\\r\\n\\r\\nfake!",
      { ["Transfer-Encoding"] = "chunked", "Connection: keep-alive", ["Keep-Alive"] = "x", ["Upgrade"] = "y",
        ["x-kept"] = "yes" })
  end,
}""",
}


def metric(r, name, **labels):
    """The value of one sample of /metrics, or 0 when it is absent."""
    text = r.admin("GET", "/metrics").body
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        n, _, lab = key.partition("{")
        if n == name and ",".join(sorted(lab.rstrip("}").split(","))) == want:
            return float(value)
    return 0


def raw(r, data, timeout=10):
    """Sends data on a fresh connection and reads until the server closes."""
    with socket.create_connection(("127.0.0.1", r.port)) as s:
        s.sendall(data)
        s.settimeout(timeout)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (socket.timeout, ConnectionResetError):
                break
            if not chunk:
                break
            out += chunk
        return out


def one_response(data):
    """(status, headers dict, body) of the first response in data."""
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for l in lines[1:]:
        k, _, v = l.partition(":")
        headers[k.strip().lower()] = v.strip()
    n = int(headers.get("content-length", "0"))
    return int(lines[0].split()[1]), headers, rest[:n], rest[n:]


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@test
def expect_continue_then_a_reset_hundreds_of_times_leaves_rill_sound():
    # The 100 Continue fails on a reset peer while the request is being
    # parsed: the connection must not reach the flow, and the late answer
    # must find nothing freed (run with RILL_BIN=build-asan/rill to see it).
    with Rill(FLOWS) as r:
        body = b'{"s":0.02}'
        for path in (b"/hooks/slow", b"/hooks/async"):
            for _ in range(150):
                s = socket.create_connection(("127.0.0.1", r.port))
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.sendall(b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                s.close()
        res = r.request("POST", "/hooks/echo", {"n": 1})
        eq(res.status, 200, "a normal request after the resets")
        assert not [l for l in r.logs if "AddressSanitizer" in str(l)], "ASan reported an error"


@test
def a_client_that_pipelines_and_never_reads_is_held_back():
    # 4 MB of pipelined GETs, never reading: rill stops reading from the
    # connection once its answers wait past max_write_backlog, instead of
    # queueing ~20 MB of answers in memory.
    n = 4 * 1024 * 1024 // 31
    with Rill(FLOWS, env={"RILL_MAX_REQUESTS": "1000000"}) as r:
        r.request("GET", "/nope")
        before = rss_kb(r.proc.pid)
        s = socket.create_connection(("127.0.0.1", r.port))
        sent = threading.Event()

        def send():
            try:
                s.sendall(b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n" * n)  # 31 bytes each
            except OSError:
                pass
            sent.set()
        threading.Thread(target=send, daemon=True).start()
        peak = [before]

        def settled():
            peak[0] = max(peak[0], rss_kb(r.proc.pid))
            if metric(r, "rill_http_refused_total", listener="webhooks", reason="write_backlog") >= 1:
                return True  # held back
            return sent.is_set() and metric(r, "rill_webhook_requests_total", method="GET", route="none",
                                            status="404") >= n + 1  # everything answered into memory
        wait_until(settled, 120, "the connection held back or every answer queued")
        peak[0] = max(peak[0], rss_kb(r.proc.pid))
        grown = (peak[0] - before) / 1024
        queued = metric(r, "rill_http_write_queue_peak_bytes", listener="webhooks")
        print(f"     RSS {before // 1024} MB before, peak {peak[0] // 1024} MB; answers queued at most: "
              f"{queued / 1024:.0f} KiB", flush=True)
        if "asan" not in harness.RILL:  # ASan's quarantine keeps freed memory: RSS says nothing there
            assert grown < 12, f"rill grew by {grown:.1f} MB for a client that never reads"
        # the queue stops growing past max_write_backlog (1 MiB) plus the answers
        # of the request being parsed when it was passed
        assert 0 < queued < 1.1 * 1024 * 1024, f"{queued} bytes of answers queued"
        r.wait_log(msg_has="write backlog")
        s.close()
        eq(r.request("GET", "/nope").status, 404, "rill still answers")



@test
def requests_landing_at_once_on_many_connections_are_all_served_in_order():
    # A loop turn's reads parse and dispatch for at most 2 ms; the requests
    # of the reads after that wait in the backlog for the next turn. 300
    # clients each send two requests (the second pipelined behind the
    # first) as fast as they can: every one is answered, each connection's
    # in order, and some went through the backlog.
    with Rill(FLOWS) as r:
        socks = [socket.create_connection(("127.0.0.1", r.port)) for _ in range(300)]

        def req(n):
            body = b'{"id":%d}' % n
            return (b"POST /hooks/work HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        for rnd in range(3):
            for i, s in enumerate(socks):
                s.sendall(req(2 * i) + req(2 * i + 1))
            for i, s in enumerate(socks):
                f = s.makefile("rb")
                for n in (2 * i, 2 * i + 1):
                    status, body = read_one(f)
                    eq(status, 200, f"request {n}")
                    eq(json.loads(body)["id"], n, f"connection {i}'s answers in order")
            if metric(r, "rill_http_reads_deferred_total", listener="webhooks") > 0:
                break
        assert metric(r, "rill_http_reads_deferred_total", listener="webhooks") > 0, \
            "no request waited for the next turn: the 2 ms bound was never reached"
        for s in socks:
            s.close()


@test
def an_absolute_form_target_is_served_as_its_path_with_its_host():
    # RFC 9112 3.2.2: a server must accept "POST http://host/path" (what
    # proxies send) and use the target's host, not the Host header.
    with Rill(FLOWS) as r:
        def ask(target, host=b"other.test"):
            body = b'{"n":1}'
            with socket.create_connection(("127.0.0.1", r.port)) as s:
                s.sendall(b"POST " + target + b" HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n"
                          b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                return read_one(s.makefile("rb"))
        status, payload = ask(b"http://hooks.example.test:8080/hooks/target?a=1")
        eq(status, 200, "an absolute-form target")
        eq(json.loads(payload), {"host": "hooks.example.test:8080", "path": "/hooks/target", "query": {"a": "1"}},
           "what the flow sees")
        status, payload = ask(b"HTTPS://Hooks.Example.Test/hooks/target")
        eq(status, 200, "the scheme in capitals")
        eq(json.loads(payload)["host"], "Hooks.Example.Test", "the target's host")
        eq(ask(b"http://hooks.example.test")[0], 404, "no path: '/', a route that does not exist")
        eq(ask(b"ftp://hooks.example.test/hooks/target")[0], 400, "a scheme other than http(s)")


@test
def clients_that_pipeline_and_never_read_hold_no_more_than_the_listeners_total():
    # max_write_backlog bounds one connection's queued answers; without a
    # total, N such clients made rill hold N MiB (10,000 of them, 10 GB).
    # Past max_write_backlog_total, a connection with answers of its own
    # still queued reads no more requests. Each request here is answered
    # with 64 KiB: 200 of them are 12.5 MiB, more than the kernel takes.
    conns, total = 12, 2 * 1024 * 1024
    env = {"RILL_MAX_WRITE_BACKLOG_TOTAL": str(total)}
    with Rill(FLOWS, env=env) as r:
        socks = []
        for _ in range(conns):
            s = socket.create_connection(("127.0.0.1", r.port))
            s.sendall(b"GET /hooks/big HTTP/1.1\r\nHost: x\r\n\r\n" * 200)
            socks.append(s)

        def refused(reason):
            return metric(r, "rill_http_refused_total", listener="webhooks", reason=reason)
        wait_until(lambda: refused("max_write_backlog_total") + refused("write_backlog") >= conns, 120,
                   "every pipelining connection held back")
        queued = metric(r, "rill_http_write_queue_peak_bytes", listener="webhooks")
        print(f"     answers queued at most: {queued / 1024:.0f} KiB for {conns} connections", flush=True)
        assert refused("max_write_backlog_total") >= 1, "no connection was held back by the total"
        # the total, plus the answer of each connection that passed it
        assert 0 < queued < total + conns * 70 * 1024, f"{queued} bytes of answers queued"
        r.wait_log(msg_has="max_write_backlog_total")
        eq(r.request("GET", "/hooks/big").status, 200, "a client that reads is answered")
        for s in socks:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
        wait_until(lambda: metric(r, "rill_http_write_queue_bytes", listener="webhooks") == 0, 60,
                   "the queued answers freed with their connections")


@test
def with_few_descriptors_idle_sockets_do_not_silence_webhooks_or_healthz():
    # RLIMIT_NOFILE 100: max_connections is derived from it (16 here), the
    # admin listener has its own budget, and idle sockets make room
    def low_nofile():
        resource.setrlimit(resource.RLIMIT_NOFILE, (100, 100))
    with Rill(FLOWS, preexec_fn=low_nofile) as r:
        idle = []
        try:
            for _ in range(120):
                idle.append(socket.create_connection(("127.0.0.1", r.port)))
            # the longest idle connection makes room for a client with a request
            res = r.request("POST", "/hooks/echo", {"n": 1}, timeout=10)
            eq(res.status, 200, "a webhook among 120 idle sockets")
            eq(r.admin("GET", "/healthz", timeout=10).status, 200, "/healthz")
            r.wait_log(msg_has="max_connections")
            assert metric(r, "rill_http_refused_total", listener="webhooks", reason="max_connections") >= 1
        finally:
            for s in idle:
                s.close()
        # the idle sockets gone, webhooks are answered again
        wait_until(lambda: r.request("POST", "/hooks/echo", {"n": 2}).status == 200, 20, "a 200 again")


@test
def running_out_of_descriptors_is_logged_and_healthz_and_webhooks_still_answer():
    # max_connections set above what RLIMIT_NOFILE allows: accept() fails
    # with EMFILE; rill says so, the longest idle connection gives its
    # descriptor up, and the admin listener uses descriptors held in reserve
    def low_nofile():
        resource.setrlimit(resource.RLIMIT_NOFILE, (100, 100))
    with Rill(FLOWS, env={"RILL_MAX_CONNECTIONS": "1000"}, preexec_fn=low_nofile) as r:
        idle = []
        try:
            for _ in range(120):
                idle.append(socket.create_connection(("127.0.0.1", r.port)))
            line = r.wait_log(msg_has="descriptors")
            eq(line.get("reason"), "descriptors", "reason")
            eq(r.admin("GET", "/healthz", timeout=10).status, 200, "/healthz")
            eq(r.request("POST", "/hooks/echo", {"n": 1}, timeout=10).status, 200, "a webhook")
            assert metric(r, "rill_http_refused_total", listener="webhooks", reason="descriptors") >= 1
        finally:
            for s in idle:
                s.close()
        wait_until(lambda: r.request("POST", "/hooks/echo", {"n": 2}).status == 200, 20, "a 200 again")


@test
def out_of_descriptors_with_none_idle_accepting_pauses_and_resumes():
    # 120 connections each in the middle of a request (none idle): accept()
    # runs out, accepting pauses (the clients wait in the kernel's queue),
    # /healthz answers from the admin listener's reserve, and once the
    # connections go a webhook is accepted and answered again
    def low_nofile():
        resource.setrlimit(resource.RLIMIT_NOFILE, (100, 100))
    with Rill(FLOWS, env={"RILL_MAX_CONNECTIONS": "1000"}, preexec_fn=low_nofile) as r:
        busy = []
        try:
            for _ in range(120):
                s = socket.create_connection(("127.0.0.1", r.port))
                s.sendall(b"POST /hooks/echo HTTP/1.1\r\nHost: x\r\n")
                busy.append(s)
            r.wait_log(msg_has="descriptors")
            eq(r.admin("GET", "/healthz", timeout=10).status, 200, "/healthz")
        finally:
            for s in busy:
                s.close()
        wait_until(lambda: r.request("POST", "/hooks/echo", {"n": 2}, timeout=10).status == 200, 20, "a 200 again")


@test
def at_max_connections_with_none_idle_a_new_client_gets_a_503():
    with Rill(FLOWS, env={"RILL_MAX_CONNECTIONS": "2"}) as r:
        busy = [socket.create_connection(("127.0.0.1", r.port)) for _ in range(2)]
        for s in busy:
            s.sendall(b"POST /hooks/echo HTTP/1.1\r\nHost: x\r\n")  # a request begun: not idle
        wait_until(lambda: metric(r, "rill_http_connections", listener="webhooks") == 2, 10, "2 connections")
        res = r.request("POST", "/hooks/echo", {"n": 1}, timeout=10)
        eq(res.status, 503, "status")
        assert "max_connections" in res.body, res
        eq(res.headers.get("connection"), "close", "connection")
        # one whose body is still to come hears it after its headers, its
        # body not read (it waited request_timeout, then heard a 408)
        with socket.create_connection(("127.0.0.1", r.port), timeout=10) as s:
            s.sendall(b"POST /hooks/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 900000\r\n\r\n" + b"x" * 60000)
            status, _, body = read_head(s.makefile("rb"))
            eq(status, 503, f"before its body ({body!r})")
        for s in busy:
            s.close()
        wait_until(lambda: r.request("POST", "/hooks/echo", {"n": 2}).status == 200, 20, "a 200 again")


@test
def ten_thousand_idle_connections_and_500_slowloris_leave_healthz_and_webhooks_answering():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 10000 + 500 + 200
    if hard != resource.RLIM_INFINITY and hard < want:
        raise AssertionError(f"this test needs {want} descriptors, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))
    with Rill(FLOWS, env={"RILL_REQUEST_TIMEOUT": "2s"}) as r:
        idle, slow = [], []
        try:
            for _ in range(10000):
                idle.append(socket.create_connection(("127.0.0.1", r.port)))
            for _ in range(500):
                s = socket.create_connection(("127.0.0.1", r.port))
                s.sendall(b"POST /hooks/echo HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                slow.append(s)
            wait_until(lambda: metric(r, "rill_http_connections", listener="webhooks") >= 10500, 60,
                       "10,500 connections open in rill")
            # the slow ones drip a byte each, well within the idle time, and get cut
            # at request_timeout; meanwhile the admin listener and webhooks answer
            for i in range(20):
                for s in slow:
                    try:
                        s.send(b"a")
                    except OSError:
                        pass
                eq(r.admin("GET", "/healthz", timeout=10).status, 200, "/healthz")
                eq(r.request("POST", "/hooks/echo", {"n": i}, timeout=10).status, 200, "a webhook")
            wait_until(lambda: metric(r, "rill_http_refused_total", listener="webhooks", reason="request_timeout") >= 500,
                       30, "the 500 slow requests cut at request_timeout")
            eq(r.proc.poll(), None, "rill is running")
        finally:
            for s in idle + slow:
                s.close()


@test
def a_json_body_of_too_many_values_is_refused_before_it_is_decoded():
    with Rill(FLOWS) as r:
        many = "[" + "{}," * 30000 + "{}]"  # 90 KB, but 30,001 tables once decoded
        res = r.request("POST", "/hooks/echo", body=many, headers={"Content-Type": "application/json"})
        eq(res.status, 413, f"status ({res.body})")
        assert "max_json_values" in res.body, res
        # a large body of few values is taken
        few = json.dumps({"text": "x" * 200000, "list": list(range(100))})
        res = r.request("POST", "/hooks/echo", body=few, headers={"Content-Type": "application/json"})
        eq(res.status, 200, f"status ({res.body[:200]})")
        eq(len(res.json()["payload"]["text"]), 200000, "the text came through")


@test
def a_form_body_of_too_many_fields_is_refused_before_it_is_parsed():
    # forms are parsed in Lua on the loop: 200,000 fields in 1 MB held it 0.6 s
    with Rill(FLOWS) as r:
        body = "&".join(f"f{i}=%41%e9x" for i in range(25000)).encode()
        got = raw(r, b"POST /hooks/form HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                     b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n%s"
                     % (len(body), body))
        status, _, reason, _ = one_response(got)
        eq(status, 413, f"status ({reason!r})")
        assert b"max_json_values" in reason, reason
        body = "&".join(f"f{i}=%c3%A9%41+b" for i in range(15000)).encode()  # over 64 KiB, under the limit
        got = raw(r, b"POST /hooks/form HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                     b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n%s"
                     % (len(body), body))
        status, _, answer, _ = one_response(got)
        eq(status, 200, f"under the limit ({answer[:200]!r})")
        form = json.loads(answer)["form"]
        eq((len(form), form["f14999"]), (15000, "\u00e9A b"), "every field, its escapes decoded")


@test
def list_style_response_headers_are_sent_and_bad_ones_are_a_500_with_the_run():
    with Rill(FLOWS) as r:
        res = r.request("POST", "/hooks/listheaders", {}, timeout=10)
        eq(res.status, 200, "status")
        eq(res.headers.get("x-a"), "1", "x-a")
        eq(res.headers.get("x-b"), "two", "x-b")
        eq(res.body, "hi", "body")
        res = r.request("POST", "/hooks/badheaders", {}, timeout=10)
        eq(res.status, 500, "status of a response with a header that is not one")
        assert res.json().get("run_id"), res
        line = r.wait_log(msg_has="header")
        eq(line.get("run"), res.json()["run_id"], "the log line names the run")


@test
def no_request_stays_in_flight_past_request_timeout():
    with Rill(FLOWS, env={"RILL_REQUEST_TIMEOUT": "1s"}) as r:
        res = r.request("POST", "/hooks/slow", {"s": 3}, timeout=30)
        eq(res.status, 504, "a request handled past request_timeout")
        r.wait_log(msg_has="request_timeout")
        assert metric(r, "rill_http_refused_total", listener="webhooks", reason="request_timeout") >= 1


@test
def head_answers_carry_no_body():
    with Rill(FLOWS) as r:
        with socket.create_connection(("127.0.0.1", r.port)) as s:
            s.sendall(b"HEAD /nope HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
            s.settimeout(10)
            data = b""
            while data.count(b"HTTP/1.1 ") < 2 or not data.endswith(b"}"):
                chunk = s.recv(65536)
                assert chunk, data
                data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 404"), head
        assert int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0]) > 0, head
        assert rest.startswith(b"HTTP/1.1 404"), rest[:80]


@test
def a_204_or_304_has_no_body_whatever_the_flow_gave():
    # bytes sent after a 204 on a kept connection are read as the next answer
    with Rill(FLOWS) as r, socket.create_connection(("127.0.0.1", r.port), timeout=10) as s:
        f = s.makefile("rb")
        for status in (204, 304):
            body = json.dumps({"status": status}).encode()
            s.sendall(b"POST /hooks/nocontent HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            got, headers, _ = read_head(f)
            eq(got, status, "status")
            assert "content-length" not in headers, headers
            # rill frames its answers: a flow's framing headers are not sent
            eq((headers.get("transfer-encoding"), headers.get("connection"), headers.get("keep-alive"),
                headers.get("upgrade"), headers.get("x-kept")), (None, None, None, None, "yes"), "headers")
        s.sendall(b"POST /hooks/nocontent HTTP/1.1\r\nHost: x\r\nContent-Length: 14\r\n\r\n{\"empty\":true}")
        got, headers, _ = read_head(f)
        eq((got, "content-length" in headers), (204, False), "a run that returns nothing")
        s.sendall(b"GET /hooks/item/next HTTP/1.1\r\nHost: x\r\n\r\n")
        eq(json.loads(read_one(f)[1])["id"], "next", "the next answer is the next request's")


@test
def an_error_after_a_head_answer_has_its_body():
    # the HEAD flag outlived its answer: a malformed next request got a 400
    # whose Content-Length announced a reason it did not carry
    with Rill(FLOWS) as r:
        got = raw(r, b"HEAD /nope HTTP/1.1\r\nHost: x\r\n\r\n\x01GET / HTTP/1.1\r\n\r\n")
        head, _, rest = got.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 404"), got
        status, _, body, after = one_response(rest)
        eq(status, 400, f"the malformed request ({rest!r})")
        assert body.startswith(b'{"error":'), body
        eq(after, b"", "nothing after it")


def read_head(f):
    """(status, headers dict, body) of the next response on a socket file."""
    status = int(f.readline().split(b" ")[1])
    headers = {}
    while True:
        line = f.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.partition(b":")
        headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    return status, headers, f.read(int(headers.get("content-length", "0")))


def read_one(f):
    """(status, body) of the next response on a socket file."""
    status, _, body = read_head(f)
    return status, body


@test
def large_bodies_arrive_whole_by_length_chunked_and_pipelined_on_two_connections():
    # Bodies and pipelined bytes past 64 KiB grow into the listener's spare
    # buffers and are given back after each request: on two keep-alive
    # connections whose requests are interleaved half by half, by length and
    # chunked, and two requests pipelined in one write, every body reaches
    # the flow byte for byte.
    def request(n, chunked):
        payload = {"n": n, "pad": chr(97 + n % 26) * (200_000 + n * 7919)}
        body = json.dumps(payload).encode()
        head = b"POST /hooks/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        if not chunked:
            return payload, head + b"Content-Length: %d\r\n\r\n" % len(body) + body
        parts, at, size = [], 0, 65537
        while at < len(body):
            piece = body[at:at + size]
            parts.append(b"%x\r\n%s\r\n" % (len(piece), piece))
            at += len(piece)
            size = 1000 if size == 65537 else 65537
        return payload, head + b"Transfer-Encoding: chunked\r\n\r\n" + b"".join(parts) + b"0\r\n\r\n"

    with Rill(FLOWS) as r:
        socks = [socket.create_connection(("127.0.0.1", r.port), timeout=30) for _ in range(2)]
        files = [s.makefile("rb") for s in socks]
        n = 0
        for chunked in (False, True, False):
            sent = []
            for s in socks:
                n += 1
                payload, data = request(n, chunked)
                sent.append((payload, data))
                s.sendall(data[:len(data) // 2])
            for s, (_, data) in zip(socks, sent):
                s.sendall(data[len(data) // 2:])
            for f, (payload, _) in zip(files, sent):
                status, got = read_one(f)
                eq(status, 200, f"request {payload['n']}")
                eq(json.loads(got)["payload"], payload, f"request {payload['n']}'s body")
        pipelined = [request(n + 1, False), request(n + 2, True)]
        socks[0].sendall(pipelined[0][1] + pipelined[1][1])
        for payload, _ in pipelined:
            status, got = read_one(files[0])
            eq(status, 200, f"pipelined request {payload['n']}")
            eq(json.loads(got)["payload"], payload, f"pipelined request {payload['n']}'s body")
        for s in socks:
            s.close()


# /hooks/count answers the length of its body's "pad": large bodies whose
# answer is small (pad_request makes one)
COUNTING = dict(FLOWS, **{"count.lua": """
return {
  triggers = { webhook { path = "/hooks/count" } },
  run = function(ctx) return { n = #ctx.payload.pad } end,
}"""})


def pad_request(n, close=False):
    """A raw POST /hooks/count whose body pads n bytes."""
    body = json.dumps({"pad": "p" * n}).encode()
    return (b"POST /hooks/count HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n%s\r\n" % (len(body), b"Connection: close\r\n" if close else b"")) + body


@test
def idle_keep_alive_connections_do_not_keep_the_buffers_of_their_large_bodies():
    # 40 connections each send one 1 MB body, are answered and stay open,
    # idle: their body buffers (2 MiB each, 1 MiB of it written) were kept
    # until they closed, so max_connections of them could hold gigabytes.
    req = pad_request(1_000_000)
    with Rill(COUNTING) as r:
        eq(r.request("POST", "/hooks/count", {"pad": "warm"}).status, 200, "a first request")
        before = rss_kb(r.proc.pid)
        socks = []
        for _ in range(40):
            s = socket.create_connection(("127.0.0.1", r.port), timeout=30)
            s.sendall(req)
            status, got = read_one(s.makefile("rb"))
            eq((status, json.loads(got)), (200, {"n": 1_000_000}), "the answer")
            socks.append(s)
        grown = (rss_kb(r.proc.pid) - before) / 1024
        print(f"     RSS grew by {grown:.1f} MB with 40 idle connections that each sent 1 MB", flush=True)
        if "asan" not in harness.RILL:  # ASan's quarantine keeps freed memory: RSS says nothing there
            assert grown < 20, f"rill grew by {grown:.1f} MB for 40 idle connections"
        for s in socks:
            s.close()


@test
def idle_keep_alive_connections_do_not_keep_their_last_large_answer():
    # each connection's answer buffer was kept until it closed: 300 idle
    # clients that had read a 1 MB answer each held 300 MB
    with Rill(FLOWS) as r:
        eq(r.request("GET", "/hooks/bigger").status, 200, "a first request")
        before = rss_kb(r.proc.pid)
        socks = []
        for _ in range(60):
            s = socket.create_connection(("127.0.0.1", r.port), timeout=30)
            s.sendall(b"GET /hooks/bigger HTTP/1.1\r\nHost: x\r\n\r\n")
            status, got = read_one(s.makefile("rb"))
            eq((status, len(got)), (200, 1000000), "the answer")
            socks.append(s)
        grown = (rss_kb(r.proc.pid) - before) / 1024
        print(f"     RSS grew by {grown:.1f} MB with 60 idle connections that each read 1 MB", flush=True)
        if "asan" not in harness.RILL:  # ASan's quarantine keeps freed memory: RSS says nothing there
            assert grown < 30, f"rill grew by {grown:.1f} MB for 60 idle connections"
        for s in socks:
            s.close()


@test
def a_body_of_tens_of_megabytes_leaves_no_spare_buffer_of_its_size():
    # the two process-wide spares kept any buffer given back, up to twice
    # max_body: with max_body at 64 MiB, one 40 MB body left ~64 MiB resident
    # until exit; a spare is kept only up to 4 MiB
    req = pad_request(40_000_000, close=True)
    with Rill(COUNTING, env={"RILL_MAX_BODY": "64MiB", "RILL_MAX_STRING": "64MiB",
                             "RILL_RUN_MEMORY_LIMIT": "512MiB"}) as r:
        eq(r.request("POST", "/hooks/count", {"pad": "warm"}).status, 200, "a first request")
        before = rss_kb(r.proc.pid)
        s = socket.create_connection(("127.0.0.1", r.port), timeout=60)
        s.sendall(req)
        status, got = read_one(s.makefile("rb"))
        eq((status, json.loads(got)), (200, {"n": 40_000_000}), "the answer")
        s.close()
        if "asan" not in harness.RILL:  # ASan's quarantine keeps freed memory: RSS says nothing there
            # with no other request: a body this large is followed by GC
            # cycles of its own (LuaJIT waits for its heap to double before
            # a cycle: left to that, rill stayed at +200 MB for seconds,
            # once in CI for over 30 s while requests came). A
            # kept spare would hold the body's 40 MB on top of what the
            # allocators keep: 55+ MB with it, ~17 without
            def back():
                return (rss_kb(r.proc.pid) - before) / 1024 < 55
            wait_until(back, 30, "RSS back within 55 MB of where it was, with no other request")


@test
def chunked_trailers_never_become_headers():
    with Rill(FLOWS) as r:
        body = b'{"a":1}'
        out = raw(r, b"POST /hooks/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                     b"%x\r\n%s\r\n0\r\nX-Signature: forged\r\n\r\n" % (len(body), body))
        status, _, got, _ = one_response(out)
        eq(status, 200, "status")
        eq(json.loads(got), {"payload": {"a": 1}}, "the trailer is not a header")


CHUNKED = b"POST /hooks/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
# a request hidden in another's bytes: were it served, a second answer follows the refusal
HIDDEN = b"GET /hooks/item/SMUGGLED HTTP/1.1\r\nHost: x\r\n\r\n"
SMUGGLE_PAD = b"\r\n" + HIDDEN[:-2] + b"X-Pad: " + b"a" * (256 - len(HIDDEN) - 11) + b"\r\n\r\n"
assert len(SMUGGLE_PAD) == 0x100


@test
def request_shapes_that_let_a_proxy_and_rill_disagree_are_refused():
    # Each is read one way by some proxies and another by a lenient parser:
    # a desync lets a request hide inside another's body (smuggling).
    cases = [
        ("a space before a header's colon",  # rill read "Transfer-Encoding :" as chunked
         b"POST /hooks/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
         400, b"colon"),
        ("two Host headers", b"POST /hooks/echo HTTP/1.1\r\nHost: x\r\nHost: y\r\nContent-Length: 2\r\n\r\n{}",
         400, b"Host"),
        ("HTTP/1.1 without Host", b"POST /hooks/echo HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}", 400, b"Host"),
        ("HTTP/9.9", b"POST /hooks/echo HTTP/9.9\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}", 505, b"HTTP/1"),
        # Debian's http-parser is built lenient: what it let through, checked by http_framing.c
        ("junk for the CRLF after a chunk's data", CHUNKED + b"2\r\n{}XX0\r\n\r\n", 400, b"CRLF"),
        # a parser that takes "\n1" for the data's CRLF reads "00" as the last
        # chunk, the padded request as its empty trailers, then HIDDEN; one
        # that takes a bare LF reads a 0x100-byte chunk holding it all
        ("a bare LF after a chunk's data",
         CHUNKED + b"2\r\n{}\n100\r\n" + SMUGGLE_PAD + b"\r\n0\r\n\r\n", 400, b"CRLF"),
        ("junk after a chunk's size", CHUNKED + b"2 zz\r\n{}\r\n0\r\n\r\n", 400, b"extension"),
        ("a control byte in a chunk extension", CHUNKED + b"2;a\x01\r\n{}\r\n0\r\n\r\n", 400, b"ASCII"),
        ("lines ended by a bare LF", b"POST /hooks/echo HTTP/1.1\nHost: x\nContent-Length: 2\n\n{}", 400, b"LF"),
        ("a folded Transfer-Encoding",
         b"POST /hooks/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
         400, b"obs-fold"),
        ("HXXP/1.1", b"POST /hooks/echo HXXP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}", 400, b"HTTP/1.1"),
        ("a fragment in the target", b"GET /hooks/item/a?q=1#frag HTTP/1.1\r\nHost: x\r\n\r\n", 400, b"fragment"),
        ("a tab in the target", b"GET /hooks/item\t/x HTTP/1.1\r\nHost: x\r\n\r\n", 400, b"control byte"),
        # a head refused hears its 400 alone, no 100 Continue before it
        ("a bare LF in a head that expects 100-continue",
         b"POST /hooks/echo HTTP/1.1\r\nHost: x\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n", 400, b"LF"),
        ("a CONNECT to a path, its body a request",
         b"CONNECT /hooks/echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(HIDDEN), HIDDEN),
         501, b"CONNECT"),
        ("HTTP/1.0 with Transfer-Encoding",
         b"POST /hooks/echo HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n"
         b"2\r\n{}\r\n0\r\n\r\n" + HIDDEN, 400, b"HTTP/1.0"),
    ]
    with Rill(FLOWS) as r:
        before = metric(r, "rill_http_refused_total", listener="webhooks", reason="bad_request")
        for what, data, want, reason in cases:
            got = raw(r, data)
            status, headers, body, rest = one_response(got)
            eq(status, want, f"{what}: status ({got[:300]!r})")
            assert reason in body, (what, body)
            eq(headers.get("connection"), "close", f"{what}: the connection is closed")
            eq(rest, b"", f"{what}: nothing after the refusal")
        wait_until(lambda: metric(r, "rill_http_refused_total", listener="webhooks", reason="bad_request")
                   >= before + len(cases), 10, "each counted")
        # what stays accepted: HTTP/1.0 without Host, one Host
        status, _, body, _ = one_response(raw(r, b"POST /hooks/echo HTTP/1.0\r\nContent-Length: 2\r\n\r\n{}"))
        eq(status, 200, f"HTTP/1.0 without Host ({body!r})")
        eq(r.request("POST", "/hooks/echo", {"a": 1}).status, 200, "an ordinary request")


@test
def a_transfer_coding_other_than_chunked_is_refused_not_read_as_the_body():
    # "gzip, chunked" was read as chunked and its gzip bytes handed to the
    # flow as the body; "chunked" twice (chunked applied twice, RFC 9112
    # 6.1) as chunked once, where a proxy may read either another way. A
    # server that does not know a coding answers 501 (RFC 9112 6.1): rill
    # knows chunked alone, once. What hid behind the body is never a request
    chunked = b"2\r\n{}\r\n0\r\n\r\n"
    smuggled = b"GET /hooks/big HTTP/1.1\r\nHost: x\r\n\r\n"
    head = b"POST /hooks/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    cases = [
        ("gzip, chunked", head + b"Transfer-Encoding: gzip, chunked\r\n\r\n", 501, b"chunked"),
        ("gzip then chunked on two lines",
         head + b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n", 400, b"Transfer-Encoding"),
        ("chunked twice on two lines",
         head + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400, b"Transfer-Encoding"),
        ("chunked, chunked", head + b"Transfer-Encoding: chunked, chunked\r\n\r\n", 501, b"chunked"),
        ("identity", head + b"Transfer-Encoding: identity\r\n\r\n", 501, b"chunked"),
    ]
    with Rill(FLOWS) as r:
        for what, data, want, reason in cases:
            got = raw(r, data + chunked + smuggled)
            status, headers, body, rest = one_response(got)
            eq(status, want, f"{what}: status ({got[:300]!r})")
            assert reason in body, (what, body)
            eq(headers.get("connection"), "close", f"{what}: the connection is closed")
            eq(rest, b"", f"{what}: nothing after the refusal")
        # chunked, in any case, stays accepted
        status, _, body, _ = one_response(raw(r, head + b"Transfer-Encoding: Chunked\r\nConnection: close\r\n\r\n" + chunked))
        eq((status, json.loads(body)), (200, {"payload": {}}), "Transfer-Encoding: Chunked")


@test
def a_100_continue_goes_only_to_an_http11_client_whose_body_is_awaited():
    # an HTTP/1.0 client knows no 1xx: it takes "100 Continue" for the
    # answer (RFC 9110 10.1.1: a server MUST ignore the expectation in a 1.0
    # request); and with no body to come (Content-Length: 0, a GET) there is
    # nothing to continue: the answer itself is the only one sent
    head = b"POST /hooks/echo HTTP/1.%d\r\nHost: x\r\nContent-Type: application/json\r\nExpect: 100-continue\r\n"
    with Rill(FLOWS) as r:
        got = raw(r, head % 0 + b"Content-Length: 2\r\n\r\n{}")
        assert got.startswith(b"HTTP/1.1 200 "), got[:200]
        assert b" 100 " not in got, got[:200]
        got = raw(r, head % 1 + b"Content-Length: 0\r\n\r\n"
                  b"GET /hooks/big HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n")
        assert got.startswith(b"HTTP/1.1 400 "), got[:200]  # the empty JSON body
        assert b" 100 " not in got, got[:300]
        assert b"HTTP/1.1 200 " in got, got[:300]
        # HTTP/1.1 with a body to come: 100 Continue, then the answer
        with socket.create_connection(("127.0.0.1", r.port), timeout=10) as s:
            s.sendall(head % 1 + b"Content-Length: 2\r\nConnection: close\r\n\r\n")
            f = s.makefile("rb")
            eq(f.read(25), b"HTTP/1.1 100 Continue\r\n\r\n", "the interim answer")
            s.sendall(b"{}")
            eq(one_response(f.read())[0], 200, "the answer after the body")


@test
def an_http10_client_is_told_whether_its_connection_stays_open():
    # RFC 9112 9.3 and appendix C.2.2: an HTTP/1.0 connection persists only
    # when the answer says "Connection: keep-alive"; without it a 1.0 client
    # (ab -k, old proxies) waits for the close. rill kept the connection
    # open and said nothing, so the client hung until keepalive_timeout
    echo = (b"POST /hooks/echo HTTP/1.%d\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"%sContent-Length: 7\r\n\r\n{\"n\":%d}")
    with Rill(FLOWS) as r:
        with socket.create_connection(("127.0.0.1", r.port), timeout=10) as s:
            f = s.makefile("rb")
            for n in (1, 2):
                s.sendall(echo % (0, b"Connection: Keep-Alive\r\n", n))
                status, headers, body = read_head(f)
                eq((status, body), (200, b'{"payload":{"n":%d}}' % n), f"1.0 keep-alive request {n}")
                eq(headers.get("connection", "").lower(), "keep-alive", f"1.0 keep-alive request {n}: the answer says so")
            # a flow's 400 (a body that is not JSON) keeps the connection, and says so
            s.sendall(b"POST /hooks/echo HTTP/1.0\r\nConnection: keep-alive\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 1\r\n\r\n{")
            status, headers, _ = read_head(f)
            eq((status, headers.get("connection")), (400, "keep-alive"), "a 1.0 keep-alive request the flow refuses")
            # a request the listener refuses closes the connection, and says so
            s.sendall(b"POST /hooks/echo HTTP/1.0\r\nConnection: keep-alive\r\nHost: a b\r\n"
                      b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
            status, headers, _ = read_head(f)
            eq((status, headers.get("connection")), (400, "close"), "a 1.0 keep-alive request the listener refuses")
            eq(f.read(), b"", "then the connection closes")
        # a 1.0 request without keep-alive: "Connection: close", and the close
        status, headers, body, rest = one_response(raw(r, echo % (0, b"", 3)))
        eq((status, headers.get("connection"), rest), (200, "close", b""), "a plain 1.0 request")
        # 1.1 persists by default: no Connection header in its answers
        with socket.create_connection(("127.0.0.1", r.port), timeout=10) as s:
            f = s.makefile("rb")
            s.sendall(echo % (1, b"", 4))
            status, headers, body = read_head(f)
            eq((status, "connection" in headers), (200, False), "a 1.1 request")
            s.sendall(echo % (1, b"Connection: close\r\n", 5))
            status, headers, body = read_head(f)
            eq((status, headers.get("connection")), (200, "close"), "a 1.1 request that closes")


@test
def a_host_that_is_not_a_host_is_a_400():
    # RFC 9112 3.2: a server MUST answer 400 to a Host with an invalid
    # value; rill handed "a b/c@d" to the flow as ctx.request.headers.host,
    # which a flow may put in a URL (host header injection). The same for
    # the authority of an absolute-form target ("http://user@evil/...")
    with Rill(FLOWS) as r:
        def ask(target, host):
            with socket.create_connection(("127.0.0.1", r.port)) as s:
                s.sendall(b"POST " + target + b" HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n"
                          b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
                return read_one(s.makefile("rb"))
        for host in (b"a b", b"evil/x", b"x@evil", b"evil\\x", b"a\"b", b"caf\xe9", b"x?y", b"x#y", b"<x>"):
            status, body = ask(b"/hooks/target", host)
            eq(status, 400, f"Host: {host!r} ({body!r})")
            assert b"Host" in body, body
        for target in (b"http://user@evil/hooks/target", b"http://ev il/hooks/target"):
            status, body = ask(target, b"x")
            eq(status, 400, f"target {target!r} ({body!r})")
        for host in (b"x", b"x:8080", b"[::1]:80", b"Hooks.Example.Test", b"", b"xn--d1acufc.xn--p1ai", b"127.0.0.1:1"):
            status, body = ask(b"/hooks/target", host)
            eq((status, json.loads(body)["host"] if status == 200 else body), (200, host.decode()), f"Host: {host!r}")
        eq(ask(b"/hooks/target", b"x \t")[0], 200, "Host with trailing whitespace")


@test
def a_client_that_half_closes_after_its_requests_gets_every_answer():
    # shutdown(SHUT_WR) once the requests are sent (nc -N, a script that
    # closes stdin) is no reset: the answers are still wanted. rill took
    # the EOF for a hang-up and closed the connection, answering nothing
    slow = (b"POST /hooks/slow HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 7\r\n\r\n{\"s\":3}")
    echo = (b"POST /hooks/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 7\r\n\r\n{\"n\":%d}")
    with Rill(FLOWS) as r:
        for what, behind, answers in (("alone", b"", 1), ("two pipelined behind it", echo % 1 + echo % 2, 3),
                                      ("half a request behind it", echo[:30], 1)):
            with socket.create_connection(("127.0.0.1", r.port), timeout=20) as s:
                s.sendall(slow + behind)
                wait_until(lambda: metric(r, "rill_runs_running") == 1, 20, f"{what}: the slow request in flight")
                s.shutdown(socket.SHUT_WR)
                f = s.makefile("rb")
                eq(read_one(f), (200, b'{"slept":true}'), f"{what}: the slow request's answer")
                for i in range(1, answers):
                    eq(read_one(f), (200, b'{"payload":{"n":%d}}' % i), f"{what}: pipelined answer {i}")
                eq(f.read(), b"", f"{what}: then the connection closes")
            wait_until(lambda: metric(r, "rill_runs_running") == 0, 20, "no run left")


@test
def a_header_value_reaches_the_flow_without_its_trailing_whitespace():
    # RFC 9110 5.5: whitespace around a field value is not part of it. The
    # parser kept what trailed: a flow comparing a signature header got
    # "abc \t" for "abc", and "Expect: 100-continue " got no 100 Continue
    with Rill(FLOWS) as r:
        got = raw(r, b"POST /hooks/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json \r\n"
                     b"X-Signature:  abc \t\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
        status, _, body, _ = one_response(got)
        eq((status, json.loads(body)), (200, {"payload": {}, "sig": "abc"}), "the value as the flow sees it")
        got = raw(r, b"POST /hooks/echo HTTP/1.1\r\nHost: x\r\nX-Signature: \t \r\nContent-Type: application/json\r\n"
                     b"Content-Length: 2\r\nConnection: close\r\n\r\n{}")
        status, _, body, _ = one_response(got)
        eq((status, json.loads(body)), (200, {"payload": {}, "sig": ""}), "a value of whitespace only")
        with socket.create_connection(("127.0.0.1", r.port), timeout=10) as s:
            s.sendall(b"POST /hooks/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Expect: 100-continue  \r\nContent-Length: 2\r\nConnection: close\r\n\r\n")
            f = s.makefile("rb")
            eq(f.read(25), b"HTTP/1.1 100 Continue\r\n\r\n", "the interim answer")
            s.sendall(b"{}")
            eq(one_response(f.read())[0], 200, "the answer after the body")


@test
def a_header_value_that_is_not_utf8_is_a_400():
    # RFC 9110 allows bytes over 0x7f in a value without saying what they
    # mean. rill handed them to flows as text and kept them in the stored
    # request's JSON, which Postgres refuses: an async webhook got 503
    # "retry later" and its sender retried for ever
    with Rill(FLOWS) as r:
        def ask(value):
            got = raw(r, b"POST /hooks/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"X-Signature: " + value + b"\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
            status, _, body, _ = one_response(got)
            return status, body
        for value in (b"caf\xe9", b"\xc0\xaf", b"\xed\xa0\x80", b"ok \xff", b"\xf4\x90\x80\x80"):
            status, body = ask(value)
            eq(status, 400, f"X-Signature: {value!r} ({body!r})")
            assert b"not UTF-8" in body, body
        status, body = ask("café ✓".encode())
        eq((status, json.loads(body)), (200, {"payload": {}, "sig": "café ✓"}), "a UTF-8 value reaches the flow")


@test
def too_many_headers_is_431():
    with Rill(FLOWS) as r:
        many = b"".join(b"X-H%d: v\r\n" % i for i in range(150))
        status, _, body, _ = one_response(raw(r, b"GET /nope HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n"))
        eq(status, 431, "status")
        assert b"headers" in body, body
        r.wait_log(msg_has="max_headers")
        assert metric(r, "rill_http_refused_total", listener="webhooks", reason="max_headers") >= 1


@test
def an_overflowing_chunk_size_is_a_400_about_the_chunk():
    with Rill(FLOWS) as r:
        status, _, body, _ = one_response(raw(
            r, b"POST /hooks/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"FFFFFFFFFFFFFFFFFFFF\r\n"))
        eq(status, 400, "status")
        assert b"content" not in body.lower() and b"chunk" in body.lower(), body


@test
def a_json_body_that_is_not_utf8_is_a_400():
    with Rill(FLOWS) as r:
        body = b'{"a":"\xff\xfe"}'
        status, _, got, _ = one_response(raw(
            r, b"POST /hooks/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\n"
               b"Content-Length: %d\r\n\r\n%s" % (len(body), body)))
        eq(status, 400, "status")
        assert b"UTF-8" in got, got



@test
def a_query_path_or_form_that_is_not_utf8_once_decoded_is_a_400():
    # a JSON body that is not UTF-8 is a 400; "?x=%ff" (or a raw 0xff in
    # the target) reached the flow as the byte 0xff, and json.encode copies
    # it: a flow echoing it (and rill's own 404, which names the path)
    # answered invalid JSON
    post = (b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n%s")
    with Rill(FLOWS) as r:
        def ask(target, body=b"{}", ctype=b"application/json", method=b"POST"):
            data = post % (target, ctype, len(body), body)
            status, _, got, _ = one_response(raw(r, data.replace(b"POST", method, 1)))
            return status, json.loads(got)  # whatever the status, the answer is JSON
        for what, target in (("an escaped value", b"/hooks/target?x=%ff"), ("an escaped key", b"/hooks/target?%C0%AF=1"),
                             ("a raw byte", b"/hooks/target?x=a\xffb"), ("a surrogate", b"/hooks/target?x=%ed%a0%80"),
                             ("a raw byte in the path", b"/hooks/t\xffx"), ("an escape in the path", b"/hooks/t%ffx")):
            status, got = ask(target)
            eq(status, 400, f"{what} ({got})")
            assert "UTF-8" in got["error"], got
        status, got = ask(b"/hooks/item/a%ffb?q=1", method=b"GET", body=b"")
        eq(status, 400, f"a path parameter ({got})")
        status, got = ask(b"/hooks/item/x?q=%ff", method=b"GET", body=b"")
        eq(status, 400, f"a GET's query ({got})")
        status, got = ask(b"/hooks/form", b"a=%ff", b"application/x-www-form-urlencoded")
        eq(status, 400, f"a form body ({got})")
        assert "UTF-8" in got["error"], got
        assert metric(r, "rill_webhook_requests_total", method="POST", route="/hooks/target", status="400") >= 4
        # UTF-8, escaped or raw, stays accepted
        eq(ask(b"/hooks/target?x=%e2%82%ac&y=\xe2\x82\xac"), (200, {"query": {"x": "\u20ac", "y": "\u20ac"},
                                                                  "path": "/hooks/target", "host": "x"}), "UTF-8")
        eq(ask(b"/hooks/item/caf%C3%A9?q=%C3%A9", method=b"GET", body=b""),
           (200, {"id": "caf\u00e9", "q": {"q": "\u00e9"}}), "a UTF-8 path parameter and query")
        eq(ask(b"/hooks/form", b"a=%C3%A9+b", b"application/x-www-form-urlencoded"), (200, {"form": {"a": "\u00e9 b"}}),
           "a UTF-8 form body")

# The listener's Lua API alone: a request its dispatch dropped without an
# answer (what a Lua error on an answer path leaves) is still the
# connection's, so the collector must not free it.
KEEP_REQ = """
local http = require 'rill.c.http_server'
local timer = require 'rill.c.timer'
local weak = setmetatable({}, { __mode = 'v' })
local srv = assert(http.listen('127.0.0.1', 0, function(req) weak[1] = req end, { request_timeout = 20 }))
io.stdout:write(srv:port(), '\\n'); io.stdout:flush()
local function tick()
  if not weak[1] then return timer.after(0.02, tick) end
  collectgarbage(); collectgarbage()
  if weak[1] then weak[1]:respond(200, 'kept') else io.stdout:write('collected\\n') end
  srv:close()
end
timer.after(0.02, tick)
"""


@test
def a_request_dropped_by_lua_unanswered_is_kept_until_it_is_answered():
    # it had no owner: collected, its memory was written at request_timeout
    import subprocess
    import tempfile
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(KEEP_REQ)
    p = subprocess.Popen([harness.RILL, "lua", f.name], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = int(p.stdout.readline())
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        got = b""
        while b"kept" not in got:
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
        s.close()
        out, err = p.communicate(timeout=30)
    finally:
        os.unlink(f.name)
        if p.poll() is None:
            p.kill()
    assert got.startswith(b"HTTP/1.1 200") and b"kept" in got, f"answer {got[:200]!r}, rill said {out!r} {err[-500:]!r}"


SPARES_AT_EXIT = """
local http = require 'rill.c.http_server'
local srv
srv = assert(http.listen('127.0.0.1', 0, function(req, m, p, q, h, b)
  req:respond(200, tostring(#b))
  if p == '/last' then srv:close() end
end, { max_body = 300000, keepalive_timeout = 0.3 }))
io.stdout:write(srv:port(), '\\n'); io.stdout:flush()
"""


@test
def the_spare_buffers_of_large_bodies_are_freed_at_exit():
    # Bodies past 64 KiB leave their buffers as the listener's spares: they
    # were still held when rill exited (reachable, so LeakSanitizer said
    # nothing; main's check of what the wind-down frees counts them).
    import subprocess
    import tempfile
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(SPARES_AT_EXIT)
    p = subprocess.Popen([harness.RILL, "lua", f.name], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = int(p.stdout.readline())
        socks = []
        for path, size in (("/a", 200_000), ("/b", 150_000), ("/last", 100_000)):
            s = socket.create_connection(("127.0.0.1", port), timeout=30)
            s.sendall(b"POST %s HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % (path.encode(), size) + b"z" * size)
            status, got = read_one(s.makefile("rb"))
            eq((status, got), (200, str(size).encode()), f"the answer to {path}")
            socks.append(s)
        socks[0].close()
        out, err = p.communicate(timeout=30)
        for s in socks[1:]:
            s.close()
    finally:
        os.unlink(f.name)
        if p.poll() is None:
            p.kill()
    assert "not freed at exit" not in err, f"rill said {err[-500:]!r}"
    eq(p.returncode, 0, "rill's exit code")


ECHO_LATER = """
local http = require 'rill.c.http_server'
local timer = require 'rill.c.timer'
local srv
srv = assert(http.listen('127.0.0.1', 0, function(req, m, p, q, h, b)
  if p == '/stop' then req:respond(200, 'bye') return srv:close() end
  if p == '/later' then timer.after(0.001 * (#b % 5), function() req:respond(200, b) end)
  else req:respond(200, b) end
end, { max_body = 300000, keepalive_timeout = 0.5 }))
io.stdout:write(srv:port(), '\\n'); io.stdout:flush()
"""


@test
def pipelined_large_bodies_behind_late_answers_and_resets_arrive_whole():
    # Reads are parsed where they land and only the rest is kept; bodies and
    # pipelines past 64 KiB move through the two spares. Three connections
    # at once pipeline 1-4 requests each (0 B to max_body exactly, by length
    # and chunked, answered at once or from a timer), written in pieces of
    # 1 B to 200 KB; one round in five is reset halfway. Every body comes
    # back byte for byte, in order (run with RILL_BIN=build-asan/rill to see
    # any stale pointer into a read buffer or a spare).
    import random
    import subprocess
    import tempfile

    def request(rng, tag):
        n = rng.choice([0, 10, 1000, 70_000, 140_000, 300_000])
        body = (bytes([97 + tag % 26]) * n)[:n]
        if n >= 10:
            body = b"%08d" % tag + body[8:]
        head = b"POST " + rng.choice([b"/now", b"/later"]) + b" HTTP/1.1\r\nHost: x\r\n"
        if rng.random() < 0.5:
            return body, head + b"Content-Length: %d\r\n\r\n" % n + body
        parts, at = [], 0
        while at < n:
            piece = body[at:at + rng.choice([1, 17, 4000, 65537, 100_000])]
            parts.append(b"%x\r\n%s\r\n" % (len(piece), piece))
            at += len(piece)
        return body, head + b"Transfer-Encoding: chunked\r\n\r\n" + b"".join(parts) + b"0\r\n\r\n"

    wrong, answered = [], []

    def client(port, cid):
        rng = random.Random(cid)
        for rnd in range(6):
            reqs = [request(rng, cid * 100 + rnd * 10 + j) for j in range(rng.randint(1, 4))]
            data = b"".join(d for _, d in reqs)
            reset = rng.random() < 0.2
            cut = rng.randint(0, len(data)) if reset else len(data)
            pieces, at = [], 0
            while at < cut:
                size = rng.choice([1, 7, 100, 5000, 70_000, 200_000])
                pieces.append(data[at:min(cut, at + size)])
                at += size
            s = socket.create_connection(("127.0.0.1", port), timeout=60)

            def send():
                try:
                    for piece in pieces:
                        s.sendall(piece)
                except OSError:
                    pass
            sender = threading.Thread(target=send)
            sender.start()
            if not reset:
                f = s.makefile("rb")
                for body, _ in reqs:
                    status, got = read_one(f)
                    if (status, got) != (200, body):
                        wrong.append((cid, rnd, status, len(body), len(got)))
                        break
                    answered.append(len(body))
            sender.join()
            if reset:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()

    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(ECHO_LATER)
    p = subprocess.Popen([harness.RILL, "lua", f.name], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = int(p.stdout.readline())
        clients = [threading.Thread(target=client, args=(port, i)) for i in range(3)]
        for t in clients:
            t.start()
        for t in clients:
            t.join()
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(b"GET /stop HTTP/1.1\r\nHost: x\r\n\r\n")
            eq(read_one(s.makefile("rb")), (200, b"bye"), "the stop")
        out, err = p.communicate(timeout=60)
    finally:
        os.unlink(f.name)
        if p.poll() is None:
            p.kill()
    eq(wrong, [], "requests whose answer was not their body")
    print(f"     {len(answered)} answers, {sum(answered)} bytes of bodies", flush=True)
    assert len([n for n in answered if n > 65536]) >= 10, f"too few large bodies answered: {answered}"
    eq(p.returncode, 0, f"rill's exit code ({err[-500:]!r})")


if __name__ == "__main__":
    main()
