"""The sequence diagram of one run: `rill runs show ID --diagram` prints
Mermaid text of a stored run of a real rill (trigger, steps, a connector's
call named by its service, a direct call named by its host, an event
emitted, a wait it ended, a sleep with its duration, the run of another flow it started and awaited),
and the admin API gives the console the same sequence."""
from lib.harness import Rill, eq, main, test, wait_until
from lib.upstream import Upstream
from standins import Slack

TOKEN = "diagram-7f3a90c1"

FLOWS = {
    "notify.lua": """
return {
  triggers = { webhook { path = "/hooks/notify", mode = "async" } },
  run = function(ctx)
    step("prepare", function() return { n = ctx.payload.n } end)
    step("tell slack", function() return slack.webhook { text = "n is " .. ctx.payload.n } end)
    step("check upstream", function() return http.get(env.UPSTREAM_URL).status end)
    emit("notified", { n = ctx.payload.n })
    local got = wait_for("confirmation", { event = "notified", match = { n = ctx.payload.n }, timeout = "1h" })
    sleep_for("nap", 0.2)
    flows.trigger("child", { n = ctx.payload.n })
    return { n = got.data.n }
  end,
}""",
    "child.lua": """
return {
  triggers = { from_flow() },
  run = function(ctx) return { seen = ctx.payload.n } end,
}""",
}


def finished(r, run_id):
    return wait_until(lambda: (lambda run: run if run["state"] in ("succeeded", "dead", "failed") else None)(
        r.runs("show", run_id)), 15, f"run {run_id} to end")


@test
def runs_show_diagram_prints_the_sequence_of_a_stored_run():
    up = Upstream()
    up.status = 200
    with Slack() as sl:
        with Rill(FLOWS, env={"UPSTREAM_URL": up.url, "SLACK_WEBHOOK_URL": sl.webhook_url,
                              "RILL_ADMIN_TOKEN": TOKEN, "RILL_POLL_INTERVAL": "0.1s"}) as r:
            res = r.request("POST", "/hooks/notify", {"n": 7})
            eq(res.status, 202, "webhook")
            run_id = res.json()["run_id"]
            run = finished(r, run_id)
            eq(run["state"], "succeeded", f"the run: {run}")
            code, out, err = r.runs_cli("show", run_id, "--diagram")
            eq(code, 0, f"runs show --diagram: {err}")
            lines = out.splitlines()
            eq(lines[0], "sequenceDiagram", out)
            port = up.url.split(":")[2].split("/")[0]
            for want in ["  participant T as webhook POST /hooks/notify",
                         "  participant F as notify",
                         "  participant S1 as slack",
                         f"  participant S2 as 127.0.0.1:{port}",
                         "  participant E as events",
                         "  participant R1 as child",
                         "  T->>F: webhook POST /hooks/notify",
                         "  F->>F: prepare",
                         "  F->>F: tell slack",
                         "  F->>S2: GET /check",
                         "  F-)E: emit notified",
                         "  F-)E: wait for notified (confirmation)",
                         "  E--)F: notified",
                         "  Note over F: sleeps 0s (nap)",
                         "  R1-->>F: succeeded",
                         "  Note over F: succeeded"]:
                assert want in lines, f"{want!r} not in:\n{out}"
            assert any(line.startswith("  F->>S1: POST /services/") for line in lines), out
            assert any(line.startswith("  F->>R1: starts run ") for line in lines), out
            assert any(line.startswith("  S1-->>F: 200 (") for line in lines), out
            assert any(line.startswith("  S2-->>F: 200 (") for line in lines), out
            # the calls come in the order the run made them
            assert out.index("F->>S1") < out.index("F->>S2") < out.index("emit notified"), out

            # the console's data: the same sequence in the run's detail
            res = r.admin("GET", f"/api/runs/{run_id}", token=TOKEN)
            eq(res.status, 200, res.body)
            seq = res.json()["sequence"]
            eq([p["label"] for p in seq["participants"]],
               ["webhook POST /hooks/notify", "notify", "slack", f"127.0.0.1:{port}", "events", "child"], "participants")
            texts = [m["text"] for m in seq["messages"]]
            assert "emit notified" in texts and any(t.startswith("starts run ") for t in texts), texts


FAN = """
return {
  triggers = { webhook { path = "/hooks/fan", mode = "async" } },
  run = function(ctx)
    for i = 1, 25 do flows.trigger("child", { n = i }, { wait = false }) end
    log.info("all started")
  end,
}"""


@test
def a_fan_out_is_noted_in_the_record_up_to_twenty_runs_and_keeps_the_flows_own_lines():
    with Rill({"fan.lua": FAN, "child.lua": FLOWS["child.lua"]}, env={"RILL_POLL_INTERVAL": "0.1s"}) as r:
        res = r.request("POST", "/hooks/fan", {})
        eq(res.status, 202, "webhook")
        run = finished(r, res.json()["run_id"])
        msgs = [line["message"] for line in run["logs"]]
        eq(msgs.count("started a run"), 20, f"started runs noted: {msgs}")
        eq(msgs.count("started more runs"), 1, "then one line for the rest")
        assert "all started" in msgs, msgs
        code, out, err = r.runs_cli("show", run["id"], "--diagram")
        eq(code, 0, err)
        assert "  Note over F: more runs started than shown\n" in out, out
        eq(out.count("F-)R1: starts run "), 20, out)


@test
def runs_show_diagram_of_an_unknown_run_is_a_clear_error():
    with Rill({"child.lua": FLOWS["child.lua"]}) as r:
        code, out, err = r.runs_cli("show", "nope", "--diagram")
        eq(code, 1, "exit code")
        assert "no run nope" in err, err


if __name__ == "__main__":
    main()
