"""The admin listener end to end: /healthz, /readyz and /metrics without a
token; the bearer token checked on every /api/ endpoint; flows, runs (filters,
one run's timeline), retry, cancel, reload, pause and resume; bad input
answered 400/404/405/409 with a reason; no token configured means 403 and a
loud warning; admin_listen = "off" means no listener."""
import datetime
import json
import os
import socket

from lib.harness import ROOT, Postgres, Rill, eq, main, temp_dir, test, wait_until
from lib.upstream import CHECKED, Upstream

TOKEN = "adm-7c1f0e2b9d4a"
FAST = {"RILL_POLL_INTERVAL": "0.1s", "RILL_RETRY_BACKOFF": "50ms", "RILL_RETRY_MAX_BACKOFF": "200ms",
        "RILL_ADMIN_TOKEN": TOKEN}


ECHO = """
return {
  triggers = { webhook { path = "/hooks/echo", mode = "async" } },
  run = function(ctx) return ctx.payload end,
}"""

# Waits: retrying far in the future after its first failure, or sleeping.
WAITING = """
return {
  triggers = { webhook { path = "/hooks/waiting", mode = "async" } },
  retries = { attempts = 3, backoff = "1h" },
  run = function(ctx)
    if ctx.payload.sleep then sleep_for("nap", "1h") return "woke" end
    error("not yet")
  end,
}"""

TICK = """
return {
  triggers = { cron { "* * * * * *" } },
  run = function(ctx) return "tick" end,
}"""


def rill(flows, env=None, dir=None):
    return Rill(flows, env={**FAST, **(env or {})}, dir=dir)


def api(r, method, path, token=TOKEN):
    return r.admin(method, path, token=token)


def post(r, path, body):
    return r.request("POST", path, body)


def run_of(r, run_id):
    res = api(r, "GET", f"/api/runs/{run_id}")
    eq(res.status, 200, f"GET /api/runs/{run_id}: {res.body}")
    return res.json()


def ended(r, run_id, states=("succeeded", "failed", "dead", "cancelled")):
    return wait_until(lambda: (lambda run: run if run["state"] in states else None)(run_of(r, run_id)),
                      10, f"run {run_id} to reach {states}")


def submit(r, path, body):
    res = post(r, path, body)
    eq(res.status, 202, f"POST {path}: {res.body}")
    return res.json()["run_id"]


# Every endpoint of the API, with a path that exists or not: none answers
# anything but 401 without the right token.
ENDPOINTS = [("GET", "/api/flows"), ("GET", "/api/runs"), ("GET", "/api/runs?state=dead"),
             ("GET", "/api/runs/01a2-none"), ("POST", "/api/runs/01a2-none/retry"),
             ("POST", "/api/runs/01a2-none/cancel"), ("POST", "/api/reload"),
             ("POST", "/api/flows/echo/pause"), ("POST", "/api/flows/echo/resume"), ("GET", "/api/nothing")]


@test
def health_ready_and_metrics_need_no_token():
    with rill({"echo.lua": ECHO}) as r:
        res = r.admin("GET", "/healthz")
        eq((res.status, res.json()), (200, {"status": "ok"}), "/healthz")
        r.wait_ready()  # "starting" until the start is over, which may come after the port opens
        res = r.admin("GET", "/readyz")
        eq(res.status, 200, f"/readyz: {res.body}")
        eq(res.json(), {"status": "ready", "flows": 1}, "/readyz body")
        res = r.admin("GET", "/metrics")
        if os.path.exists(os.path.join(ROOT, "stdlib", "rill", "metrics.lua")):
            eq(res.status, 200, f"/metrics: {res.body[:200]}")
            eq(res.headers["content-type"].split(";")[:2], ["text/plain", " version=0.0.4"], "content type")
        else:
            eq(res.status, 404, "/metrics without rill.metrics")
        eq(r.admin("POST", "/healthz").status, 405, "POST /healthz")
        # the webhook listener does not serve the admin's paths
        eq(r.request("GET", "/healthz").status, 404, "/healthz on the webhook address")


