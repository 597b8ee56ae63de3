"""Flow settings: declared by the flow (type, default, description), set
outside Lua in flows/settings.json or through the admin API (validated,
written to that file), applied by a reload without a restart, fixed per
run (a retry uses the values its run was created with), listed by `rill
check` and settable per test in `rill test`."""
import json
import os

from lib.harness import Rill, eq, main, run_cli, temp_dir, test, wait_until

TOKEN = "t0ken-for-tests"

BIG = """
return {
  settings = {
    threshold = { type = "number", default = 10000, description = "EUR: a quote above is a big deal" },
    channel = { type = "string", default = "#sales", description = "where big deals are posted" },
  },
  triggers = { webhook { path = "/hooks/big" } },
  run = function(ctx) return { threshold = ctx.settings.threshold, channel = ctx.settings.channel } end,
}
"""

# fails its first attempt; its retry waits an hour unless retried by hand
RETRIED = """
return {
  settings = { threshold = { type = "number", default = 1, description = "a number" } },
  retries = { attempts = 3, backoff = "1h" },
  triggers = { webhook { path = "/hooks/retried", mode = "async" } },
  run = function(ctx)
    if ctx.attempt == 1 then error("first attempt fails") end
    return { threshold = ctx.settings.threshold, attempt = ctx.attempt }
  end,
}
"""


def put(r, name, values):
    return r.admin("PUT", f"/api/flows/{name}/settings", token=TOKEN, body=values)


def settings_file(r):
    with open(os.path.join(r.flows_dir, "settings.json")) as f:
        return json.load(f)


@test
def a_value_in_the_settings_file_is_applied_by_a_reload():
    with Rill({"big.lua": BIG}) as r:
        eq(r.request("POST", "/hooks/big", {}).json(), {"threshold": 10000, "channel": "#sales"}, "defaults")
        n = r.reloads()
        r.write_flow("settings.json", json.dumps({"big": {"threshold": 5}}))
        r.wait_reload(n)
        eq(r.request("POST", "/hooks/big", {}).json(), {"threshold": 5, "channel": "#sales"}, "from the file")


@test
def a_bad_value_in_the_file_is_refused_and_the_previous_values_stay():
    with Rill({"big.lua": BIG, "settings.json": json.dumps({"big": {"threshold": 5}})}) as r:
        eq(r.request("POST", "/hooks/big", {}).json()["threshold"], 5, "start value")
        n = r.reloads()
        r.write_flow("settings.json", json.dumps({"big": {"threshold": "lots"}}))
        r.wait_reload(n)
        line = r.wait_log(msg_has="flow rejected", file=os.path.join(r.flows_dir, "big.lua"))
        assert 'settings.json: big.threshold: expected a number, got "lots"' in line["msg"], line
        eq(r.request("POST", "/hooks/big", {}).json()["threshold"], 5, "the previous value stays")
        n = r.reloads()
        r.write_flow("settings.json", json.dumps({"big": {"treshold": 7}}))
        r.wait_reload(n)
        wait_until(lambda: r.log_lines(msg_has="no setting 'treshold'"), 10, "the unknown setting named")
        eq(r.request("POST", "/hooks/big", {}).json()["threshold"], 5, "still the previous value")


