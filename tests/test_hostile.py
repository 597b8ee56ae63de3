"""Hostile flows (tests/hostile/): each tries to outlive its deadline, take
the process's memory, hold the loop, flood the log or fail in a way that
looks like success. Each must end as a failed run with a readable error, by
its deadline plus a small grace, under `rill run` (exit 1) and under
`rill serve` (a 5xx naming the run) while another webhook keeps answering;
rill itself never exits, except through the last line of defence (exit_*).

The time bounds below are liveness bounds (a run that is never stopped
fails them), generous on purpose: the machine is shared and loaded."""
import json
import os
import re
import shutil
import threading
import time

from lib.harness import RILL, ROOT, Rill, eq, main, rss_mb, run_cli, temp_dir, test, wait_until

HOSTILE = os.path.join(ROOT, "tests", "hostile")
PREFIXES = ("dl_", "hold_", "mem_", "err_", "fair_", "log_")
MAX_LOG_LINES = 200
# A small run memory limit keeps the memory cases quick; the grace is the
# last line of defence's, kept short so that exit_* does not wait long.
# max_string as it was before 8 MiB: the mem_ cases build strings of tens of MB
# to reach the memory limit, not the per-call one.
ENV = {"RILL_RUN_MEMORY_LIMIT": "64MiB", "RILL_KILL_GRACE": "3s", "RILL_MAX_LOG_LINES": str(MAX_LOG_LINES),
       "RILL_MAX_STRING": "64MiB"}
SLACK = 20  # seconds past a run's deadline by which it must have ended (liveness, not speed)
# After a run limited to 64 MiB, rill's RSS comes back within this of where
# it started: LuaJIT's arena keeps the pages of freed small blocks it cannot
# give back (up to a run's limit, reused by the next runs: architecture.md),
# so the bound is the limit and a margin, and a case that left more behind
# makes the next ones fail
RSS_BACK_MB = 96

PING = """
return {
  triggers = { webhook { method = "GET", path = "/hooks/ping" } },
  run = function() return { pong = true } end,
}"""


def header(path, key):
    with open(path) as f:
        for line in f:
            m = re.match(r"--\s*" + key + r":\s*(.*)", line)
            if m:
                return m.group(1).strip()
    raise AssertionError(f"{path} has no '-- {key}:' line")


def deadline_of(path):
    with open(path) as f:
        m = re.search(r'deadline = "(\d+)s"', f.read())
    return int(m.group(1)) if m else 2


def cases(prefixes=PREFIXES):
    out = []
    for name in sorted(os.listdir(HOSTILE)):
        if name.endswith(".lua") and name.startswith(prefixes):
            path = os.path.join(HOSTILE, name)
            out.append((name[:-4], header(path, "expect"), deadline_of(path)))
    assert out, "no hostile flows found"
    return out


def flows_dir(prefixes=PREFIXES, extra=None):
    d = temp_dir("rill-hostile-")
    for name in os.listdir(HOSTILE):
        if name.endswith(".lua") and name.startswith(prefixes):
            shutil.copy(os.path.join(HOSTILE, name), d)
    for name, src in (extra or {}).items():
        with open(os.path.join(d, name), "w") as f:
            f.write(src)
    return d


class Pinger:
    """Calls GET /hooks/ping in a loop on a thread; keeps every status and latency."""

    def __init__(self, r):
        self.r, self.results, self.stop = r, [], threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self.stop.is_set():
            t0 = time.time()
            try:
                status = self.r.request("GET", "/hooks/ping", timeout=30).status
            except OSError as e:
                status = repr(e)
            self.results.append((status, time.time() - t0))

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=40)

    def count(self):
        return len(self.results)

    def p99_ms(self):
        lat = sorted(l for _, l in self.results)
        return lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000 if lat else float("nan")


@test
def every_hostile_flow_fails_readably_under_rill_run():
    d = flows_dir()
    for name, expect, deadline in cases():
        t0 = time.time()
        code, out, err = run_cli("run", name, "--flows", d, env=ENV, timeout=deadline + SLACK + 30)
        took = time.time() - t0
        print(f"     rill run {name}: exit {code} in {took:.1f}s (deadline {deadline}s)")
        eq(code, 1, f"{name}: exit code (stdout {out!r}, stderr {err[-500:]!r})")
        res = json.loads(out.strip().splitlines()[-1])
        assert expect in res["error"], f"{name}: error {res['error']!r} should contain {expect!r}"
        assert res.get("run_id"), f"{name}: no run_id in {res}"
        assert took < deadline + SLACK, f"{name}: took {took:.1f}s, deadline {deadline}s"


