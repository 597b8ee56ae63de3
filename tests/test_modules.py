"""Shared modules (flows/lib/*.lua): required by flows, run in the flow's
sandbox under the load limits, reloaded with the flows that use them (a
changed module is a new version of each flow using it, recorded with its
runs); a broken module rejects its flows naming its file and line while
their previous versions serve; `rill check` checks modules."""
import os

from lib.harness import Rill, eq, main, run_cli, temp_dir, test, wait_until

TOKEN = "t0ken-for-tests"

GREETING = """
local M = {}
M.word = "%s"
function M.greet(name) return M.word .. ", " .. name end
return M
"""

HELLO = """
local greeting = require "lib.greeting"
return {
  triggers = { webhook { path = "/hooks/hello" } },
  run = function(ctx) return { text = greeting.greet("Ann") } end,
}
"""

STORED = """
local greeting = require "lib.greeting"
return {
  triggers = { webhook { path = "/hooks/stored", mode = "async" } },
  run = function(ctx) return { text = greeting.greet("Bob") } end,
}
"""


def with_lib(r, name, src):
    os.makedirs(os.path.join(r.flows_dir, "lib"), exist_ok=True)
    r.write_flow("lib/" + name, src)


def flow_version(r, name):
    for f in r.admin("GET", "/api/flows", token=TOKEN).json()["flows"]:
        if f.get("name") == name:
            return f
    return None


@test
def a_changed_module_is_a_new_version_of_each_flow_using_it():
    r = Rill({"hello.lua": HELLO, "stored.lua": STORED}, env={"RILL_ADMIN_TOKEN": TOKEN})
    with_lib(r, "greeting.lua", GREETING % "Hello")
    with r:
        eq(r.request("POST", "/hooks/hello", {}).json(), {"text": "Hello, Ann"}, "v1")
        v1 = flow_version(r, "hello")["version"]
        mods1 = flow_version(r, "hello")["modules"]
        assert "lib.greeting" in mods1, mods1
        n = r.reloads()
        with_lib(r, "greeting.lua", GREETING % "Hi")
        r.wait_reload(n)
        eq(r.request("POST", "/hooks/hello", {}).json(), {"text": "Hi, Ann"}, "the changed module serves")
        v2 = flow_version(r, "hello")
        assert v2["version"] != v1, (v1, v2)
        assert v2["modules"]["lib.greeting"] != mods1["lib.greeting"], (mods1, v2)
        # a stored run says which module versions it ran
        run_id = r.request("POST", "/hooks/stored", {}).json()["run_id"]
        wait_until(lambda: r.runs("show", run_id)["state"] == "succeeded", 10, "the run to succeed")
        shown = r.runs("show", run_id)
        eq(shown["modules"], {"lib.greeting": v2["modules"]["lib.greeting"]}, "modules of the run's version")
        code, out, _ = r.runs_cli("show", run_id)
        assert "lib.greeting@" + v2["modules"]["lib.greeting"] in out, out


@test
def a_module_with_a_syntax_error_rejects_its_flows_and_the_old_versions_serve():
    r = Rill({"hello.lua": HELLO}, env={"RILL_ADMIN_TOKEN": TOKEN})
    with_lib(r, "greeting.lua", GREETING % "Hello")
    with r:
        n = r.reloads()
        with_lib(r, "greeting.lua", "local M = {}\nM.word = = 1\nreturn M\n")
        r.wait_reload(n)
        line = r.wait_log(msg_has="flow rejected", file=os.path.join(r.flows_dir, "hello.lua"))
        assert "lib/greeting.lua:2: unexpected symbol near '='" in line["msg"], line
        eq(r.request("POST", "/hooks/hello", {}).json(), {"text": "Hello, Ann"}, "the previous version serves")
        listed = r.admin("GET", "/api/flows", token=TOKEN).json()["flows"]
        by_file = {f["file"]: f for f in listed}
        hello = by_file[os.path.join(r.flows_dir, "hello.lua")]
        eq(hello["status"], "error", "the flow's status: its new version was refused")
        assert "lib/greeting.lua:2:" in hello["load_error"], hello
        module = by_file[os.path.join(r.flows_dir, "lib", "greeting.lua")]
        assert "lib/greeting.lua:2:" in module["load_error"], module