@test
def the_admin_api_validates_writes_the_file_and_applies_without_restart():
    with Rill({"big.lua": BIG}, env={"RILL_ADMIN_TOKEN": TOKEN}) as r:
        res = put(r, "big", {"threshold": 20000})
        eq(res.status, 200, "PUT " + res.body)
        eq(r.request("POST", "/hooks/big", {}).json()["threshold"], 20000, "applied")
        eq(settings_file(r), {"big": {"threshold": 20000}}, "persisted in flows/settings.json")
        res = put(r, "big", {"threshold": "abc"})
        eq(res.status, 400, "a bad value: " + res.body)
        assert 'threshold: expected a number, got "abc"' in res.json()["error"], res.body
        res = put(r, "big", {"treshold": 1})
        eq(res.status, 400, "an unknown setting: " + res.body)
        assert "no setting 'treshold' (did you mean 'threshold'?)" in res.json()["error"], res.body
        eq(put(r, "nosuch", {"a": 1}).status, 404, "no such flow")
        res = put(r, "bgi", {"threshold": 1})
        eq(res.status, 404, "a misspelt flow: " + res.body)
        eq(res.json()["error"], "no flow named bgi (did you mean 'big'?)", "its message")
        eq(r.request("POST", "/hooks/big", {}).json()["threshold"], 20000, "bad values change nothing")
        eq(settings_file(r), {"big": {"threshold": 20000}}, "file unchanged")
        listed = [f for f in r.admin("GET", "/api/flows", token=TOKEN).json()["flows"] if f.get("name") == "big"][0]
        by_name = {s["name"]: s for s in listed["settings"]}
        eq(by_name["threshold"]["value"], 20000, "listed value")
        eq(by_name["threshold"]["default"], 10000, "listed default")
        eq(by_name["channel"]["description"], "where big deals are posted", "listed description")
        res = put(r, "big", {"threshold": None})
        eq(res.status, 200, "null: back to the default")
        eq(r.request("POST", "/hooks/big", {}).json()["threshold"], 10000, "default again")


@test
def the_admin_api_keeps_what_else_the_file_holds_and_refuses_hostile_values():
    # another entry that is not an object (hand-edited): a PUT of big's values keeps it as it is
    hostile = {"other": 5, "third": [1, {"a": None}], "big": {"channel": "#deals"}}
    with Rill({"big.lua": BIG, "settings.json": json.dumps(hostile)}, env={"RILL_ADMIN_TOKEN": TOKEN}) as r:
        eq(r.admin("PUT", "/api/flows/big/settings", body={"threshold": 1}).status, 401, "no token")
        res = put(r, "big", {"threshold": 7})
        eq(res.status, 200, "PUT beside entries that are not objects: " + res.body)
        eq(settings_file(r), {"other": 5, "third": [1, {"a": None}], "big": {"channel": "#deals", "threshold": 7}},
           "written, the rest kept")
        eq(r.request("POST", "/hooks/big", {}).json(), {"threshold": 7, "channel": "#deals"}, "applied")
        for raw, why in [('{"threshold": 1e999}', "expected a number, got inf"),
                         ('{"threshold": {"a": 1}}', "expected a number, got an object"),
                         ('{"channel": ["x"]}', "expected a string, got an array")]:
            res = r.admin("PUT", "/api/flows/big/settings", token=TOKEN, body=raw.encode(),
                          headers={"Content-Type": "application/json"})
            eq(res.status, 400, raw + ": " + res.body)
            assert why in res.json()["error"], res.body
    # a file that is a JSON array is not a settings file: refused naming it, not rewritten
    with Rill({"big.lua": BIG}, env={"RILL_ADMIN_TOKEN": TOKEN}) as r:
        n = r.reloads()
        r.write_flow("settings.json", "[1, 2]")
        r.wait_reload(n)
        res = put(r, "big", {"threshold": 7})
        eq(res.status, 409, "an array file: " + res.body)
        assert "settings.json:1:1: expected" in res.json()["error"], res.body
        eq(settings_file(r), [1, 2], "the array file is left as it was")



@test
def a_put_of_a_value_that_is_not_utf8_is_refused_and_nothing_is_written():
    # cjson copies a string's bytes as they are: written, the file (and
    # GET /api/flows, and each run's recorded settings) would not be UTF-8
    with Rill({"big.lua": BIG}, env={"RILL_ADMIN_TOKEN": TOKEN}) as r:
        eq(put(r, "big", {"channel": "#deals"}).status, 200, "a good PUT")
        res = r.admin("PUT", "/api/flows/big/settings", token=TOKEN, body=b'{"channel": "#d\xe9als"}',
                      headers={"Content-Type": "application/json"})
        eq(res.status, 400, "a value that is not UTF-8: " + res.body)
        assert "UTF-8" in res.json()["error"], res.body
        eq(settings_file(r), {"big": {"channel": "#deals"}}, "the file as the good PUT left it")
        eq(r.request("POST", "/hooks/big", {}).json()["channel"], "#deals", "the value in force")

