"""Several rill processes on one port (reuse_port = true, SO_REUSEPORT): the
kernel spreads new connections between them, one of them stopping leaves
the others serving every request, and without the setting a second process
on a port in use stops at start with a clear message."""
import time

from lib.harness import Rill, eq, main, test, wait_until

WHO = """
return {
  triggers = { webhook { method = "POST", path = "/hooks/who" } },
  run = function(ctx)
    log.info("served here")
    return { ok = true }
  end,
}"""

ENV = {"RILL_REUSE_PORT": "true", "RILL_LOG_LEVEL": "info"}


def pair(env):
    a = Rill({"who.lua": WHO}, env=env)
    b = Rill({"who.lua": WHO}, env=env)
    b.port = a.port  # the same webhook port (each its own admin port and store)
    return a, b


@test
def two_processes_share_the_port_and_one_stopping_leaves_the_other_serving():
    a, b = pair(ENV)
    with a:
        with b:
            b.wait_log(msg_has="serving")
            for _ in range(40):  # a new connection each: the kernel picks a process for each
                eq(a.request("POST", "/hooks/who", {}).status, 200, "served")
            def served():  # rill's log is read as it comes: the last lines may still be on their way
                return len(a.log_lines(msg="served here")), len(b.log_lines(msg="served here"))
            wait_until(lambda: sum(served()) >= 40, 5, "the log lines of 40 requests")
            time.sleep(0.2)
            na, nb = served()
            eq(na + nb, 40, "every request served once")
            assert na > 0 and nb > 0, f"both processes serve: {na} and {nb}"
        eq(b.proc.returncode, 0, "the stopped one exited 0")
        before = len(a.log_lines(msg="served here"))
        for _ in range(20):
            eq(a.request("POST", "/hooks/who", {}).status, 200, "served after the other stopped")
        wait_until(lambda: len(a.log_lines(msg="served here")) - before >= 20, 5, "20 more log lines")
        time.sleep(0.2)
        eq(len(a.log_lines(msg="served here")) - before, 20, "all by the one left")


@test
def without_reuse_port_a_second_process_on_the_port_stops_with_a_message():
    a, b = pair({"RILL_LOG_LEVEL": "info"})
    with a:
        try:
            b.__enter__()  # returns at once when the port answers (process a) before b exits
        except AssertionError:
            pass  # b exited first
        code = b.proc.wait(timeout=10)
        eq(code, 2, "exit code of the second process")
        b._reader.join(timeout=5)
        text = " ".join(str(l) for l in b.logs)
        assert f"cannot listen on 127.0.0.1:{a.port}: address already in use" in text, text
        b.__exit__(None, None, None)
        eq(a.request("POST", "/hooks/who", {}).status, 200, "the first one still serves")


if __name__ == "__main__":
    main()
