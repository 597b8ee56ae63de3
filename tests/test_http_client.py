"""The http module end to end: flows calling a local HTTP(S) server through
rill's client (libcurl on the loop): bodies, headers, errors with host and
reason, timeouts, large and slow bodies, TLS with a self-signed certificate,
redirects, logging without secrets, and 1,000 requests in flight at once
while rill keeps answering webhooks."""
import json
import os
import ssl
import subprocess
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from lib.harness import Rill, eq, free_port, main, temp_dir, test, wait_until


class Server:
    """A local server: /json, /echo, /status/N, /slow?s= or ?hold=N, /slowbody, /big?n=,
    /redirect; counts requests in flight on /slow."""

    def __init__(self, tls=None):
        self.in_flight = self.most = self.slow_done = 0
        self.ports = []  # the client port of each request: one per connection
        self.lock = threading.Lock()
        self.held = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def send(self, status, body, ctype="application/json", extra=()):
                body = body if isinstance(body, bytes) else body.encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in extra:
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def handle_any(self):
                url = urllib.parse.urlsplit(self.path)
                q = dict(urllib.parse.parse_qsl(url.query))
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n).decode() if n else ""
                outer.ports.append(self.client_address[1])
                if url.path == "/json":
                    self.send(200, '{"a":1,"list":[1,2]}', extra=[("X-Multi", "one"), ("X-Multi", "two")])
                elif url.path == "/echo":
                    self.send(200, json.dumps({"method": self.command, "body": body, "query": url.query,
                                               "ctype": self.headers.get("Content-Type"),
                                               "auth": self.headers.get("Authorization")}))
                elif url.path.startswith("/status/"):
                    self.send(int(url.path.split("/")[2]), "boom", "text/plain")
                elif url.path == "/slow":
                    with outer.lock:
                        outer.in_flight += 1
                        outer.most = max(outer.most, outer.in_flight)
                    if "hold" in q:
                        # answered once hold requests are in flight together
                        # (or after a minute): the count does not depend on
                        # how fast a loaded machine lets them all arrive
                        with outer.lock:
                            if outer.in_flight >= int(q["hold"]):
                                outer.held.set()
                        outer.held.wait(60)
                    else:
                        time.sleep(float(q.get("s", "1")))
                    with outer.lock:
                        outer.in_flight -= 1
                        outer.slow_done += 1
                    self.send(200, '{"slow":true}')
                elif url.path == "/slowbody":
                    self.send_response(200)
                    self.send_header("Content-Length", "10")
                    self.end_headers()
                    for _ in range(10):
                        self.wfile.write(b"x")
                        self.wfile.flush()
                        time.sleep(0.3)
                elif url.path == "/big":
                    self.send(200, b"y" * int(q["n"]), "application/octet-stream")
                elif url.path == "/endless-headers":
                    # headers that never end: the client must stop reading them
                    self.send_response(200)
                    try:
                        for i in range(200000):
                            self.send_header(f"X-Filler-{i}", "z" * 100)
                            if i % 1000 == 999:
                                self.flush_headers()
                        self.end_headers()
                    except OSError:
                        pass  # the client hung up, as it should
                elif url.path == "/redirect":
                    self.send(302, "", "text/plain", extra=[("Location", "/json")])
                else:
                    self.send(404, "{}")

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = handle_any

        class S(ThreadingHTTPServer):
            request_queue_size = 2048
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass  # a client gone mid-answer (a timeout test) is expected

        self.port = free_port()
        self.httpd = S(("127.0.0.1", self.port), Handler)
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*tls)
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


def self_signed():
    d = temp_dir()
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


CALL = """
return {
  deadline = "20s",
  triggers = { webhook { path = "/call" } },
  run = function(ctx)
    local ok, res = pcall(http.request, ctx.payload)
    if not ok then return { error = res } end
    local out = { status = res.status, ok = res.ok, size = #res.body,
                  ctype = res.headers["Content-Type"], multi = res.headers["X-MULTI"] }
    if (out.ctype or ""):find("json") then out.json = res:json() end
    return out
  end,
}"""