BROKEN = '{\n  "big": {\n    "threshold": 5,\n  }\n}\n'  # a trailing comma: line 4, column 3


@test
def a_broken_settings_file_is_named_by_line_and_the_previous_values_serve():
    with Rill({"big.lua": BIG, "settings.json": json.dumps({"big": {"threshold": 5}})},
              env={"RILL_ADMIN_TOKEN": TOKEN}) as r:
        eq(r.request("POST", "/hooks/big", {}).json()["threshold"], 5, "start value")
        n = r.reloads()
        r.write_flow("settings.json", BROKEN)
        r.wait_reload(n)
        path = os.path.join(r.flows_dir, "settings.json")
        line = r.wait_log(msg_has=path + ":4:3: not JSON")
        assert "character" not in line["msg"], line
        eq(r.request("POST", "/hooks/big", {}).json()["threshold"], 5, "the previous value serves")
        # the stored file is broken, not the request: a conflict to fix by hand, nothing written
        res = put(r, "big", {"threshold": 7})
        eq(res.status, 409, "PUT over a broken file: " + res.body)
        assert path + ":4:3: not JSON" in res.json()["error"], res.body
        assert "fix" in res.json()["error"], res.body
        with open(path) as f:
            eq(f.read(), BROKEN, "the broken file is left as it was")
        eq(r.request("POST", "/hooks/big", {}).json()["threshold"], 5, "still the previous value")
    d = temp_dir("rill-settings-")
    with open(os.path.join(d, "big.lua"), "w") as f:
        f.write(BIG)
    with open(os.path.join(d, "settings.json"), "w") as f:
        f.write(BROKEN)
    code, out, err = run_cli("check", d)
    eq(code, 1, "rill check: " + err)
    assert f"{d}/settings.json:4:3: not JSON: expected object key string but found '}}'" in err, err


@test
def a_retry_uses_the_values_its_run_started_with():
    with Rill({"retried.lua": RETRIED}, env={"RILL_ADMIN_TOKEN": TOKEN}) as r:
        eq(put(r, "retried", {"threshold": 1}).status, 200, "PUT 1")
        run_id = r.request("POST", "/hooks/retried", {}).json()["run_id"]
        wait_until(lambda: r.runs("show", run_id)["state"] == "retrying", 10, "the first attempt to fail")
        eq(put(r, "retried", {"threshold": 2}).status, 200, "PUT 2")
        eq(r.admin("POST", f"/api/runs/{run_id}/retry", token=TOKEN).status, 200, "retry now")
        wait_until(lambda: r.runs("show", run_id)["state"] == "succeeded", 10, "the retry to succeed")
        eq(json.loads(r.runs("show", run_id)["result"]), {"threshold": 1, "attempt": 2}, "the start values")
        eq(json.loads(r.runs("show", run_id)["settings"]), {"threshold": 1}, "recorded with the run")
        eq(r.admin("GET", f"/api/runs/{run_id}", token=TOKEN).json()["settings"], {"threshold": 1}, "admin API")
        code, out, _ = r.runs_cli("show", run_id)
        assert 'settings:    {"threshold":1}' in out, out
        # a new run reads the new value
        new_id = r.request("POST", "/hooks/retried", {}).json()["run_id"]
        wait_until(lambda: r.runs("show", new_id)["state"] == "retrying", 10, "the new run's first attempt")
        eq(r.admin("POST", f"/api/runs/{new_id}/retry", token=TOKEN).status, 200, "retry now")
        wait_until(lambda: r.runs("show", new_id)["state"] == "succeeded", 10, "the new run")
        eq(json.loads(r.runs("show", new_id)["result"])["threshold"], 2, "a new run: the new value")


EMITTER = """
return {
  triggers = { webhook { path = "/hooks/signed", mode = "async", emit = "quote.signed" } },
  run = function() return true end,
}
"""

