"""The command line: rill version, rill check and rill run (the manual trigger)."""
import json
import os

from lib.harness import ROOT, Rill, eq, main, run_cli, temp_dir, test


def flows_dir(files):
    d = temp_dir("rill-cli-")
    for name, src in files.items():
        with open(os.path.join(d, name), "w") as f:
            f.write(src)
    return d


GOOD = {
    "hello.lua": """
return {
  triggers = { manual() },
  run = function(ctx)
    log.info("saying hello", { to = ctx.payload and ctx.payload.name })
    return { greeting = "Hello, " .. ((ctx.payload and ctx.payload.name) or "world") }
  end,
}""",
    "fails.lua": """
return {
  triggers = { manual() },
  run = function(ctx) error("the invoice has no client") end,
}""",
    "caller.lua": """
return {
  triggers = { manual() },
  run = function(ctx)
    local r = flows.trigger("callee", { x = 20 })
    local id = flows.trigger("callee", { x = 1 }, { wait = false })
    return { got = r.y, started = #id }
  end,
}""",
    "callee.lua": """
return {
  triggers = { from_flow() },
  run = function(ctx) sleep(0.01) return { y = ctx.payload.x + 1 } end,
}""",
    "loop.lua": """
return {
  triggers = { from_flow(), manual() },
  run = function(ctx) return flows.trigger("loop", {}) end,
}""",
}


@test
def version_prints_the_version():
    code, out, _ = run_cli("version")
    eq(code, 0, "exit code")
    assert out.startswith("rill 0.1.0"), out


@test
def check_accepts_valid_flows():
    code, out, err = run_cli("check", flows_dir(GOOD))
    eq(code, 0, "exit code: " + err)
    assert "5 flow(s) OK" in out, out


@test
def check_the_shipped_flows():
    code, out, err = run_cli("check", os.path.join(ROOT, "flows"))
    eq(code, 0, "exit code: " + err)
    # the secrets the flows need are not set here: check names each (a warning)
    missing = [l for l in err.splitlines() if l.startswith("warning: ") and " is not set (" in l]
    assert any("DOCUSEAL_WEBHOOK_SECRET" in l for l in missing), err
    others = [l for l in err.splitlines() if l not in missing]
    eq(others, [], "no error and no other warning on the company's flows (luacheck included)")
    assert "flow(s) OK in" in out and "warning" not in out, out


TYPOS = """local greeting = "hello"
local unused = 1
return {
  triggers = { manual() },
  run = function(ctx)
    local quote = ctx.payload
    if quote.amount > 10000 then
      local greeting = "big"
      log.info(greeting)
    end
    log.info(jsn.encode(quote))
    return json.encdoe(quote), greeting
  end,
}"""


