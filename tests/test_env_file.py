"""Secrets and environment without a restart: env_file (dotenv) is read at
start, again on SIGHUP and when it changes; its secret values are masked in
logs, the admin API and `rill runs show`; a secret a flow names that is not
set is reported by `rill check` and named by /readyz (which stays ready)."""
import http.server
import os
import signal
import threading

from lib.harness import Rill, eq, main, run_cli, temp_dir, test, wait_until

TOKEN = "t0ken-for-tests"

HOOK = """
local check = signatures.shared_secret { header = "X-Hook-Token", secret = "HOOK_SECRET" }
return {
  triggers = { webhook { path = "/hooks/in", verify = check } },
  run = function(ctx) return { ok = true } end,
}
"""

LEAKY = """
return {
  triggers = { webhook { path = "/hooks/leaky", mode = "async" } },
  run = function(ctx)
    local token = env.API_TOKEN
    log.info("calling with " .. token)
    return { token = token, plain = env.PLAIN_VALUE }
  end,
}
"""

OTHER = """
return { triggers = { webhook { path = "/hooks/other" } }, run = function() return { fine = true } end }
"""


def write(path, text):
    tmp = path + ".tmp~"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


def readyz(r):
    res = r.admin("GET", "/readyz")
    return res.status, res.json()


# reads A, waits until the test says go (GET URL answers "go"), reads B
PINNED = """
return {
  deadline = "60s",
  triggers = { webhook { path = "/hooks/pinned" } },
  run = function(ctx)
    local a = env.PAIR_A
    log.info("read A")
    -- a failed poll (a loaded machine's refused connect) polls again
    while true do
      local ok, res = pcall(http.get, env.GO_URL)
      if ok and res.body == "go" then break end
      sleep(0.02)
    end
    return { a = a, b = env.PAIR_B, late = env.LATE_ONLY }
  end,
}
"""


@test
def a_run_reads_one_version_of_the_env_file_however_often_it_is_read_again():
    go = {"body": b"wait"}

    class Go(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(go["body"])))
            self.end_headers()
            self.wfile.write(go["body"])

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Go)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    r = Rill({"pinned.lua": PINNED})
    env_file = os.path.join(r.dir, "pair.env")
    write(env_file, f"PAIR_A=1\nPAIR_B=1\nGO_URL=http://127.0.0.1:{srv.server_address[1]}/\n")
    r.env["RILL_ENV_FILE"] = env_file
    try:
        with r:
            r.wait_ready()
            answer = {}
            t = threading.Thread(target=lambda: answer.update(res=r.request("POST", "/hooks/pinned", {}, timeout=90)))
            t.start()
            wait_until(lambda: r.log_lines(msg="read A"), 20, "the run to read A")
            n = len(r.log_lines(msg_has="env_file read"))
            write(env_file, f"PAIR_A=2\nPAIR_B=2\nLATE_ONLY=x\nGO_URL=http://127.0.0.1:{srv.server_address[1]}/\n")
            r.signal(signal.SIGHUP)
            wait_until(lambda: len(r.log_lines(msg_has="env_file read")) > n, 10, "the env_file read again")
            go["body"] = b"go"
            t.join(90)
            got = answer["res"].json()
            why = r.runs("show", got["run_id"]) if "run_id" in got else ""
            eq(got, {"a": "1", "b": "1"}, f"the run's values: all from the file it started with ({why})")
            eq(r.request("POST", "/hooks/pinned", {}, timeout=90).json(), {"a": "2", "b": "2", "late": "x"},
               "a new run: the new file")
    finally:
        srv.shutdown()


@test
def a_missing_secret_is_named_by_readyz_and_sighup_reads_the_file_again():
    r = Rill({"hook.lua": HOOK, "other.lua": OTHER})
    env_file = os.path.join(r.dir, "secrets.env")
    write(env_file, "# no secret yet\nPLAIN_VALUE=x\n")
    r.env["RILL_ENV_FILE"] = env_file
    with r:
        r.wait_ready()
        status, body = readyz(r)
        eq(status, 200, "ready: the other flows serve")
        assert any("HOOK_SECRET" in m and "hook" in m for m in body.get("missing_env", [])), body
        eq(r.request("POST", "/hooks/in", {}, {"X-Hook-Token": "s3cret-value-1"}).status, 401, "no secret yet")
        eq(r.request("POST", "/hooks/other", {}).status, 200, "another flow serves")
        write(env_file, "PLAIN_VALUE=x\nexport HOOK_SECRET=\"s3cret-value-1\"  # set now\n")
        n = len(r.log_lines(msg_has="env_file read"))
        r.signal(signal.SIGHUP)
        wait_until(lambda: len(r.log_lines(msg_has="env_file read")) > n, 10, "the env_file read again")
        eq(r.request("POST", "/hooks/in", {}, {"X-Hook-Token": "s3cret-value-1"}).status, 200, "the secret is seen")
        status, body = readyz(r)
        eq(body.get("missing_env"), None, "nothing missing any more: " + str(body))