SUBSCRIBER = """
return {
  settings = { threshold = { type = "number", default = 5, description = "a number" } },
  triggers = { event { name = "quote.signed" } },
  run = function(ctx) return { threshold = ctx.settings.threshold } end,
}
"""


@test
def a_run_an_event_started_records_its_settings_too():
    with Rill({"emitter.lua": EMITTER, "sub.lua": SUBSCRIBER}, env={"RILL_POLL_INTERVAL": "0.1s"}) as r:
        eq(r.request("POST", "/hooks/signed", {"n": 1}).status, 202, "the emitting webhook")
        run = wait_until(lambda: next((x for x in r.runs("list") if x["flow"] == "sub" and x["state"] == "succeeded"),
                                      None), 20, "the subscriber's run")
        shown = r.runs("show", run["id"])
        eq(json.loads(shown["settings"] or "null"), {"threshold": 5}, "recorded with the run (its retries use them)")


@test
def a_retry_under_a_version_that_changed_a_settings_type_reads_a_value_of_that_type():
    with Rill({"retried.lua": RETRIED}, env={"RILL_ADMIN_TOKEN": TOKEN}) as r:
        run_id = r.request("POST", "/hooks/retried", {}).json()["run_id"]
        wait_until(lambda: r.runs("show", run_id)["state"] == "retrying", 10, "the first attempt to fail")
        n = r.reloads()
        r.write_flow("retried.lua", RETRIED.replace('type = "number", default = 1', 'type = "string", default = "s"'))
        r.wait_reload(n)
        eq(r.admin("POST", f"/api/runs/{run_id}/retry", token=TOKEN).status, 200, "retry now")
        wait_until(lambda: r.runs("show", run_id)["state"] == "succeeded", 10, "the retry to succeed")
        # the recorded 1 is not a string: the version's value (its default) is read
        eq(json.loads(r.runs("show", run_id)["result"]), {"threshold": "s", "attempt": 2}, "a string, as declared")


@test
def check_lists_settings_and_refuses_bad_declarations():
    d = temp_dir("rill-settings-")
    with open(os.path.join(d, "big.lua"), "w") as f:
        f.write(BIG)
    with open(os.path.join(d, "settings.json"), "w") as f:
        json.dump({"big": {"threshold": 20000}}, f)
    code, out, err = run_cli("check", d)
    eq(code, 0, "exit code: " + err)
    assert "big.threshold = 20000 (number, default 10000): EUR: a quote above is a big deal" in out, out
    assert 'big.channel = "#sales" (string, default "#sales")' in out, out
    with open(os.path.join(d, "big.lua"), "w") as f:
        f.write(BIG.replace('type = "number", default = 10000', 'type = "number", default = "ten"'))
    code, out, err = run_cli("check", d)
    eq(code, 1, "exit code")
    assert 'big.lua:4: settings.threshold: default "ten" is not a number' in err, err
    with open(os.path.join(d, "big.lua"), "w") as f:
        f.write(BIG.replace('type = "number"', 'type = "numbr"'))
    code, out, err = run_cli("check", d)
    eq(code, 1, "exit code")
    assert 'settings.threshold: type "numbr" is not one of number, integer, string, boolean' in err, err


@test
def rill_test_sets_settings_per_test():
    d = temp_dir("rill-settings-")
    with open(os.path.join(d, "big.lua"), "w") as f:
        f.write(BIG)
    with open(os.path.join(d, "settings.json"), "w") as f:
        json.dump({"big": {"threshold": 20000}}, f)
    with open(os.path.join(d, "big.test.lua"), "w") as f:
        f.write("""
test("the declared default, whatever settings.json says", function(t)
  t.eq(t.webhook("POST", "/hooks/big", { json = {} }).json.threshold, 10000)
end)
test("a value set by the test", function(t)
  t.settings("big", { threshold = 5 })
  t.eq(t.webhook("POST", "/hooks/big", { json = {} }).json, { threshold = 5, channel = "#sales" })
end)
test("the next test starts from the defaults again", function(t)
  t.eq(t.webhook("POST", "/hooks/big", { json = {} }).json.threshold, 10000)
end)
test("a bad value is refused", function(t)
  local ok, err = pcall(t.settings, "big", { threshold = "x" })
  t.ok(not ok)
  t.contains(err, 'threshold: expected a number, got "x"')
end)
""")
    code, out, err = run_cli("test", "--flows", d)
    assert "4 passed, 0 failed" in out, out + err
    eq(code, 0, "exit code")