@test
def check_analyses_flows_with_luacheck_names_are_errors_the_rest_warnings():
    """issue 15: a misspelt global or API name is an error at file:line:column,
    with a guess; unused variables and shadowing are warnings."""
    d = flows_dir({"typos.lua": TYPOS})
    code, out, err = run_cli("check", d)
    eq(code, 1, f"exit code\n{out}\n{err}")
    for expected in [f"{d}/typos.lua:11:14: error: accessing undefined variable 'jsn' (did you mean 'json'?)",
                     f"{d}/typos.lua:12:12: error: accessing undefined field 'encdoe' of global 'json' "
                     "(did you mean 'json.encode'?)",
                     f"{d}/typos.lua:2:7: warning: unused variable 'unused'",
                     f"{d}/typos.lua:8:13: warning: shadowing upvalue 'greeting' on line 1",
                     "1 flow file(s) with errors"]:
        assert expected in err, f"{expected!r} not in:\n{err}"
    # warnings alone do not fail the check
    d = flows_dir({"warns.lua": TYPOS.replace("jsn.", "json.").replace("encdoe", "encode")})
    code, out, err = run_cli("check", d)
    eq(code, 0, f"exit code\n{out}\n{err}")
    assert "warns.lua:2:7: warning: unused variable 'unused'" in err, err
    assert "1 flow(s) OK in" in out and "(2 warning(s))" in out, out
    # a global the file sets itself (a function without local) is a warning where it is set and read
    d = flows_dir({"globals.lua": """function helper(x) return x + 1 end
return {
  triggers = { manual() },
  run = function(ctx) return helper(1) + helpr(2) end,
}"""})
    code, out, err = run_cli("check", d)
    eq(code, 1, f"exit code\n{out}\n{err}")
    assert f"{d}/globals.lua:1:10: warning: setting non-standard global variable 'helper'" in err, err
    assert f"{d}/globals.lua:4:30: warning: accessing undefined variable 'helper'" in err, err
    assert f"{d}/globals.lua:4:42: error: accessing undefined variable 'helpr' (did you mean 'helper'?)" in err, err
    # test files too, as trusted LuaJIT code with test()
    d = flows_dir({"hello.lua": GOOD["hello.lua"], "hello.test.lua": """local io_lib = require "io"
test("says hello", function(t)
  local run = t.run("hello", { name = "Ada" })
  t.eq(run.result, { greeting = "Hello, Ada" })
  t.eq(rn.state, "succeeded")
  t.eq(json.encode(crypto.hex("a")), '"61"')
end)
"""})
    code, out, err = run_cli("check", d)
    eq(code, 1, f"exit code\n{out}\n{err}")
    assert f"{d}/hello.test.lua:5:8: error: accessing undefined variable 'rn'" in err, err
    assert f"{d}/hello.test.lua:1:7: warning: unused variable 'io_lib'" in err, err
    assert "'json'" not in err and "'crypto'" not in err, f"json and crypto are test files' globals:\n{err}"


@test
def check_of_a_relative_folder_names_each_file_once_even_with_shell_characters():
    # luacheck names ./x.lua x.lua: a file with a load error and a finding was
    # counted and shown as two; names with shell characters reach no shell
    d = temp_dir("rill-check-rel-")
    names = ["bad.lua", "$(touch PWNED).lua", "a'b`touch PWNED2`.lua"]
    for name in names:
        with open(os.path.join(d, name), "w") as f:
            f.write('return { triggers = { manual() }, run = function() return jsn end }\n')
    code, _, err = run_cli("check", ".", cwd=d)
    eq(code, 1, "exit code: " + err)
    assert "3 flow file(s) with errors" in err, err
    for name in names:
        assert f"./{name}:1:59: error: accessing undefined variable 'jsn'" in err, err
    eq(sorted(n for n in os.listdir(d) if "PWNED" in n and not n.endswith(".lua")), [], "no command ran")


@test
def check_without_luacheck_says_so_and_still_checks():
    d = flows_dir({"typos.lua": TYPOS, "bad.lua": "return { triggers = { manual() } }"})
    code, out, err = run_cli("check", d, env={"RILL_LUACHECK": "/nonexistent/luacheck"})
    eq(code, 1, f"exit code\n{out}\n{err}")
    assert "rill check: /nonexistent/luacheck not found: static analysis skipped" in err, err
    assert f"{d}/bad.lua: the flow has no run function" in err, err
    assert "jsn" not in err, err
    assert "no static analysis" in err, err


@test
def check_prints_its_luacheck_configuration():
    code, out, err = run_cli("check", "--luacheck-config")
    eq(code, 0, "exit code: " + err)
    assert 'std = "none"' in out, out
    assert "json = { fields = { decode = {}, encode = {}, null = {} } }" in out, out
    assert "env = { other_fields = true }" in out, out