@test
def a_changed_env_file_is_read_without_a_signal():
    r = Rill({"hook.lua": HOOK})
    env_file = os.path.join(r.dir, "secrets.env")
    write(env_file, "HOOK_SECRET=first-s3cret\n")
    r.env["RILL_ENV_FILE"] = env_file
    with r:
        eq(r.request("POST", "/hooks/in", {}, {"X-Hook-Token": "first-s3cret"}).status, 200, "first")
        write(env_file, "HOOK_SECRET=second-s3cret\n")
        wait_until(lambda: r.request("POST", "/hooks/in", {}, {"X-Hook-Token": "second-s3cret"}).status == 200,
                   10, "the changed secret to be used")
        eq(r.request("POST", "/hooks/in", {}, {"X-Hook-Token": "first-s3cret"}).status, 401, "the old one is gone")
        # a broken file is refused naming its line; the values in force stay
        n = len(r.log_lines(msg_has="env_file not read"))
        write(env_file, "HOOK_SECRET=third-s3cret\nthis is not a variable\n")
        r.signal(signal.SIGHUP)
        line = wait_until(lambda: r.log_lines(msg_has="env_file not read")[n:], 10, "the error")[0]
        assert "secrets.env:2:" in line["msg"] + str(line.get("error")), line
        eq(r.request("POST", "/hooks/in", {}, {"X-Hook-Token": "second-s3cret"}).status, 200, "kept")


@test
def env_file_secrets_are_masked_in_logs_the_admin_api_and_runs_show():
    secret = "sup3r-s3cret-t0ken"
    r = Rill({"leaky.lua": LEAKY}, env={"RILL_ADMIN_TOKEN": TOKEN})
    env_file = os.path.join(r.dir, "secrets.env")
    write(env_file, f"API_TOKEN='{secret}'\nPLAIN_VALUE=visible-value\n")
    r.env["RILL_ENV_FILE"] = env_file
    with r:
        run_id = r.request("POST", "/hooks/leaky", {}).json()["run_id"]
        wait_until(lambda: r.runs("show", run_id)["state"] == "succeeded", 10, "the run")
        r.wait_log(msg_has="calling with")
        logs = "\n".join(map(str, r.logs))
        assert secret not in logs, "the secret in a log line"
        assert "calling with ***" in logs, logs[-2000:]
        detail = r.admin("GET", f"/api/runs/{run_id}", token=TOKEN).body
        assert secret not in detail, detail
        assert "visible-value" in detail, detail
        code, out, err = r.runs_cli("show", run_id)
        eq(code, 0, "runs show: " + err)
        assert secret not in out, out
        assert "***" in out, out


@test
def check_reports_a_secret_that_is_not_set():
    d = temp_dir("rill-envcheck-")
    with open(os.path.join(d, "hook.lua"), "w") as f:
        f.write(HOOK)
    code, out, err = run_cli("check", d, env={"HOOK_SECRET": ""})
    eq(code, 0, "a warning, not an error")
    assert "hook.lua:2: HOOK_SECRET is not set" in err, err
    env_file = os.path.join(d, "..", os.path.basename(d) + ".env")
    write(env_file, "HOOK_SECRET=abcdefgh\n")
    code, out, err = run_cli("check", d, env={"RILL_ENV_FILE": env_file})
    eq(code, 0, "exit")
    assert "HOOK_SECRET" not in err, err


@test
def a_broken_env_file_at_start_stops_rill_naming_its_line():
    d = temp_dir("rill-envstart-")
    os.makedirs(os.path.join(d, "flows"))
    env_file = os.path.join(d, "bad.env")
    write(env_file, "GOOD=1\nBAD='unclosed\n")
    code, out, err = run_cli("serve", "--flows", os.path.join(d, "flows"), "--listen", "127.0.0.1:0",
                             "--admin-listen", "off", env={"RILL_ENV_FILE": env_file}, cwd=d, timeout=10)
    eq(code, 2, "exit code: " + err)
    assert "bad.env:2: BAD: the value's closing ' is missing" in err, err


