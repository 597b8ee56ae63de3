"""Hot reload: changed, added and removed flow files take effect without a
restart; a broken file keeps the previous version serving; runs finish on
the version they started with; a reload under load drops no request."""
import http.client
import os
import json
import signal
import threading
import time

from lib.harness import Rill, eq, main, test, wait_until


def versioned(v, pause=0):
    # The version is read before and after a wait: a run must see one version.
    return f"""
local VERSION = {v}
return {{
  triggers = {{ webhook {{ path = "/hooks/v" }} }},
  run = function(ctx)
    local before = VERSION
    if {pause} > 0 then sleep({pause}) end
    return {{ before = before, after = VERSION }}
  end,
}}"""


@test
def a_changed_file_is_served_without_restart():
    with Rill({"v.lua": versioned(1)}) as r:
        eq(r.request("POST", "/hooks/v", {}).json(), {"before": 1, "after": 1}, "v1")
        n = r.reloads()
        r.write_flow("v.lua", versioned(2))
        r.wait_reload(n)
        eq(r.request("POST", "/hooks/v", {}).json(), {"before": 2, "after": 2}, "v2")


@test
def a_broken_file_is_rejected_and_the_previous_version_keeps_serving():
    with Rill({"v.lua": versioned(1)}) as r:
        n = r.reloads()
        r.write_flow("v.lua", "local total = = 1" + versioned(2))
        r.wait_reload(n)
        line = r.wait_log(msg_has="flow rejected")
        assert "v.lua:1: unexpected symbol near '='" in line["msg"], line
        assert line.get("serving", "").startswith("its previous version, "), f"the log says what serves: {line}"
        eq(r.request("POST", "/hooks/v", {}).json()["before"], 1, "still v1")
        ready = r.admin("GET", "/readyz").json()
        eq(ready["status"], "ready", "the other flows serve: ready")
        assert any("v.lua:1: unexpected symbol near '='" in m for m in ready.get("rejected", [])), ready
        n = r.reloads()
        r.write_flow("new.lua", "return {")
        r.wait_reload(n)
        line = r.wait_log(msg_has="flow rejected", file=os.path.join(r.flows_dir, "new.lua"))
        eq(line.get("serving"), "nothing: no version of it loaded", f"a new broken file: {line}")
        n = r.reloads()
        r.write_flow("v.lua", versioned(3))
        r.wait_reload(n)
        eq(r.request("POST", "/hooks/v", {}).json()["before"], 3, "fixed file serves")


@test
def on_a_reload_an_unknown_field_is_refused_with_its_line():
    with Rill({"v.lua": versioned(1)}) as r:
        n = r.reloads()
        r.write_flow("v.lua", versioned(2).replace("  run =", "  retires = 3,\n  run ="))
        r.wait_reload(n)
        line = r.wait_log(msg_has="flow rejected")
        assert f"{r.flows_dir}/v.lua:5: unknown field 'retires' (did you mean 'retries'?)" in line["msg"], line
        eq(r.request("POST", "/hooks/v", {}).json()["before"], 1, "the previous version serves")


@test
def added_and_removed_files_add_and_remove_routes():
    other = 'return { triggers = { webhook { path = "/hooks/other" } }, run = function() return "other" end }'
    with Rill({"v.lua": versioned(1)}) as r:
        eq(r.request("POST", "/hooks/other", {}).status, 404, "before")
        n = r.reloads()
        r.write_flow("other.lua", other)
        r.wait_reload(n)
        eq(r.request("POST", "/hooks/other", {}).json(), "other", "added")
        n = r.reloads()
        r.remove_flow("other.lua")
        r.wait_reload(n)
        eq(r.request("POST", "/hooks/other", {}).status, 404, "removed")


@test
def a_conflicting_route_is_refused_and_the_owner_keeps_it():
    thief = 'return { triggers = { webhook { path = "/hooks/v" } }, run = function() return "thief" end }'
    with Rill({"v.lua": versioned(1)}) as r:
        n = r.reloads()
        r.write_flow("a-thief.lua", thief)
        r.wait_reload(n)
        line = r.wait_log(msg_has="flow rejected")
        assert "already served by" in line["msg"], line
        eq(r.request("POST", "/hooks/v", {}).json()["before"], 1, "owner keeps the route")


@test
def sighup_reloads_when_watching_is_off():
    with Rill({"v.lua": versioned(1)}, env={"RILL_WATCH": "false"}) as r:
        r.write_flow("v.lua", versioned(2))
        time.sleep(0.3)
        eq(r.request("POST", "/hooks/v", {}).json()["before"], 1, "no watch, no reload")
        n = r.reloads()
        r.signal(signal.SIGHUP)
        r.wait_reload(n)
        eq(r.request("POST", "/hooks/v", {}).json()["before"], 2, "reloaded on SIGHUP")


@test
def a_run_in_flight_finishes_on_the_version_it_started_with():
    with Rill({"v.lua": versioned(1, pause=1)}) as r:
        result = {}
        t = threading.Thread(target=lambda: result.update(res=r.request("POST", "/hooks/v", {})))
        t.start()
        wait_until(lambda: r.log_lines(msg="run started", flow="v"), 5, "the run to start")
        n = r.reloads()
        r.write_flow("v.lua", versioned(2, pause=1))
        r.wait_reload(n)
        t.join()
        eq(result["res"].json(), {"before": 1, "after": 1}, "old run, old version")
        eq(r.request("POST", "/hooks/v", {}).json(), {"before": 2, "after": 2}, "new run, new version")


@test
def reloading_under_load_drops_no_request_and_mixes_no_versions():
    with Rill({"v.lua": versioned(0, pause=0.002)}) as r:
        stop = threading.Event()
        counts = {"sent": 0, "ok": 0}
        errors, versions = [], set()
        lock = threading.Lock()

        def client():
            conn = http.client.HTTPConnection("127.0.0.1", r.port, timeout=10)
            while not stop.is_set():
                with lock:
                    counts["sent"] += 1
                try:
                    conn.request("POST", "/hooks/v", body="{}", headers={"Content-Type": "application/json"})
                    res = conn.getresponse()
                    body = json.loads(res.read())
                    with lock:
                        if res.status != 200 or body["before"] != body["after"]:
                            errors.append((res.status, body))
                        else:
                            counts["ok"] += 1
                            versions.add(body["before"])
                except Exception as e:  # a dropped connection is a failure
                    with lock:
                        errors.append(repr(e))
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", r.port, timeout=10)
            conn.close()

        threads = [threading.Thread(target=client) for _ in range(8)]
        for t in threads:
            t.start()
        for v in range(1, 11):
            n = r.reloads()
            r.write_flow("v.lua", versioned(v, pause=0.002))
            r.wait_reload(n)
            time.sleep(0.1)
        stop.set()
        for t in threads:
            t.join()
        eq(errors, [], "failed or mixed responses")
        eq(counts["ok"], counts["sent"], "every request answered")
        assert counts["ok"] > 100, counts
        assert len(versions) >= 5, f"versions seen: {sorted(versions)}"


if __name__ == "__main__":
    main()