@test
def check_reports_every_error_with_file_and_line():
    d = flows_dir({
        "syntax.lua": "return {\n  triggers = { manual() }\n  run = function() end,\n}",
        "badcron.lua": "return {\n  triggers = {\n    cron \"0 25 * * *\",\n  },\n  run = function() end,\n}",
        "feb30.lua": "return {\n  triggers = { cron \"0 0 30 2 *\" },\n  run = function() end,\n}",
        "badtz.lua": "return {\n  triggers = { cron { \"0 9 * * *\", tz = \"Mars/Olympus\" } },\n  run = function() end,\n}",
        "badhook.lua": "return {\n  triggers = {\n    webhook { path = \"hooks/x\" },\n  },\n  run = function() end,\n}",
        "norun.lua": "return { triggers = { manual() } }",
        "runtime.lua": "local x = nil\nlocal y = x.field\nreturn {}",
        "ok.lua": GOOD["hello.lua"],
    })
    code, out, err = run_cli("check", d)
    eq(code, 1, "exit code")
    for expected in [f"{d}/syntax.lua:3:", f"{d}/badcron.lua:3: cron:", "hour",
                     f"{d}/feb30.lua:2: cron:", "never fires", f"{d}/badtz.lua:2: cron:",
                     f"{d}/badhook.lua:3: webhook: path", f"{d}/norun.lua: the flow has no run function",
                     f"{d}/runtime.lua:2:", "7 flow file(s) with errors"]:
        assert expected in err, f"{expected!r} not in:\n{err}"
    assert "/ok.lua" not in err, err


@test
def run_prints_the_result_and_the_log():
    code, out, err = run_cli("run", "hello", "--flows", flows_dir(GOOD), "--payload", '{"name": "Ada"}')
    eq(code, 0, "exit code: " + err)
    eq(json.loads(out), {"greeting": "Hello, Ada"}, "result on stdout")
    assert "saying hello" in err and "to=Ada" in err, err


@test
def run_of_a_failing_flow_exits_non_zero_with_the_error():
    code, out, err = run_cli("run", "fails", "--flows", flows_dir(GOOD))
    eq(code, 1, "exit code")
    assert "fails.lua:4: the invoice has no client" in json.loads(out)["error"], out
    assert "fails.lua:4" in err, err


@test
def run_rejects_bad_input_clearly():
    d = flows_dir(GOOD)
    code, _, err = run_cli("run", "nope", "--flows", d)
    eq(code, 2, "unknown flow")
    assert "no flow named nope" in err, err
    code, _, err = run_cli("run", "hello", "--flows", d, "--payload", "{not json")
    eq(code, 2, "bad payload")
    assert "--payload is not JSON" in err, err
    code, _, err = run_cli("frobnicate")
    eq(code, 2, "unknown command")


@test
def a_flow_can_start_another_and_await_it():
    code, out, err = run_cli("run", "caller", "--flows", flows_dir(GOOD))
    eq(code, 0, "exit code: " + err)
    eq(json.loads(out), {"got": 21, "started": 36}, "result")


@test
def a_flow_starting_itself_stops_at_the_depth_limit():
    code, out, err = run_cli("run", "loop", "--flows", flows_dir(GOOD))
    eq(code, 1, "exit code")
    assert "deeper than 8" in out, out


@test
def check_names_both_files_and_lines_of_a_route_conflict():
    d = flows_dir({
        "quote-signed.lua": 'return {\n  triggers = {\n    webhook { path = "/hooks/docuseal", mode = "async" },\n  },\n  run = function() end,\n}',
        "big-deal-alert.lua": 'return {\n  triggers = { webhook { path = "/hooks/docuseal" } },\n  run = function() end,\n}',
        "ok.lua": GOOD["hello.lua"],
    })
    code, _, err = run_cli("check", d)
    eq(code, 1, "exit code")
    for expected in [f"{d}/big-deal-alert.lua:2: webhook POST /hooks/docuseal is also declared by {d}/quote-signed.lua:3",
                     f"{d}/quote-signed.lua:3: webhook POST /hooks/docuseal is also declared by {d}/big-deal-alert.lua:2",
                     "2 flow file(s) with errors"]:
        assert expected in err, f"{expected!r} not in:\n{err}"