@test
def a_put_of_settings_reloads_once():
    with Rill({"big.lua": BIG}, env={"RILL_ADMIN_TOKEN": TOKEN}) as r:
        wait_until(lambda: r.reloads() >= 1, 10, "the first load")
        n = r.reloads()
        eq(put(r, "big", {"threshold": 7}).status, 200, "PUT")
        # the watcher sees the file the PUT wrote and already applied: no second reload
        r.wait_log(msg_has="settings.json as the last reload read it")
        r.write_flow("marker.lua", BIG.replace("/hooks/big", "/hooks/marker"))
        r.wait_log(msg="flow loaded", file=os.path.join(r.flows_dir, "marker.lua"))
        eq(r.reloads(), n + 2, "the PUT's reload and the marker's, nothing more")
        eq(r.request("POST", "/hooks/big", {}).json()["threshold"], 7, "applied")


@test
def a_misspelt_flow_or_setting_in_the_settings_file_gets_a_did_you_mean():
    with Rill({"big.lua": BIG, "settings.json": json.dumps({"bigg": {"threshold": 5}})},
              env={"RILL_ADMIN_TOKEN": TOKEN}) as r:
        path = os.path.join(r.flows_dir, "settings.json")
        line = r.wait_log(msg_has="no flow named bigg")
        eq(line["msg"], f"{path}: no flow named bigg (did you mean 'big'?): its values are not used", "the warning")
        eq(line["level"], "warn", "a warning")
        eq(r.admin("POST", "/api/reload", token=TOKEN).status, 200, "reload")
        wait_until(lambda: r.reloads() >= 2, 10, "two reloads")
        eq(len(r.log_lines(msg_has="no flow named bigg")), 1, "said once, not at every reload")
        n = r.reloads()
        r.write_flow("settings.json", json.dumps({"big": {"treshold": 5}}))
        r.wait_reload(n)
        r.wait_log(msg_has="big: no setting 'treshold' (did you mean 'threshold'?)")
    d = temp_dir("rill-settings-")
    with open(os.path.join(d, "big.lua"), "w") as f:
        f.write(BIG)
    with open(os.path.join(d, "settings.json"), "w") as f:
        json.dump({"bigg": {"threshold": 5}, "big": {"threshold": 20000}}, f)
    code, out, err = run_cli("check", d)
    eq(code, 0, "a warning, not an error: " + err)
    assert f"warning: {d}/settings.json: no flow named bigg (did you mean 'big'?)" in err, err


@test
def reading_a_setting_the_flow_does_not_declare_fails_at_its_line_with_a_did_you_mean():
    d = temp_dir("rill-settings-")
    with open(os.path.join(d, "big.lua"), "w") as f:
        f.write(BIG.replace("channel = ctx.settings.channel }", "channel = ctx.settings.chanel }"))
    with open(os.path.join(d, "bare.lua"), "w") as f:
        f.write('return { triggers = { manual() },\n  run = function(ctx) return ctx.settings.limit end }\n')
    code, out, err = run_cli("run", "big", "--flows", d)
    eq(code, 1, "the run fails: " + out + err)
    assert f"{d}/big.lua:8: big declares no setting 'chanel' (did you mean 'channel'?)" in out + err, out + err
    code, out, err = run_cli("run", "bare", "--flows", d)
    eq(code, 1, "the run fails: " + out + err)
    assert f"{d}/bare.lua:2: bare declares no setting 'limit' (it declares no settings)" in out + err, out + err


main()
