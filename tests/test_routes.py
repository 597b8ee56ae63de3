"""Route conflicts never take a flow offline: at start two flows on one
route (method and path) stop rill from starting, naming both files and the
lines of their triggers; on a reload the flow already serving the route
keeps it and the newcomer is refused, naming both; every other flow keeps
serving."""
import os
import signal
import subprocess

from lib.harness import Rill, eq, free_port, main, run_cli, temp_dir, test


def owner(v):
    return f"""-- the owner of /hooks/quote
return {{
  triggers = {{ webhook {{ path = "/hooks/quote" }} }},
  run = function() return {{ by = "owner", v = {v} }} end,
}}"""


# sorts before quote.lua: the order of loading must not give it the route
NEWCOMER = """return {
  description = "a second flow on the owner's route",
  triggers = {
    manual(),
    webhook { path = "/hooks/quote" },
  },
  run = function() return { by = "newcomer" } end,
}"""

OTHER = 'return { triggers = { webhook { path = "/hooks/other" } }, run = function() return "other" end }'


@test
def at_start_two_flows_on_one_route_stop_rill_from_starting():
    d = temp_dir("rill-routes-")
    flows = os.path.join(d, "flows")
    os.makedirs(flows)
    for name, src in {"quote.lua": owner(1), "a-newcomer.lua": NEWCOMER, "other.lua": OTHER}.items():
        with open(os.path.join(flows, name), "w") as f:
            f.write(src)
    try:
        code, _, err = run_cli("serve", "--flows", flows, "--listen", f"127.0.0.1:{free_port()}",
                               env={"RILL_ADMIN_LISTEN": "off", "RILL_LOG_FORMAT": "text"}, cwd=d, timeout=20)
    except subprocess.TimeoutExpired:
        raise AssertionError("rill started (and kept serving) with two flows on one route")
    assert code != 0, f"exit code {code}: {err}"
    for expected in [f"{flows}/a-newcomer.lua:5", f"{flows}/quote.lua:3", "POST /hooks/quote",
                     "rill does not start"]:
        assert expected in err, f"{expected!r} not in:\n{err}"


@test
def on_a_reload_the_owner_keeps_its_route_and_the_newcomer_is_refused_naming_both():
    with Rill({"quote.lua": owner(1), "other.lua": OTHER}) as r:
        n = r.reloads()
        r.write_flow("a-newcomer.lua", NEWCOMER)
        r.wait_reload(n)
        line = r.wait_log(msg_has="flow rejected")
        for expected in [f"{r.flows_dir}/a-newcomer.lua:5:", "already served by", f"{r.flows_dir}/quote.lua:3"]:
            assert expected in line["msg"], f"{expected!r} not in {line}"
        eq(r.request("POST", "/hooks/quote", {}).json(), {"by": "owner", "v": 1}, "the owner keeps the route")
        eq(r.request("POST", "/hooks/other", {}).json(), "other", "another flow keeps serving")


@test
def an_owner_changed_in_the_same_reload_keeps_its_route():
    # the owner's file and the newcomer are saved together, then one SIGHUP:
    # the owner (changed, still on the route) keeps it, in its new version
    with Rill({"quote.lua": owner(1), "other.lua": OTHER}, env={"RILL_WATCH": "false"}) as r:
        r.write_flow("a-newcomer.lua", NEWCOMER)
        r.write_flow("quote.lua", owner(2))
        n = r.reloads()
        r.signal(signal.SIGHUP)
        r.wait_reload(n)
        eq(r.request("POST", "/hooks/quote", {}).json(), {"by": "owner", "v": 2}, "the owner, new version")
        line = r.wait_log(msg_has="flow rejected")
        assert f"{r.flows_dir}/a-newcomer.lua:5:" in line["msg"], line
        eq(r.request("POST", "/hooks/other", {}).json(), "other", "another flow keeps serving")


@test
def an_admin_reload_refuses_the_newcomer_and_says_why():
    token = "routes-4f1c9a"
    with Rill({"quote.lua": owner(1), "other.lua": OTHER},
              env={"RILL_WATCH": "false", "RILL_ADMIN_TOKEN": token}) as r:
        r.write_flow("a-newcomer.lua", NEWCOMER)
        r.write_flow("quote.lua", owner(2))
        res = r.admin("POST", "/api/reload", token=token)
        eq(res.status, 200, f"reload: {res.body}")
        failed = res.json()["failed"]
        eq([f["file"] for f in failed], [f"{r.flows_dir}/a-newcomer.lua"], "refused")
        assert (f"{r.flows_dir}/a-newcomer.lua:5: webhook POST /hooks/quote is already served by "
                f"{r.flows_dir}/quote.lua:3") in failed[0]["error"], failed
        eq(r.request("POST", "/hooks/quote", {}).json(), {"by": "owner", "v": 2}, "the owner, new version")
        eq(r.request("POST", "/hooks/other", {}).json(), "other", "another flow keeps serving")


if __name__ == "__main__":
    main()