@test
def a_module_runs_under_the_load_limits_and_in_the_sandbox():
    r = Rill({"hello.lua": HELLO}, env={"RILL_LOAD_DEADLINE": "0.3s"})
    with_lib(r, "greeting.lua", GREETING % "Hello")
    with r:
        n = r.reloads()
        with_lib(r, "greeting.lua", "while true do end")
        r.wait_reload(n)
        line = r.wait_log(msg_has="flow rejected", file=os.path.join(r.flows_dir, "hello.lua"))
        assert "deadline" in line["msg"], line
        n = r.reloads()
        with_lib(r, "greeting.lua", "return { greet = function() return io.open('/etc/passwd') end }")
        r.write_flow("hello.lua", HELLO + "\n-- v2\n")
        r.wait_reload(n)
        resp = r.request("POST", "/hooks/hello", {})
        eq(resp.status, 500, "io is not reachable from a module")


@test
def each_flow_gets_its_own_copy_of_a_module():
    writer = """
local greeting = require "lib.greeting"
greeting.word = "Changed"
return { triggers = { webhook { path = "/hooks/writer" } }, run = function() return { text = greeting.greet("W") } end }
"""
    r = Rill({"writer.lua": writer, "hello.lua": HELLO})
    with_lib(r, "greeting.lua", GREETING % "Hello")
    with r:
        eq(r.request("POST", "/hooks/writer", {}).json(), {"text": "Changed, W"}, "writer")
        eq(r.request("POST", "/hooks/hello", {}).json(), {"text": "Hello, Ann"}, "hello is unchanged")


@test
def a_retry_pinned_to_its_version_runs_the_modules_it_ran():
    failing = """
local greeting = require "lib.greeting"
return {
  retries = { attempts = 1 },
  triggers = { webhook { path = "/hooks/pinned", mode = "async" } },
  run = function(ctx)
    if ctx.attempt == 1 then error("first attempt fails") end
    return { text = greeting.greet("Pat") }
  end,
}
"""
    r = Rill({"pinned.lua": failing}, env={"RILL_ADMIN_TOKEN": TOKEN})
    with_lib(r, "greeting.lua", GREETING % "Hello")
    with r:
        run_id = r.request("POST", "/hooks/pinned", {}).json()["run_id"]
        wait_until(lambda: r.runs("show", run_id)["state"] == "dead", 10, "the run to be dead")
        n = r.reloads()
        with_lib(r, "greeting.lua", GREETING % "Bye")
        r.wait_reload(n)
        code, out, err = r.runs_cli("retry", run_id, "--same-version")
        eq(code, 0, "runs retry: " + err)
        wait_until(lambda: r.runs("show", run_id)["state"] == "succeeded", 10, "the retry")
        eq(r.runs("show", run_id)["result"], '{"text":"Hello, Pat"}', "the module as it was")


@test
def check_reports_a_broken_module_and_an_unknown_one():
    d = temp_dir("rill-mod-")
    os.makedirs(os.path.join(d, "lib"))
    with open(os.path.join(d, "hello.lua"), "w") as f:
        f.write(HELLO)
    with open(os.path.join(d, "lib", "greeting.lua"), "w") as f:
        f.write("return {\n  x = ,\n}\n")
    with open(os.path.join(d, "other.lua"), "w") as f:
        f.write(HELLO.replace("lib.greeting", "lib.nosuch").replace("/hooks/hello", "/hooks/other"))
    code, out, err = run_cli("check", d)
    eq(code, 1, "exit code")
    assert "lib/greeting.lua:2: unexpected symbol near ','" in err, err
    assert "hello.lua" in err, err
    assert "no module lib.nosuch" in err, err
    with open(os.path.join(d, "lib", "greeting.lua"), "w") as f:
        f.write(GREETING % "Hello")
    os.remove(os.path.join(d, "other.lua"))
    code, out, err = run_cli("check", d)
    eq(code, 0, "exit code once fixed: " + err)


main()