PING = """
return { triggers = { webhook { method = "GET", path = "/ping" } }, run = function() return "pong" end }"""

server = Server()


def call(r, **req):
    res = r.request("POST", "/call", req)
    eq(res.status, 200, f"webhook status ({res.body})")
    return res.json()


@test
def get_parses_json_and_reads_headers_in_any_case():
    with Rill({"call.lua": CALL}) as r:
        out = call(r, url=server.url + "/json")
        eq(out["status"], 200, "status")
        eq(out["json"], {"a": 1, "list": [1, 2]}, "json()")
        eq(out["ctype"], "application/json", "Content-Type read as any case")
        eq(out["multi"], "one, two", "a header sent twice")


@test
def json_form_and_query_bodies_are_encoded():
    with Rill({"call.lua": CALL}) as r:
        out = call(r, url=server.url + "/echo", json={"x": [1, 2]}, query={"b": "x y", "a": "é"})
        got = out["json"]
        eq((got["method"], got["ctype"], json.loads(got["body"])), ("POST", "application/json", {"x": [1, 2]}),
           "json body")
        eq(got["query"], "a=%C3%A9&b=x%20y", "query string")
        got = call(r, url=server.url + "/echo", method="PUT", form={"a": 1, "b": "x&y"})["json"]
        eq((got["method"], got["ctype"], got["body"]), ("PUT", "application/x-www-form-urlencoded", "a=1&b=x%26y"),
           "form body")


@test
def an_http_error_status_is_an_answer_not_an_error():
    with Rill({"call.lua": CALL}) as r:
        out = call(r, url=server.url + "/status/503")
        eq((out["status"], out["ok"], out.get("error")), (503, False, None), "503")


@test
def network_errors_name_the_request_the_reason_and_the_time():
    port = free_port()
    with Rill({"call.lua": CALL}) as r:
        err = call(r, url=f"http://127.0.0.1:{port}/x?token=SECRET")["error"]
        assert f"http: GET http://127.0.0.1:{port}/x: " in err and "onnect" in err and "ms)" in err, err
        assert "SECRET" not in err, err
        err = call(r, url=server.url + "/slow?s=3", timeout=0.5)["error"]
        assert "/slow: " in err and "timed out" in err, err
        err = call(r, url=server.url + "/slowbody", timeout=1)["error"]
        assert "/slowbody: " in err and "timed out" in err, err


@test
def response_size_is_limited():
    with Rill({"call.lua": CALL}) as r:
        eq(call(r, url=server.url + "/big?n=3000000")["size"], 3000000, "a 3 MB body")
        err = call(r, url=server.url + "/big?n=3000000", max_size=1000000)["error"]
        assert "response larger than 1000000 bytes" in err, err
        # headers that never end are cut off too (libcurl holds at most 300 KiB of them)
        err = call(r, url=server.url + "/endless-headers")["error"]
        assert "/endless-headers: " in err and "headers" in err, err
        # a response is held outside the run's memory limit: max_string bounds what a flow may ask for
        err = call(r, url=server.url + "/big?n=10", max_size=2 ** 40)["error"]
        assert "max_size 1099511627776 is over max_string" in err, err


@test
def tls_verification_is_on_by_default_and_a_ca_file_or_verify_false_accepts_a_certificate():
    cert, key = self_signed()
    tls = Server(tls=(cert, key))
    with Rill({"call.lua": CALL}) as r:
        err = call(r, url=tls.url + "/json")["error"]
        assert "certificate" in err.lower(), err
        eq(call(r, url=tls.url + "/json", ca_file=cert)["status"], 200, "with the certificate as CA")
        eq(call(r, url=tls.url + "/json", verify=False)["status"], 200, "verify = false")
        r.wait_log(msg_has="verification is OFF", level="warn")


