"""The generated parts of the docs are current: the sequence diagrams of
the company flows in docs/company-flows.md are made again from a real `rill
test --diagrams` run of flows/*.test.lua (tools/docs-diagrams.sh, as `make
docs` does) into a temporary file, which must equal the committed one."""
import difflib
import os
import re
import subprocess

from lib.harness import RILL, ROOT, eq, main, temp_dir, test

DOC = os.path.join(ROOT, "docs", "company-flows.md")
BEGIN, END = "<!-- diagrams:begin -->", "<!-- diagrams:end -->"


def company_flows():
    return sorted(f[:-len(".test.lua")] for f in os.listdir(os.path.join(ROOT, "flows")) if f.endswith(".test.lua"))


def generate(out):
    p = subprocess.run([os.path.join(ROOT, "tools", "docs-diagrams.sh"), RILL, DOC, out], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    eq(p.returncode, 0, f"tools/docs-diagrams.sh\n{p.stdout}\n{p.stderr}")


@test
def company_flows_docs_hold_a_generated_diagram_per_flow_and_are_current():
    with open(DOC) as f:
        committed = f.read()
    assert committed.count(BEGIN) == 1 and committed.count(END) == 1, "one generated section, between its markers"
    section = committed.split(BEGIN)[1].split(END)[0]
    shown = re.findall(r"^### (\S+)\n", section, re.M)
    eq(shown, company_flows(), "a diagram for each flow with a test file")
    eq(section.count("```mermaid\nsequenceDiagram\n"), len(shown), "one Mermaid sequence diagram each")
    out = os.path.join(temp_dir(), "company-flows.md")
    generate(out)
    with open(out) as f:
        fresh = f.read()
    if fresh != committed:
        diff = "".join(difflib.unified_diff(committed.splitlines(True), fresh.splitlines(True), "committed", "generated"))
        raise AssertionError("docs/company-flows.md is stale: run `make docs` and commit it\n" + diff[:4000])


if __name__ == "__main__":
    main()