@test
def readyz_is_503_with_a_reason_when_the_store_is_unreachable():
    pg = Postgres()
    with rill({"echo.lua": ECHO}, env={"RILL_STORE": pg.new_database()}) as r:
        r.wait_ready()  # with Postgres up (a loaded machine may take more than a poll to get there)
        pg.stop()
        res = r.admin("GET", "/readyz")
        eq(res.status, 503, f"/readyz with Postgres down: {res.body}")
        eq(res.json()["status"], "not ready", "status")
        assert res.json()["reason"].startswith("store unreachable"), res.body
        eq(r.admin("GET", "/healthz").status, 200, "/healthz: the process is up")
        r.kill()  # its store is gone: how it winds down is not this test's subject


@test
def every_endpoint_requires_the_bearer_token():
    with rill({"echo.lua": ECHO}) as r:
        wrong_same_length = TOKEN[:-1] + ("x" if TOKEN[-1] != "x" else "y")
        for method, path in ENDPOINTS:
            for headers in ({}, {"Authorization": f"Bearer {wrong_same_length}"},
                            {"Authorization": "Bearer"}, {"Authorization": f"Basic {TOKEN}"},
                            {"Authorization": f"Bearer {TOKEN}x"}):
                res = r.admin(method, path, headers=headers)
                eq(res.status, 401, f"{method} {path} with {headers}")
                eq(res.headers.get("www-authenticate"), 'Bearer realm="rill admin"', "WWW-Authenticate")
                assert "bearer token" in res.json()["error"], res.body
            res = api(r, method, path)
            assert res.status != 401, f"{method} {path} with the token: {res}"
        # the token never reaches the log
        assert not any(TOKEN in json.dumps(l) for l in r.log_lines()), "token in a log line"


@test
def no_token_configured_disables_the_api_and_console_loudly():
    with Rill({"echo.lua": ECHO}) as r:
        r.wait_log(msg_has="ADMIN API DISABLED")
        for method, path in ENDPOINTS + [("GET", "/console/"), ("GET", "/console/console.js")]:
            res = r.admin(method, path, token="anything")
            eq(res.status, 403, f"{method} {path}")
            eq(res.json()["error"], "admin API disabled: set RILL_ADMIN_TOKEN", "reason")
        eq(r.admin("GET", "/healthz").status, 200, "/healthz still served")
        r.wait_ready()  # /readyz still served


@test
def admin_listen_off_means_no_listener():
    with rill({"echo.lua": ECHO}, env={"RILL_ADMIN_LISTEN": "off"}) as r:
        r.wait_log(msg_has="admin listener off")
        try:
            socket.create_connection(("127.0.0.1", r.admin_port), timeout=1).close()
            raise AssertionError("something listens on the admin port")
        except ConnectionRefusedError:
            pass
        eq(post(r, "/hooks/echo", {"a": 1}).status, 202, "webhooks still served")


@test
def flows_lists_versions_triggers_load_errors_and_next_cron_fires():
    with rill({"echo.lua": ECHO, "tick.lua": TICK.replace('"* * * * * *"', '"0 3 * * *", tz = "Europe/Paris"'),
               "broken.lua": "return { triggers = {"}) as r:
        data = api(r, "GET", "/api/flows").json()
        by_file = {os.path.basename(f["file"]): f for f in data["flows"]}
        eq(sorted(by_file), ["broken.lua", "echo.lua", "tick.lua"], "files")
        echo = by_file["echo.lua"]
        eq((echo["name"], echo["status"], echo["paused"]), ("echo", "active", False), "echo")
        eq(len(echo["version"]), 12, "version (hash of the source)")
        assert echo["loaded_at"].endswith("Z"), echo
        eq(echo["triggers"], [{"type": "webhook", "method": "POST", "path": "/hooks/echo", "mode": "async",
                               "body": "json"}], "echo's triggers")
        assert "next_fires" not in echo, echo
        tick = by_file["tick.lua"]
        eq([(n["expr"], n["tz"]) for n in tick["next_fires"]], [("0 3 * * *", "Europe/Paris")], "next fires")
        assert tick["next_fires"][0]["next"][11:13] in ("01", "02"), tick  # 03:00 in Paris is 01:00 or 02:00 UTC
        broken = by_file["broken.lua"]
        eq((broken["status"], broken["paused"]), ("error", False), "broken")
        assert "name" not in broken, broken
        assert broken["load_error"].startswith(broken["file"] + ":"), broken
        # a file that breaks after loading keeps its version and shows its error
        r.write_flow("echo.lua", ECHO + "\n)")
        wait_until(lambda: (lambda f: f.get("load_error") and f)(
            {os.path.basename(f["file"]): f for f in api(r, "GET", "/api/flows").json()["flows"]}["echo.lua"]),
            10, "echo's load error")
        echo2 = {os.path.basename(f["file"]): f for f in api(r, "GET", "/api/flows").json()["flows"]}["echo.lua"]
        eq((echo2["version"], echo2["status"]), (echo["version"], "error"), "previous version kept")


