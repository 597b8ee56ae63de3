#!/usr/bin/env python3
"""bench/start.py: start to ready (issue 16): the time from exec to /readyz
answering 200, for `rill serve` with N flows (default 100: webhooks, crons and
manual flows) on an existing SQLite store. Runs ROUNDS starts (default 10)
and prints each and the median. Usage: bench/start.py [--flows N] [--rounds R]
[--rill build/rill]. Polls /readyz every 1 ms over a raw socket (no client
process per poll). Also prints the CPU time rill took until ready (every
thread, from /proc/PID/task/*/schedstat): on a shared machine the wall time
swings with the load, the CPU time much less."""
import argparse
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def flow(i):
    kind = i % 4
    if kind == 0:
        trig = f'webhook {{ method = "POST", path = "/hooks/f{i}" }}'
    elif kind == 1:
        trig = (f'webhook {{ method = "POST", path = "/hooks/f{i}", mode = "async", '
                f'signature = {{ scheme = "hmac-sha256", header = "X-Sig", secret = "s{i}" }} }}')
    elif kind == 2:
        trig = f'cron "{i % 60} 3 * * *"'
    else:
        trig = "manual {}"
    return f"""-- bench flow {i}
local json = require "rill.json"
return {{
  triggers = {{ {trig} }},
  run = function(ctx)
    local total = 0
    for _, line in ipairs(ctx.payload.lines or {{}}) do total = total + (line.qty or 0) * (line.price or 0) end
    log.info("flow {i}", {{ total = total }})
    return {{ total = total, echo = json.encode(ctx.payload) }}
  end,
}}
"""


def ready(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"GET /readyz HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def cpu_ms(pid):
    """CPU time of every thread of pid so far (schedstat: ns on a CPU)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except OSError:
            pass
    return total / 1e6


def start_once(rill, work, env):
    port, admin = free_port(), free_port()
    env = dict(env, RILL_ADMIN_LISTEN=f"127.0.0.1:{admin}")
    t0 = time.perf_counter()
    p = subprocess.Popen([rill, "serve", "--flows", os.path.join(work, "flows"), "--listen", f"127.0.0.1:{port}"],
                         cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not ready(admin):
            if p.poll() is not None:
                raise SystemExit(f"start: rill exited with {p.returncode}")
            if time.perf_counter() - t0 > 60:
                raise SystemExit("start: not ready in 60 s")
            time.sleep(0.001)
        return (time.perf_counter() - t0) * 1000, cpu_ms(p.pid)
    finally:
        p.terminate()
        p.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--flows", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--rill", default=os.path.join(ROOT, "build", "rill"))
    a = ap.parse_args()
    a.rill = os.path.abspath(a.rill)
    work = tempfile.mkdtemp(prefix="rill-start-")
    try:
        os.makedirs(os.path.join(work, "flows"))
        for i in range(a.flows):
            with open(os.path.join(work, "flows", f"f{i:03d}.lua"), "w") as f:
                f.write(flow(i))
        env = dict(os.environ, RILL_LOG_LEVEL="warn", RILL_STORE=os.path.join(work, "rill.db"))
        start_once(a.rill, work, env)  # creates the store: the rounds start on an existing one
        rounds = [start_once(a.rill, work, env) for _ in range(a.rounds)]
        times, cpu = [r[0] for r in rounds], [r[1] for r in rounds]
        print("start to ready, %d flows, existing SQLite store: %s ms (CPU %s ms)"
              % (a.flows, " ".join("%.0f" % t for t in times), " ".join("%.0f" % c for c in cpu)))
        print("RESULT flows=%d median_ms=%.1f min_ms=%.1f cpu_median_ms=%.1f"
              % (a.flows, statistics.median(times), min(times), statistics.median(cpu)))
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