@test
def a_missing_variable_is_warned_once_per_change_not_at_every_reload():
    d = temp_dir()
    env_file = os.path.join(d, "secrets.env")
    write(env_file, "PLAIN_VALUE=1\n")
    with Rill({"hook.lua": HOOK, "leaky.lua": LEAKY},
              env={"RILL_ADMIN_TOKEN": TOKEN, "RILL_ENV_FILE": env_file}) as r:
        def warned(var):
            return len([l for l in r.log_lines(msg_has="needs a variable: ") if var + " is not set" in l["msg"]])
        wait_until(lambda: r.reloads() >= 1, 10, "the first load")
        for _ in range(2):
            eq(r.admin("POST", "/api/reload", token=TOKEN).status, 200, "reload")
        wait_until(lambda: r.reloads() >= 3, 10, "three reloads")
        eq((warned("HOOK_SECRET"), warned("API_TOKEN")), (1, 1), "each named once, at start")
        # the set changes: HOOK_SECRET is set (nothing to say), then unset again (said again)
        n = r.reloads()
        write(env_file, "PLAIN_VALUE=1\nHOOK_SECRET=s3cret-value\n")
        r.wait_reload(n)
        eq(r.admin("POST", "/api/reload", token=TOKEN).status, 200, "reload")
        n = r.reloads()
        write(env_file, "PLAIN_VALUE=1\n")
        r.wait_reload(n)
        wait_until(lambda: warned("HOOK_SECRET") == 2, 10, "HOOK_SECRET named again once it is missing again")
        eq(warned("API_TOKEN"), 1, "API_TOKEN, missing all along, named once")


# the connectors' default clients read their settings from the environment
NOTIFY = """return {
  triggers = { manual() },
  run = function(ctx)
    local c = mautic.find_contact(ctx.payload.email)
    slack.post("#sales", "new contact " .. tostring(c and c.id))
    if not c then slack.post("#sales", "(not in Mautic yet)") end
    -- mautic.form_on_submit is a Mautic event name, not a call
    return { ok = true }
  end,
}"""

# a client of its own settings needs nothing from the environment
OWN = """return {
  triggers = { manual() },
  run = function(ctx)
    local s = slack.with { token = ctx.payload.token, channel = "#x" }
    return s.post("hello")
  end,
}"""


@test
def check_names_the_variables_the_connectors_a_flow_calls_need():
    d = temp_dir("rill-envcheck-")
    for name, src in (("notify.lua", NOTIFY), ("own.lua", OWN)):
        with open(os.path.join(d, name), "w") as f:
            f.write(src)
    clean = {v: "" for v in ("SLACK_BOT_TOKEN", "MAUTIC_URL", "MAUTIC_USER", "MAUTIC_PASSWORD")}
    env_file = os.path.join(d, "..", os.path.basename(d) + ".env")
    write(env_file, "MAUTIC_URL=https://mautic.example.com\n")
    code, out, err = run_cli("check", d, env={**clean, "RILL_ENV_FILE": env_file})
    eq(code, 0, "a warning, not an error: " + err)
    for expected in [f"{d}/notify.lua:5: SLACK_BOT_TOKEN is not set (slack.post: the slack connector's token",
                     f"{d}/notify.lua:4: MAUTIC_USER is not set (mautic.find_contact: the mautic connector's user",
                     f"{d}/notify.lua:4: MAUTIC_PASSWORD is not set"]:
        assert expected in err, f"{expected!r} not in:\n{err}"
    assert "MAUTIC_URL" not in err, "set in the env_file: " + err
    assert "own.lua" not in err, "slack.with{...}: " + err
    eq(err.count("SLACK_BOT_TOKEN"), 1, "once per flow: " + err)
    code, out, err = run_cli("check", d, env={**clean, "RILL_ENV_FILE": env_file, "SLACK_BOT_TOKEN": "xoxb-1",
                                             "MAUTIC_USER": "u", "MAUTIC_PASSWORD": "p"})
    eq(code, 0, "exit")
    assert "is not set" not in err, err


main()