def iso_time(s):
    """An ISO 8601 time as rill prints it ("...Z", milliseconds when not 0) -> datetime."""
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00"))


@test
def runs_are_listed_with_filters():
    up = Upstream()
    with rill({"echo.lua": ECHO, "checked.lua": CHECKED}, env={"UPSTREAM_URL": up.url}) as r:
        ok = [submit(r, "/hooks/echo", {"i": i}) for i in range(3)]
        dead = submit(r, "/hooks/checked", {"n": 1})
        for run_id in ok + [dead]:
            ended(r, run_id)
        runs = api(r, "GET", "/api/runs").json()["runs"]
        eq([x["id"] for x in runs], [dead] + ok[::-1], "all runs, newest first")
        eq([x["id"] for x in api(r, "GET", "/api/runs?flow=echo").json()["runs"]], ok[::-1], "flow=echo")
        only = api(r, "GET", "/api/runs?state=dead").json()["runs"]
        eq([(x["id"], x["flow"], x["state"]) for x in only], [(dead, "checked", "dead")], "state=dead")
        eq(only[0]["error"]["message"].split(": ")[-1], "upstream answered 500", "error in the list")
        eq(api(r, "GET", "/api/runs?flow=echo&state=dead").json()["runs"], [], "flow and state")
        eq([x["id"] for x in api(r, "GET", "/api/runs?limit=2").json()["runs"]], [dead, ok[2]], "limit")
        created = [x["created"] for x in runs]  # newest first
        # compared as times: "...:05Z" (a time on the second drops ".000")
        # sorts after "...:05.010Z" as text
        at = {x["id"]: iso_time(x["created"]) for x in runs}
        since = api(r, "GET", f"/api/runs?since={created[1]}").json()["runs"]
        eq([x["id"] for x in since], [x["id"] for x in runs if at[x["id"]] >= iso_time(created[1])], "since (ISO)")
        until = api(r, "GET", f"/api/runs?until={created[1]}").json()["runs"]
        eq([x["id"] for x in until], [x["id"] for x in runs if at[x["id"]] < iso_time(created[1])], "until (ISO)")
        eq(api(r, "GET", "/api/runs?since=0&until=1").json()["runs"], [], "until as milliseconds")
        for bad, why in (("state=finished", "not a run state"), ("limit=0", "limit"), ("limit=abc", "limit"),
                         ("limit=5000", "limit"), ("since=yesterday", "since"), ("flows=echo", "unknown parameter")):
            res = api(r, "GET", "/api/runs?" + bad)
            eq(res.status, 400, f"?{bad}")
            assert why in res.json()["error"], res.body


