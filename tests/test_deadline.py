"""Run deadlines: a flow stuck in a loop, or waiting too long, is stopped at
its deadline with a clear error, while rill keeps serving other requests."""
import threading

from lib.harness import Rill, eq, main, test, wait_until

FLOWS = {
    "spin.lua": """
return {
  deadline = "1s",
  triggers = { webhook { path = "/hooks/spin" } },
  run = function(ctx)
    local n = 0
    while true do n = n + 1 end
  end,
}""",
    "stubborn.lua": """
-- Tries to swallow the deadline error with pcall: it must still stop.
return {
  deadline = "1s",
  triggers = { webhook { path = "/hooks/stubborn" } },
  run = function(ctx)
    while true do
      pcall(function() while true do end end)
    end
  end,
}""",
    "waits.lua": """
return {
  deadline = "0.3s",
  triggers = { webhook { path = "/hooks/waits" } },
  run = function(ctx) sleep(30) return "never" end,
}""",
    "slow_handler.lua": """
-- A message handler that computes longer than a time slice: preempting it
-- must not break it (a yield there would be "error in error handling").
return {
  triggers = { webhook { path = "/hooks/slow_handler" } },
  run = function(ctx)
    local ok, e = xpcall(function() local x = nil; return x + 1 end, function(e)
      local t = os.clock() while os.clock() - t < 0.05 do end
      return "handled"
    end)
    return { ok = ok, e = e }
  end,
}""",
    "ping.lua": """
return {
  triggers = { webhook { method = "GET", path = "/hooks/ping" } },
  run = function() return { pong = true } end,
}""",
}


def _while_busy(r, path):
    """Sends a request to a spinning flow, and a ping while it spins; returns
    the spinning request's response and the order in which both finished."""
    order, result = [], {}

    def busy():
        result["res"] = r.request("POST", path, {})
        order.append("busy")

    t = threading.Thread(target=busy)
    t.start()
    wait_until(lambda: r.log_lines(msg="run started", flow=path.rsplit("/", 1)[1]), 5, "the run to start")
    ping = r.request("GET", "/hooks/ping")
    order.append("ping")
    t.join()
    eq(ping.status, 200, "ping answered while a flow spins")
    return result["res"], order


@test
def an_endless_loop_is_stopped_at_the_deadline_and_others_are_served_meanwhile():
    with Rill(FLOWS) as r:
        res, order = _while_busy(r, "/hooks/spin")
        eq(res.status, 504, "the stuck run's answer")
        eq(res.json()["error"], "run exceeded its deadline", "error")
        eq(order, ["ping", "busy"], "ping answered before the loop was stopped")
        line = r.wait_log(level="error", run=res.json()["run_id"])
        assert "deadline exceeded" in line["msg"], line
        assert "spin.lua:" in line["msg"], "the message says where the code was: " + line["msg"]


@test
def pcall_cannot_swallow_the_deadline():
    with Rill(FLOWS) as r:
        res, _ = _while_busy(r, "/hooks/stubborn")
        eq(res.status, 504, "status")


@test
def a_message_handler_longer_than_a_slice_is_not_broken():
    with Rill(FLOWS) as r:
        res = r.request("POST", "/hooks/slow_handler", {})
        eq(res.status, 200, "status")
        eq(res.json(), {"ok": False, "e": "handled"}, "what the handler returned")


@test
def a_run_waiting_past_its_deadline_is_stopped():
    with Rill(FLOWS) as r:
        res = r.request("POST", "/hooks/waits", {})
        eq(res.status, 504, "status")
        line = r.wait_log(level="error", run=res.json()["run_id"])
        assert "deadline exceeded while waiting" in line["msg"], line
        # The loop is healthy afterwards.
        eq(r.request("GET", "/hooks/ping").status, 200, "ping")


@test
def a_flow_file_that_loops_at_load_time_is_rejected_not_fatal():
    flows = dict(FLOWS)
    flows["hang.lua"] = "while true do end\nreturn {}"
    with Rill(flows, env={"RILL_LOAD_DEADLINE": "0.5s"}) as r:
        line = r.wait_log(msg_has="flow rejected")
        assert "hang.lua" in line["msg"] and "deadline exceeded" in line["msg"], line
        eq(r.request("GET", "/hooks/ping").status, 200, "the other flows serve")


if __name__ == "__main__":
    main()
