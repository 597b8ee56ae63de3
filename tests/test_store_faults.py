"""Faults of what rill writes to: a log reader that stops reading, a store
that stops answering (Postgres stopped, then started again), an SQLite disk
that is full. Webhooks keep answering throughout: an async webhook answers
503 with Retry-After while its event cannot be stored, nothing acknowledged
with 202 is lost, and rill recovers by itself when the store is back."""
import json
import threading

from lib.harness import Rill, eq, main, test, wait_until

CHATTY = """
return {
  triggers = { webhook { method = "POST", path = "/hooks/chatty" } },
  run = function(ctx)
    local pad = string.rep("x", 1000)
    for i = 1, 100 do log.info("a chatty line", { i = i, pad = pad }) end
    return { ok = true }
  end,
}"""


class GatedRill(Rill):
    """A rill whose log reader can be stopped: its stderr pipe then fills."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.reading = threading.Event()
        self.reading.set()

    def _read_logs(self):
        for line in self.proc.stderr:
            self.reading.wait()
            with self._lock:
                self.logs.append(json.loads(line) if line.startswith("{") else {"raw": line})


def metric(r, name):
    body = r.admin("GET", "/metrics").body
    for line in body.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


@test
def a_log_reader_that_stops_reading_stalls_no_webhook():
    with GatedRill({"chatty.lua": CHATTY}, env={"RILL_LOG_BUFFER": "64KiB"}) as r:
        r.reading.clear()  # the reader stops: 64 KiB of pipe, then the log buffer, fill up
        try:
            for i in range(40):  # 4 MB of log lines
                res = r.request("POST", "/hooks/chatty", {}, timeout=20)
                eq(res.status, 200, f"request {i}")
        except BaseException:
            r.reading.set()  # so that rill can stop
            raise
        dropped = metric(r, "rill_log_lines_dropped_total")
        assert dropped and dropped > 0, f"dropped lines counted: {dropped}"
        r.reading.set()  # reading resumes: one line says how many were lost
        line = r.wait_log(timeout=20, msg_has="log lines dropped")
        assert line.get("dropped", 0) > 0, line


if __name__ == "__main__":
    main()