@test
def a_run_shows_payload_result_logs_steps_attempts_and_outbound_calls():
    up = Upstream()
    up.status = 200
    with rill({"checked.lua": CHECKED}, env={"UPSTREAM_URL": up.url}) as r:
        run = ended(r, submit(r, "/hooks/checked", {"n": 7}))
        eq(run["state"], "succeeded", "state")
        eq((run["payload"], run["result"]), ({"n": 7}, {"n": 7, "prepared": 7}), "payload and result")
        eq(run["trigger"], {"type": "webhook", "method": "POST", "path": "/hooks/checked"}, "trigger")
        eq([(s["seq"], s["name"], s["result"], s["attempts"]) for s in run["steps"]],
           [(1, "prepare", {"prepared": 7}, 1)], "steps")
        eq([(l["attempt"], l["level"], l["message"]) for l in run["logs"] if l["level"] != "debug"],
           [(1, "info", "step done"), (1, "info", "calling upstream"), (1, "info", "http")], "log lines")
        eq(run["logs"][[l["message"] for l in run["logs"]].index("calling upstream")]["fields"], {"n": 7}, "fields")
        eq([(a["attempt"], a["errors"]) for a in run["attempts"]], [(1, 0)], "attempts")
        eq([(o["attempt"], o["method"], o["url"], o["status"]) for o in run["outbound"]],
           [(1, "GET", up.url, 200)], "outbound calls")
        res = api(r, "GET", "/api/runs/no-such-run")
        eq((res.status, res.json()["error"]), (404, "no run no-such-run"), "unknown run")


@test
def retry_runs_a_dead_run_again():
    up = Upstream()
    with rill({"checked.lua": CHECKED}, env={"UPSTREAM_URL": up.url}) as r:
        run_id = submit(r, "/hooks/checked", {"n": 2})
        eq(ended(r, run_id)["state"], "dead", "first outcome")
        up.status = 200
        res = api(r, "POST", f"/api/runs/{run_id}/retry")
        eq((res.status, res.json()), (200, {"id": run_id, "state": "queued"}), "retry")
        run = ended(r, run_id)
        eq((run["state"], run["attempt"], run["result"]), ("succeeded", 2, {"n": 2, "prepared": 2}), "after retry")
        eq([(a["attempt"], a["errors"] > 0) for a in run["attempts"]], [(1, True), (2, False)], "both attempts")
        eq([o["status"] for o in run["outbound"]], [500, 200], "each attempt's call")
        res = api(r, "POST", f"/api/runs/{run_id}/retry")
        eq(res.status, 409, "retry of a succeeded run")
        assert "is succeeded" in res.json()["error"], res.body
        eq(api(r, "POST", "/api/runs/nope/retry").status, 404, "retry of an unknown run")


@test
def cancel_ends_a_waiting_run_for_good():
    with rill({"waiting.lua": WAITING}) as r:
        retrying = submit(r, "/hooks/waiting", {})
        ended(r, retrying, ("retrying",))
        sleeping = submit(r, "/hooks/waiting", {"sleep": True})
        ended(r, sleeping, ("sleeping",))
        for run_id in (retrying, sleeping):
            res = api(r, "POST", f"/api/runs/{run_id}/cancel")
            eq((res.status, res.json()), (200, {"id": run_id, "state": "cancelled"}), "cancel")
            run = run_of(r, run_id)
            eq(run["state"], "cancelled", "state")
            assert run["finished"] and "next_try" not in run, run
            res = api(r, "POST", f"/api/runs/{run_id}/cancel")
            eq(res.status, 409, "cancel twice")
            assert "only a queued, retrying, sleeping or waiting run" in res.json()["error"], res.body
        eq([x["id"] for x in api(r, "GET", "/api/runs?state=cancelled").json()["runs"]], [sleeping, retrying],
           "state=cancelled")
        eq(api(r, "POST", "/api/runs/nope/cancel").status, 404, "cancel of an unknown run")
        eq(r.runs("show", retrying)["state"], "cancelled", "the store's state (rill runs show)")


AWAITING = """
return {
  triggers = { webhook { path = "/hooks/awaiting", mode = "async" } },
  run = function(ctx) return wait_for("reply", { event = "reply", timeout = "1h" }) end,
}"""


