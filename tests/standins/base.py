"""base.py: what the HTTP stand-ins share. A stand-in is a ThreadingHTTPServer
on a free loopback port: start() / stop() (or `with`), .url, and .requests,
the list of every request received (Recorded: method, path, query, headers
with lower-case names, raw body, parsed json), rejected ones included.
A subclass declares its routes as (METHOD, regex, handler) and answers
(status, body) with body a dict/list (sent as JSON) or a str (text/plain).
fail_next(status, body) makes the next request that reaches a route answer
that instead (a service outage, a rate limit) before the route runs."""
import json
import random
import re
import string
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class Recorded:
    def __init__(self, method, path, query, headers, body):
        self.method, self.path, self.query, self.headers, self.body = method, path, query, headers, body
        try:
            self.json = json.loads(body) if body else None
        except ValueError:
            self.json = None

    def __repr__(self):
        return f"<{self.method} {self.path} {self.body[:200]!r}>"


def hashed_id(n=10):
    """An id shaped like Invoice Ninja's hashed ids (letters and digits)."""
    return "".join(random.choice(string.ascii_letters + string.digits) for _ in range(n))


class HttpStandin:
    name = "service"
    routes = ()  # (METHOD, regex on the path, method name)

    def __init__(self, port=0):
        self.requests = []
        self.lock = threading.Lock()
        self._failures = []
        self._port = port
        self.httpd = None

    # ---- lifecycle ----
    def start(self):
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _any(self):
                outer._serve(self)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self._port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def stop(self):
        if self.httpd:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    # ---- for tests ----
    def fail_next(self, status, body=None, headers=None):
        with self.lock:
            self._failures.append((status, body if body is not None else {"error": "injected"}, headers or {}))

    def received(self, method=None, path=None):
        """The recorded requests, those matching method and path (a regex) only."""
        with self.lock:
            reqs = list(self.requests)
        return [r for r in reqs if (method is None or r.method == method)
                and (path is None or re.fullmatch(path, r.path))]

    def clear(self):
        with self.lock:
            self.requests.clear()

    # ---- serving ----
    def authorized(self, req):
        """True when the request carries the right credentials (subclasses)."""
        return True

    def unauthorized(self, req):
        return 401, {"error": "unauthorized"}

    def _serve(self, h):
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        parts = urlsplit(h.path)
        req = Recorded(h.command, parts.path, parse_qs(parts.query),
                       {k.lower(): v for k, v in h.headers.items()}, body)
        with self.lock:
            self.requests.append(req)
        status, payload, headers = self._answer(req)
        if isinstance(payload, (dict, list)):
            data, ctype = json.dumps(payload).encode(), "application/json"
        else:
            data, ctype = str(payload).encode(), "text/plain; charset=utf-8"
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(data)))
        for k, v in headers.items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(data)

    def _answer(self, req):
        for method, pattern, fn in self.routes:
            m = re.fullmatch(pattern, req.path)
            if m and method == req.method:
                with self.lock:
                    failure = self._failures.pop(0) if self._failures else None
                if failure:
                    return failure
                if not self.authorized(req):
                    return (*self.unauthorized(req), {})
                with self.lock:
                    r = getattr(self, fn)(req, *m.groups())
                return r if len(r) == 3 else (*r, {})
        return 404, self.not_found(req), {}

    def not_found(self, req):
        return {"error": "no route " + req.method + " " + req.path}