@test
def every_hostile_flow_fails_under_serve_while_another_webhook_answers():
    with Rill({"ping.lua": PING}, env=ENV) as r:
        for name in os.listdir(HOSTILE):
            if name.endswith(".lua") and name.startswith(PREFIXES):
                with open(os.path.join(HOSTILE, name)) as f:
                    r.write_flow(name, f.read())
        all_cases = cases()
        wait_until(lambda: all(r.log_lines(msg="flow loaded", file=os.path.join(r.flows_dir, n + ".lua"))
                               for n, _, _ in all_cases), 20, "every hostile flow to load")
        base = rss_mb(r.proc.pid)
        with Pinger(r) as pinger:
            for name, expect, deadline in all_cases:
                before = pinger.count()
                t0 = time.time()
                res = r.request("POST", "/hooks/" + name, {}, timeout=deadline + SLACK + 30)
                took = time.time() - t0
                body = res.json()
                print(f"     serve {name}: {res.status} in {took:.1f}s, {pinger.count() - before} pings meanwhile,"
                      f" RSS {rss_mb(r.proc.pid):.0f} MB")
                assert 500 <= res.status < 600, f"{name}: status {res.status} {body}"
                assert body.get("run_id"), f"{name}: no run_id in {body}"
                if name.startswith("mem_") and expect == "memory limit":
                    eq(body.get("error"), "run exceeded its memory limit", f"{name}: the answer's error")
                line = r.wait_log(level="error", run=body["run_id"], msg_has="run failed")
                assert expect in line["msg"], f"{name}: {line['msg']!r} should contain {expect!r}"
                assert took < deadline + SLACK, f"{name}: took {took:.1f}s, deadline {deadline}s"
                assert r.proc.poll() is None, f"rill exited after {name}"
                # ASan's quarantine keeps freed memory: RSS says nothing there
                if name.startswith(("mem_", "fair_")) and "asan" not in RILL:
                    t1 = time.time()
                    wait_until(lambda: rss_mb(r.proc.pid) < base + RSS_BACK_MB, 30,
                               f"RSS back under {base + RSS_BACK_MB:.0f} MB after {name} (now {rss_mb(r.proc.pid):.0f})")
                    print(f"     {name}: RSS back to {rss_mb(r.proc.pid):.0f} MB {time.time() - t1:.1f}s after the answer")
                if name == "log_flood":
                    lines = [l for l in r.log_lines(run=body["run_id"]) if l.get("msg", "").startswith("line ")]
                    assert len(lines) <= MAX_LOG_LINES, f"{len(lines)} lines of the flood were written"
                    r.wait_log(run=body["run_id"], msg_has="max_log_lines")
                # the other webhook answered while this one ran (at least once)
                wait_until(lambda: pinger.count() > before, 30, f"a ping answered after {name}")
        bad = [s for s, _ in pinger.results if s != 200]
        print(f"     ping: {pinger.count()} requests, p99 {pinger.p99_ms():.1f} ms, RSS {base:.0f} MB at start,"
              f" {rss_mb(r.proc.pid):.0f} MB at the end")
        eq(bad, [], "every ping answered 200")
        assert pinger.count() > 0
        metrics = r.admin("GET", "/metrics").body
        for name, expect, _ in all_cases:
            limit = {"mem_": "memory", "hold": "hold", "dl_": "deadline", "fair": "deadline", "log_": "deadline"}.get(name[:4])
            if limit and expect != "max_string":  # refused before it was built: an ordinary error
                line = f'rill_runs_stopped_total{{flow="{name}",limit="{limit}"}} 1'
                assert line in metrics, f"/metrics lacks {line}"
        assert f'rill_run_log_lines_dropped_total{{flow="log_flood"}}' in metrics


@test
def code_stuck_in_c_past_its_deadline_exits_rill_naming_the_run():
    env = dict(ENV, RILL_TEST_SPIN_C="1")
    with Rill({"ping.lua": PING}, env=env) as r:
        with open(os.path.join(HOSTILE, "exit_c_spin.lua")) as f:
            r.write_flow("exit_c_spin.lua", f.read())
        r.wait_log(msg="flow loaded", file=os.path.join(r.flows_dir, "exit_c_spin.lua"))
        try:
            r.request("POST", "/hooks/exit_c_spin", {}, timeout=60)
        except OSError:
            pass  # the process exited with the request open
        assert r.wait_exit(60) != 0, f"exit code {r.proc.returncode}"
        lines = [l for l in r.logs if "could not be stopped" in json.dumps(l)]
        eq(len(lines), 1, f"one last line ({r.logs[-3:]})")
        text = json.dumps(lines[0])
        assert "exit_c_spin" in text and "run" in text, text
    d = flows_dir(("exit_",))
    code, out, err = run_cli("run", "exit_c_spin", "--flows", d, env=env, timeout=60)
    assert code not in (0, 1) or "could not be stopped" in err, (code, err)
    assert code != 0 and "could not be stopped" in err and "exit_c_spin" in err, (code, err)


STUCK_DURABLE = """
-- attempt 1 gets stuck in C (when rill runs with RILL_TEST_SPIN_C=1); a
-- later one, after the restart, completes
return {
  deadline = "1s",
  triggers = { webhook { path = "/hooks/stuck", mode = "async" } },
  run = function(ctx)
    if ctx.attempt == 1 and _test_spin_c then _test_spin_c(120) end
    log.info("durable run done", { attempt = ctx.attempt })
    return { attempt = ctx.attempt }
  end,
}"""