@test
def a_run_waiting_for_an_event_is_listed_as_waiting_and_can_be_cancelled():
    with rill({"awaiting.lua": AWAITING}) as r:
        run_id = submit(r, "/hooks/awaiting", {})
        ended(r, run_id, ("waiting",))
        res = api(r, "GET", "/api/runs?state=waiting")
        eq(res.status, 200, f"state=waiting: {res.body}")
        eq([x["id"] for x in res.json()["runs"]], [run_id], "the waiting run")
        assert res.json()["runs"][0].get("next_try"), res.body  # its timeout
        eq(api(r, "POST", f"/api/runs/{run_id}/cancel").status, 200, "cancel")
        eq(api(r, "GET", "/api/runs?state=waiting").json()["runs"], [], "none waits any more")


@test
def reload_does_what_a_file_change_does():
    with rill({"echo.lua": ECHO}, env={"RILL_WATCH": "false"}) as r:
        r.write_flow("later.lua", ECHO.replace("/hooks/echo", "/hooks/later"))
        r.write_flow("bad.lua", "return 42")
        eq(post(r, "/hooks/later", {}).status, 404, "not loaded before the reload")
        res = api(r, "POST", "/api/reload")
        eq(res.status, 200, f"reload: {res.body}")
        body = res.json()
        eq([os.path.basename(f) for f in body["loaded"]], ["later.lua"], "loaded")
        eq(body["removed"], [], "removed")
        eq([os.path.basename(f["file"]) for f in body["failed"]], ["bad.lua"], "failed")
        assert "must return a table" in body["failed"][0]["error"], body
        eq(post(r, "/hooks/later", {}).status, 202, "served after the reload")
        r.wait_log(msg="flows reloaded", why="admin API")
        eq(api(r, "GET", "/api/reload").status, 405, "GET /api/reload")


@test
def a_paused_flow_starts_no_runs_until_resumed():
    up = Upstream()
    d = temp_dir()
    with rill({"checked.lua": CHECKED, "echo.lua": ECHO, "tick.lua": TICK},
              env={"UPSTREAM_URL": up.url}, dir=d) as r:
        dead = submit(r, "/hooks/checked", {"n": 3})
        ended(r, dead)
        for name in ("checked", "tick"):
            res = api(r, "POST", f"/api/flows/{name}/pause")
            eq((res.status, res.json()), (200, {"flow": name, "paused": True, "changed": True}), f"pause {name}")
        eq(api(r, "POST", "/api/flows/checked/pause").json()["changed"], False, "pausing twice changes nothing")
        flows = {f["name"]: f for f in api(r, "GET", "/api/flows").json()["flows"]}
        eq((flows["checked"]["status"], flows["checked"]["paused"]), ("paused", True), "listed as paused")
        assert flows["checked"]["paused_at"].endswith("Z"), flows["checked"]
        eq(flows["echo"]["paused"], False, "echo not paused")
        # webhooks: 503 with Retry-After, nothing stored
        res = post(r, "/hooks/checked", {"n": 4})
        eq((res.status, res.headers.get("retry-after")), (503, "60"), "webhook of a paused flow")
        assert "paused" in res.json()["error"], res.body
        # stored runs stay queued: the retried dead run waits while echo's runs go through
        up.status = 200
        eq(api(r, "POST", f"/api/runs/{dead}/retry").status, 200, "retry while paused")
        ticks_before = len(api(r, "GET", "/api/runs?flow=tick").json()["runs"])
        # cron ticks are skipped, not stored; two skipped ticks after the
        # retry mean many polls (every 0.1 s) have passed the queued run by
        skipped = len(r.log_lines(msg="cron tick skipped: the flow is paused", flow="tick"))
        wait_until(lambda: len(r.log_lines(msg="cron tick skipped: the flow is paused", flow="tick")) >= skipped + 2,
                   10, "two skipped cron ticks")
        eq(run_of(r, dead)["state"], "queued", "the paused flow's run")
        eq(api(r, "GET", "/api/runs?flow=checked").json()["runs"][0]["id"], dead, "no new run stored")
        eq(len(api(r, "GET", "/api/runs?flow=tick").json()["runs"]), ticks_before, "no tick stored")
        ended(r, submit(r, "/hooks/echo", {}))
    # the pause is in the store: it holds after a restart
    with rill({"checked.lua": CHECKED, "echo.lua": ECHO, "tick.lua": TICK},
              env={"UPSTREAM_URL": up.url}, dir=d) as r:
        eq(post(r, "/hooks/checked", {"n": 5}).status, 503, "still paused after a restart")
        res = api(r, "POST", "/api/flows/checked/resume")
        eq((res.status, res.json()), (200, {"flow": "checked", "paused": False, "changed": True}), "resume")
        eq(ended(r, dead)["state"], "succeeded", "the queued run runs once resumed")
        eq(post(r, "/hooks/checked", {"n": 6}).status, 202, "webhook after resume")
        api(r, "POST", "/api/flows/tick/resume")
        wait_until(lambda: len(api(r, "GET", "/api/runs?flow=tick").json()["runs"]) > ticks_before, 10,
                   "a cron tick after resume")
        for action in ("pause", "resume"):
            res = api(r, "POST", f"/api/flows/nope/{action}")
            eq((res.status, res.json()["error"]), (404, "no flow named nope"), f"{action} of an unknown flow")