@test
def check_reports_unknown_fields_and_trigger_options_with_their_line():
    d = flows_dir({
        "field.lua": "return {\n  triggers = { manual() },\n  run = function() end,\n  retires = 3,\n}",
        "option.lua": "return {\n  triggers = {\n    webhook {\n      pathh = \"/hooks/x\",\n    },\n  },\n  run = function() end,\n}",
        "cronopt.lua": "return {\n  triggers = { cron { \"0 9 * * *\", timezone = \"UTC\" } },\n  run = function() end,\n}",
        "odd.lua": "return {\n  triggers = { manual() },\n  run = function() end,\n  frobnicate = true,\n}",
        "retryopt.lua": "return {\n  triggers = { manual() },\n  run = function() end,\n  retries = { attempts = 3, backof = \"2s\" },\n}",
        "retrydur.lua": "return {\n  triggers = { manual() },\n  run = function() end,\n\n  retries = { backoff = \"2 seconds\" },\n}",
    })
    code, _, err = run_cli("check", d)
    eq(code, 1, "exit code")
    for expected in [f"{d}/field.lua:4: unknown field 'retires' (did you mean 'retries'?)",
                     f"{d}/option.lua:4: webhook: unknown option 'pathh' (did you mean 'path'?)",
                     f"{d}/cronopt.lua:2: cron: unknown option 'timezone'",
                     f"{d}/odd.lua:4: unknown field 'frobnicate' (fields:",
                     f"{d}/retryopt.lua:4: retries: unknown option 'backof' (did you mean 'backoff'?)",
                     f"{d}/retrydur.lua:5: retries: backoff \"2 seconds\" is not a duration"]:
        assert expected in err, f"{expected!r} not in:\n{err}"
    assert "(did you mean" not in err.split("odd.lua")[1].split("\n")[0], err


ENV_FLOW = {"envy.lua": """
return {
  triggers = { manual() },
  run = function(ctx) return { greeting = env.GREETING, channel = env.CHANNEL } end,
}"""}


@test
def run_honours_rill_env_and_every_table_setting_as_json():
    """issue 15: RILL_ENV was ignored (a table setting); now a JSON object."""
    d = flows_dir(ENV_FLOW)
    code, out, err = run_cli("run", "envy", "--flows", d, env={"RILL_ENV": '{"GREETING": "Hi", "CHANNEL": "#sales"}'})
    eq(code, 0, f"exit code\n{err}")
    eq(json.loads(out), {"greeting": "Hi", "channel": "#sales"}, "env from RILL_ENV")
    code, out, err = run_cli("run", "envy", "--flows", d, env={"RILL_ENV": "GREETING=Hi"})
    eq(code, 2, f"exit code\n{out}\n{err}")
    assert 'config: RILL_ENV: "GREETING=Hi" is not a JSON object' in err, err


@test
def an_rill_variable_naming_no_setting_is_warned_about_at_start():
    d = flows_dir(ENV_FLOW)
    code, out, err = run_cli("run", "envy", "--flows", d,
                             env={"RILL_LOG_LEVL": "debug", "RILL_FLOWSDIR": "x", "RILL_ADMIN_TOKEN": "t"})
    eq(code, 0, f"exit code\n{err}")
    lines = [line for line in err.splitlines() if "names no setting" in line]
    eq(len(lines), 2, f"one line for each unknown variable:\n{err}")
    assert "RILL_LOG_LEVL names no setting" in err and "did you mean RILL_LOG_LEVEL?" in err, err
    assert "RILL_FLOWSDIR names no setting" in err and "did you mean RILL_FLOWS_DIR?" in err, err
    assert "RILL_ADMIN_TOKEN" not in err, "a variable rill reads is no mistake: " + err


@test
def check_reads_the_flows_dir_setting_when_given_no_folder():
    d = flows_dir(ENV_FLOW)
    code, out, err = run_cli("check", env={"RILL_FLOWS_DIR": d}, cwd=temp_dir())
    eq(code, 0, f"exit code\n{out}\n{err}")
    assert f"1 flow(s) OK in {d}" in out, out

@test
def serve_warns_about_an_rill_variable_naming_no_setting():
    with Rill(ENV_FLOW, env={"RILL_RETRY_BACKOF": "5s"}) as r:
        line = r.wait_log(msg_has="RILL_RETRY_BACKOF names no setting")
        eq(line["level"], "warn", "level")
        assert "did you mean RILL_RETRY_BACKOFF?" in line["msg"], line


if __name__ == "__main__":
    main()