@test
def redirects_are_followed_only_when_asked():
    with Rill({"call.lua": CALL}) as r:
        eq(call(r, url=server.url + "/redirect")["status"], 302, "by default")
        out = call(r, url=server.url + "/redirect", redirects=2)
        eq((out["status"], out["json"]["a"]), (200, 1), "redirects = 2")


@test
def connections_are_reused_across_runs():
    s = Server()
    with Rill({"call.lua": CALL}) as r:
        for _ in range(5):
            eq(call(r, url=s.url + "/json")["status"], 200, "status")
    eq(len(s.ports), 5, "requests")
    eq(len(set(s.ports)), 1, "connections for five runs one after the other")


@test
def requests_are_logged_without_secrets():
    with Rill({"call.lua": CALL}) as r:
        out = call(r, url=server.url + "/echo?token=SECRET", headers={"Authorization": "Bearer SECRET"},
                   body="x")
        eq(out["json"]["auth"], "Bearer SECRET", "the header was sent")
        line = r.wait_log(msg="http")
        eq((line["method"], line["url"], line["status"]), ("POST", server.url + "/echo", 200), "log line")
        assert isinstance(line["ms"], int), line
        # a token in the path (a Slack webhook URL) is not logged either
        eq(call(r, url=server.url + "/status/200/T0001/XoXoXoXoXoSECRET2024")["status"], 200, "status")
        line = r.wait_log(msg="http", status=200, url=server.url + "/status/200/T0001/***")
        assert not [l for l in r.log_lines() if "SECRET" in json.dumps(l)], "a secret in the log"


FAILS = """
return {
  triggers = { webhook { path = "/fails" } },
  run = function(ctx)
    local res = http.get(ctx.payload.url, { timeout = 2 })
    return res.status
  end,
}"""


@test
def unknown_options_and_bad_urls_are_errors_at_the_call():
    port = free_port()
    with Rill({"call.lua": CALL, "fails.lua": FAILS}) as r:
        eq(r.request("POST", "/fails", {"url": f"http://127.0.0.1:{port}/x"}).status, 500, "a failed run")
        r.wait_log(msg_has=f"fails.lua:5: http: GET http://127.0.0.1:{port}/x: ")
        err = call(r, url=server.url + "/json", timeout="soon")["error"]
        assert "timeout must be a number" in err, err
        err = call(r, url=server.url + "/json", tiemout=3)["error"]
        assert 'unknown option "tiemout"' in err, err
        err = call(r, url="ftp://example.org/")["error"]
        assert "url must start with http:// or https://" in err, err


FAN = """
return {
  triggers = { webhook { path = "/fan" } },
  run = function(ctx)
    for i = 1, ctx.payload.n do flows.trigger("fetch", { i = i }, { wait = false }) end
    return "started"
  end,
}"""

FETCH = """
return {
  triggers = { from_flow() },
  run = function(ctx) return http.get(env.SLOW_URL).status end,
}"""


@test
def a_thousand_requests_in_flight_while_webhooks_are_answered():
    s = Server()
    env = {"RILL_HTTP_MAX_PER_HOST": "2000", "SLOW_URL": s.url + "/slow?hold=1000"}
    with Rill({"fan.lua": FAN, "fetch.lua": FETCH, "ping.lua": PING}, env=env) as r:
        eq(r.request("POST", "/fan", {"n": 1000}).status, 200, "fan-out started")
        wait_until(lambda: s.in_flight >= 500, 20, "500 requests in flight")
        eq(r.request("GET", "/ping").json(), "pong", "a webhook answered meanwhile")
        assert s.in_flight > 0, "the webhook was answered while requests were in flight"
        wait_until(lambda: s.slow_done >= 1000, 60, "1000 requests answered")
    eq(s.most, 1000, "most requests in flight at once")


if __name__ == "__main__":
    main()