@test
def a_pause_holds_in_every_instance_sharing_a_postgres_store():
    pg = Postgres()
    store = {"RILL_STORE": pg.new_database()}
    with rill({"echo.lua": ECHO}, env=store) as a, rill({"echo.lua": ECHO}, env=store) as b:
        eq(api(a, "POST", "/api/flows/echo/pause").status, 200, "pause on a")
        eq(post(a, "/hooks/echo", {}).status, 503, "a: paused at once")
        wait_until(lambda: post(b, "/hooks/echo", {}).status == 503, 10, "b to see the pause")
        eq(api(b, "GET", "/api/flows").json()["flows"][0]["paused"], True, "b lists it paused")
        eq(api(b, "POST", "/api/flows/echo/resume").status, 200, "resume on b")
        wait_until(lambda: post(a, "/hooks/echo", {}).status == 202, 10, "a to see the resume")
    pg.stop()


@test
def unknown_paths_and_methods():
    with rill({"echo.lua": ECHO}) as r:
        res = api(r, "GET", "/api/nothing")
        eq(res.status, 404, "unknown endpoint")
        assert "no admin API endpoint" in res.json()["error"], res.body
        res = api(r, "DELETE", "/api/runs/abc")
        eq((res.status, res.headers.get("allow")), (405, "GET"), "DELETE a run")
        eq(api(r, "GET", "/api/runs/abc/retry").status, 405, "GET retry")
        eq(r.admin("GET", "/elsewhere").status, 404, "outside the admin's paths")
        res = r.admin("GET", "/")
        eq((res.status, res.headers.get("location")), (302, "/console/"), "/ goes to the console")
        # raw bytes of the path quoted in the answer made it JSON no parser takes
        import socket
        with socket.create_connection(("127.0.0.1", r.admin_port), timeout=10) as s:
            s.sendall(b"GET /\xff\xfe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            got = b""
            while chunk := s.recv(65536):
                got += chunk
        head, _, body = got.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 404"), got
        assert "nothing at" in json.loads(body.decode("utf-8"))["error"], body


@test
def console_files_are_served_without_data():
    with rill({"echo.lua": ECHO}) as r:
        for path, ctype in (("/console/", "text/html"), ("/console/console.js", "text/javascript"),
                            ("/console/console.css", "text/css")):
            res = r.admin("GET", path)
            eq((res.status, res.headers["content-type"].split(";")[0]), (200, ctype), path)
            assert "default-src 'self'" in res.headers["content-security-policy"], res.headers
        assert '<script src="/console/console.js"' in r.admin("GET", "/console/").body
        eq(r.admin("GET", "/console/nope.js").status, 404, "unknown console file")
        eq(r.admin("POST", "/console/").status, 405, "POST to the console")


if __name__ == "__main__":
    main()
