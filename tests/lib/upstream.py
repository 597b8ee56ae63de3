"""upstream.py: a stand-in service for flows to call, and a flow that
depends on it (the admin API and console tests)."""
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Upstream:
    """A stand-in service the flows call: answers GET /check with the status
    the test sets (500 until told otherwise), counting the calls."""

    def __init__(self):
        self.status = 500
        self.calls = 0
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_GET(self):
                outer.calls += 1
                body = json.dumps({"ok": outer.status == 200}).encode()
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/check"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


# Fails while the upstream answers an error, succeeds once it answers 200;
# dead after one attempt, so the admin's retry is what runs it again.
CHECKED = """
return {
  triggers = { webhook { path = "/hooks/checked", mode = "async" } },
  retries = { attempts = 1 },
  run = function(ctx)
    local step_result = step("prepare", function() return { prepared = ctx.payload.n } end)
    log.info("calling upstream", { n = ctx.payload.n })
    local r = http.get(env.UPSTREAM_URL)
    if not r.ok then error("upstream answered " .. r.status) end
    return { n = ctx.payload.n, prepared = step_result.prepared }
  end,
}"""