@test
def a_durable_run_stuck_in_c_is_taken_over_after_the_exit_as_after_kill_9():
    d = temp_dir("rill-hostile-durable-")
    env = dict(ENV, RILL_LEASE="2s", RILL_POLL_INTERVAL="0.2s", RILL_RETRY_BACKOFF="0s")
    with Rill({"stuck.lua": STUCK_DURABLE}, env=dict(env, RILL_TEST_SPIN_C="1"), dir=d) as r:
        res = r.request("POST", "/hooks/stuck", {})
        eq(res.status, 202, "accepted")
        run_id = res.json()["run_id"]
        assert r.wait_exit(60, "rill to exit (last line of defence)") != 0
        assert any("could not be stopped" in json.dumps(l) and run_id in json.dumps(l) for l in r.logs), r.logs[-3:]
    with Rill(None, env=env, dir=d) as r:
        line = r.wait_log(msg="durable run done", run=run_id, timeout=60)
        assert line.get("attempt", 0) >= 2, line


STUCK_AT_LOAD = """
-- top-level code stuck in C (with RILL_TEST_SPIN_C=1)
_test_spin_c(120)
return {}
"""


@test
def a_flow_file_stuck_in_c_at_load_exits_rill_once_then_stays_unloaded():
    d = temp_dir("rill-hostile-load-")
    env = dict(ENV, RILL_TEST_SPIN_C="1", RILL_LOAD_DEADLINE="0.5s")
    with Rill({"ping.lua": PING}, env=env, dir=d) as r:
        r.write_flow("stuck.lua", STUCK_AT_LOAD)
        eq(r.wait_exit(60, "rill to exit (last line of defence)"), 70, "exit code")
        assert any("the top-level code of" in json.dumps(l) and "stuck.lua" in json.dumps(l) for l in r.logs), r.logs[-3:]
    with Rill(None, env=env, dir=d) as r:
        line = r.wait_log(msg_has="flow rejected")
        assert "stuck.lua" in line["msg"] and "not loaded" in line["msg"], line
        eq(r.request("GET", "/hooks/ping").status, 200, "the other flows serve")
        before = r.reloads()
        r.write_flow("stuck.lua", PING.replace("/hooks/ping", "/hooks/fixed"))
        r.wait_reload(before)
        wait_until(lambda: r.request("GET", "/hooks/fixed").status == 200, 10, "the changed file to load")


@test
def max_hold_ends_flows_code_only_not_rills_own_start():
    # max_hold bounds a run's code that cannot be paused; rill's own tasks
    # (serve's start loads modules inside require, a C call) have no
    # deadline and are not held to it: with a max_hold that start exceeds
    # (as 1 s did on a starved machine, and under valgrind), rill exited 1
    # at start ("held the loop longer than max_hold ... at
    # stdlib/rill/connectors/email.lua:20")
    env = dict(ENV, RILL_MAX_HOLD="1ms")
    with Rill({"ping.lua": PING}, env=env) as r:
        res = r.request("GET", "/hooks/ping", timeout=10)
        eq(res.status, 200, "a webhook of rill started with max_hold = 1ms")
    d = flows_dir(("hold_xpcall",))
    code, out, err = run_cli("run", "hold_xpcall_handler", "--flows", d, env=env, timeout=60)
    eq(code, 1, f"the hostile run still fails (stderr {err[-300:]!r})")
    res = json.loads(out.strip().splitlines()[-1])
    assert "max_hold (0.001 s)" in res["error"], res["error"]
    # a run under no deadline at all (deadline = 0) is still a flow's code
    d2 = temp_dir()
    with open(os.path.join(d2, "nodl.lua"), "w") as f:
        f.write("return { triggers = { manual() }, run = function()\n"
                "  while true do xpcall(error, function() while true do end end) end\nend }\n")
    code, out, err = run_cli("run", "nodl", "--flows", d2, env=dict(env, RILL_DEADLINE="0s"), timeout=60)
    eq(code, 1, f"the run without a deadline fails (stderr {err[-300:]!r})")
    res = json.loads(out.strip().splitlines()[-1])
    assert "max_hold (0.001 s)" in res["error"], res["error"]


@test
def hostile_top_level_code_is_rejected_by_rill_check():
    d = os.path.join(HOSTILE, "load")
    # load_memory reaches a 16 MiB limit well within the load deadline; 64 MiB
    # took past it on a loaded machine (deadline, not memory, was named)
    code, out, err = run_cli("check", d, env=dict(ENV, RILL_RUN_MEMORY_LIMIT="16MiB"), timeout=120)
    eq(code, 1, f"rill check exit code ({err})")
    for name in sorted(os.listdir(d)):
        expect = header(os.path.join(d, name), "expect")
        msgs = [l for l in err.splitlines() if name in l]
        assert msgs and expect in msgs[0], f"{name}: {msgs} should say {expect!r}"


if __name__ == "__main__":
    main()
