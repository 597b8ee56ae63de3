// event-runs.mjs: the console's run page of a run an event started, in
// Debian's headless chromium, for tests/test_console.py. Usage:
//   node event-runs.mjs ADMIN_URL TOKEN RUN_ID
// Opens RUN_ID's page (a run started by an event), reads which event started
// it, follows the link to the emitting run and reads the runs its events
// started. Prints one JSON line of what it saw; exits 1 on the first thing
// that is not as expected.
import { chromium } from "playwright-core";

const [base, token, runId] = process.argv.slice(2);
const WAIT = { timeout: 20000 };

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
const seen = {};
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const problems = [];
  page.on("pageerror", (e) => problems.push("page error: " + e.message));
  page.on("console", (m) => { if (m.type() === "error") problems.push("console error: " + m.text()); });

  await page.goto(base + "/console/#/runs/" + encodeURIComponent(runId));
  await page.waitForSelector("#login:not([hidden])", WAIT);
  await page.fill("#token", token);
  await page.click("#login button[type=submit]");

  await page.waitForSelector("#run-started-by", WAIT);
  seen.started_by = await page.textContent("#run-started-by");
  seen.emitted_by = await page.textContent("#run-emitted-by");
  await page.click("#run-emitted-by");
  await page.waitForSelector("#event-runs tbody tr", WAIT);
  seen.event_runs = await page.$$eval("#event-runs tbody tr", (rows) => rows.map((r) =>
    [...r.querySelectorAll("td")].map((td) => td.textContent)));
  seen.problems = problems;
  console.log(JSON.stringify(seen));
} catch (e) {
  console.log(JSON.stringify({ failed: String(e && e.message || e), seen }));
  process.exitCode = 1;
} finally {
  await browser.close();
}
