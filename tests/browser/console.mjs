// console.mjs: drives the web console in Debian's headless chromium (never a
// downloaded browser) for tests/test_console.py. Usage:
//   node console.mjs ADMIN_URL TOKEN RUN_ID SCREENSHOT
// Opens the runs page, types the token, filters dead runs, opens RUN_ID (a
// dead run), checks its timeline, clicks Retry and waits for the page to show
// it succeeded, reads the run's sequence diagram (drawn in the page, as SVG)
// and saves a screenshot of the page and one of the diagram
// (SCREENSHOT with -sequence before .png); then pauses and resumes the flow and
// reloads the flows on the flows page; then changes flow tuned's setting
// threshold (a bad value first). Prints one JSON line of what it saw;
// exits 1 on the first thing that is not as expected.
import { chromium } from "playwright-core";

const [base, token, runId, screenshot] = process.argv.slice(2);
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
  // the console needs nothing but rill: no CDN, no font, no script from elsewhere
  page.on("request", (r) => {
    if (!r.url().startsWith(base + "/") && !r.url().startsWith("data:")) problems.push("request elsewhere: " + r.url());
  });

  await page.goto(base + "/console/#/runs");
  await page.waitForSelector("#login:not([hidden])", WAIT);
  await page.fill("#token", token);
  await page.click("#login button[type=submit]");

  // the runs page, then only dead runs
  const row = `#runs tr[data-run="${runId}"]`;
  await page.waitForSelector(row, WAIT);
  await page.selectOption("#f-state", "dead");
  await page.waitForFunction(() => location.hash === "#/runs?state=dead", null, WAIT);
  await page.waitForSelector(`${row} [data-state="dead"]`, WAIT);
  seen.dead_rows = await page.locator("#runs tbody tr").count();

  // the run: its error and its first attempt in the timeline
  await page.click(row);
  await page.waitForSelector("#retry", WAIT);
  seen.error = (await page.textContent("#run-error")).split("\n")[0];
  seen.attempts_before = await page.locator(".attempt").count();

  await page.click("#retry");
  await page.waitForSelector('#run-state [data-state="succeeded"]', WAIT);
  await page.waitForSelector('.attempt[data-attempt="2"]', WAIT);
  seen.attempts_after = await page.locator(".attempt").count();
  seen.result = JSON.parse(await page.textContent("#run-result"));
  seen.retry_button_after = await page.locator("#retry").count();

  // the run's sequence: participants, messages and notes drawn as SVG
  await page.waitForSelector("#sequence svg .seq-message", WAIT);
  seen.sequence = await page.evaluate(() => {
    const texts = (sel) => [...document.querySelectorAll(sel)].map((e) => e.textContent);
    return {
      participants: texts("#sequence .seq-participant text"),
      messages: texts("#sequence .seq-message text"),
      notes: texts("#sequence .seq-note text"),
      lifelines: document.querySelectorAll("#sequence .seq-lifeline").length,
      arrows: document.querySelectorAll("#sequence .seq-message line, #sequence .seq-message path").length,
      mermaid: (document.querySelector("#sequence-mermaid") || {}).textContent || "",
    };
  });
  await page.screenshot({ path: screenshot, fullPage: true });
  await page.locator("#sequence").screenshot({ path: screenshot.replace(/\.png$/, "-sequence.png") });

  // the flows page: pause the flow, resume it, reload
  const flow = 'tr[data-flow="checked"]';
  await page.click("#nav-flows");
  await page.waitForSelector(`${flow} [data-state="active"]`, WAIT);
  seen.flow_states = ["active"];
  await page.click(`${flow} button[data-action="pause"]`);
  await page.waitForSelector(`${flow} [data-state="paused"]`, WAIT);
  seen.flow_states.push("paused");
  await page.click(`${flow} button[data-action="resume"]`);
  await page.waitForSelector(`${flow} [data-state="active"]`, WAIT);
  seen.flow_states.push("active");
  await page.click("#reload");
  await page.waitForFunction(() => (document.querySelector("#notice") || {}).textContent?.startsWith("Reloaded"),
    null, WAIT);
  seen.reload_notice = await page.textContent("#notice");

  seen.problems = problems.slice();
  // a setting: shown, a bad value refused with the server's reason, a good one applied
  // (the browser logs the refusal's 400 as a console error: kept apart)
  const setting = 'tr[data-flow="tuned"] [data-setting="threshold"]';
  await page.waitForSelector(setting, WAIT);
  seen.setting_before = (await page.locator(setting).locator("xpath=..").textContent()).trim();
  page.once("dialog", (d) => d.accept("lots"));
  await page.click(setting);
  await page.waitForFunction(() => (document.querySelector("#notice") || {}).className === "error", null, WAIT);
  seen.bad_notice = await page.textContent("#notice");
  page.once("dialog", (d) => d.accept("25000"));
  await page.click(setting);
  await page.waitForFunction(() => (document.querySelector("#notice") || {}).textContent?.includes("changed"),
    null, WAIT);
  seen.setting_after = (await page.locator(setting).locator("xpath=..").textContent()).trim();
  seen.settings_problems = problems.slice(seen.problems.length);
  console.log(JSON.stringify(seen));
} catch (e) {
  console.log(JSON.stringify({ failed: String(e && e.message || e), seen }));
  process.exitCode = 1;
} finally {
  await browser.close();
}
