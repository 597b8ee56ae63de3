"""How long one string builder holds the loop: a flow calls string.rep,
table.concat or string.format at the largest size max_string allows, over
and over for SECONDS, while a client calls another webhook (GET /hooks/ping,
one at a time); prints the pings' p50, p99 and max latency per builder,
alone first, and beside a run that spins in Lua (the floor: the watchdog's
slices and the machine's own scheduling). Figures, never pass/fail.
  python3 bench/builder-stall.py [--max-string 16MiB] [--seconds 5] [--rill build/rill]"""
import argparse
import os
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from lib import harness  # noqa: E402

PING = """
return {
  triggers = { webhook { method = "GET", path = "/hooks/ping" } },
  run = function() return { pong = true } end,
}"""

# Finds the largest size allowed (max_string refuses over it), then builds it
# until the deadline ends the run.
BUILD = """
return {
  deadline = "%ds",
  triggers = { webhook { path = "/hooks/build" } },
  run = function(ctx)
    local what, n = ctx.payload.what, 2 ^ 27 -- over any max_string measured
    if what == "spin" then -- the floor: Lua code alone, preempted every slice
      log.info("building", { what = what, bytes = 0 })
      while true do end
    end
    local piece, pieces, args = ("0123456789abcdef"), {}, {}
    local function build(size)
      if what == "rep" then return ("x"):rep(size) end
      if what == "concat" then
        for i = #pieces + 1, size / 16 do pieces[i] = piece end
        return table.concat(pieces, "", 1, size / 16)
      end
      local one = ("y"):rep(2 ^ 20)
      for i = 1, size / 2 ^ 20 do args[i] = one end
      return string.format(("%%s"):rep(size / 2 ^ 20), unpack(args, 1, size / 2 ^ 20))
    end
    while not pcall(string.rep, "x", n) do n = n / 2 end -- refused before it is built
    if what == "format" then n = n / 2 end -- its estimate counts the format too
    log.info("building", { what = what, bytes = n })
    while true do local s = build(n) end
  end,
}"""


def pings(r, stop, out):
    while not stop.is_set():
        t0 = time.time()
        r.request("GET", "/hooks/ping", timeout=60)
        out.append(time.time() - t0)


def figures(lat):
    lat = sorted(lat)
    q = lambda p: lat[min(len(lat) - 1, int(len(lat) * p))] * 1000
    return f"{len(lat):5d} pings  p50 {q(0.5):7.1f} ms  p99 {q(0.99):7.1f} ms  max {lat[-1] * 1000:7.1f} ms"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-string", default=None)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--rill", default=None)
    a = ap.parse_args()
    if a.rill:
        harness.RILL = os.path.abspath(a.rill)
    env = {"RILL_MAX_STRING": a.max_string} if a.max_string else {}
    with harness.Rill({"ping.lua": PING, "build.lua": BUILD % a.seconds}, env=env) as r:
        for _ in range(50):
            r.request("GET", "/hooks/ping")
        stop, lat = threading.Event(), []
        t = threading.Thread(target=pings, args=(r, stop, lat))
        t.start()
        time.sleep(a.seconds)
        stop.set()
        t.join()
        print(f"max_string {a.max_string or 'default'}: alone          {figures(lat)}")
        for what in ("spin", "rep", "concat", "format"):
            stop, lat = threading.Event(), []
            t = threading.Thread(target=pings, args=(r, stop, lat))
            t.start()
            r.request("POST", "/hooks/build", {"what": what}, timeout=a.seconds + 60)
            stop.set()
            t.join()
            line = r.wait_log(msg="building", what=what, timeout=30)
            print(f"max_string {a.max_string or 'default'}: {what:6s} {line['bytes'] / 2**20:4.0f} MiB {figures(lat)}")


if __name__ == "__main__":
    main()
