// Browser tests for gabbro's web UI, in Debian's headless Chromium driven by
// playwright-core (no browser download). Started by crates/ui/tests/browser.rs,
// which serves a seeded UI and passes BASE_URL, SHOTS_DIR and SEED (JSON).
// Each step asserts what a user would see, and saves a screenshot.
import { launchChromium } from "./lib.mjs";
import { mkdirSync } from "node:fs";
import path from "node:path";
import assert from "node:assert/strict";

const BASE = process.env.BASE_URL;
const SHOTS = process.env.SHOTS_DIR;
const SEED = JSON.parse(process.env.SEED || "{}");
if (!BASE || !SHOTS || !SEED.project_id) {
  console.error("BASE_URL, SHOTS_DIR and SEED must be set (run through cargo test: crates/ui/tests/browser.rs)");
  process.exit(2);
}
mkdirSync(SHOTS, { recursive: true });

const browser = await launchChromium();

let step = 0;
async function shot(page, name) {
  step += 1;
  const file = path.join(SHOTS, `${String(step).padStart(2, "0")}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  console.log(`screenshot ${file}`);
}
function log(msg) { console.log(`ok - ${msg}`); }

const P = `${BASE}/projects/${SEED.project_id}`;
try {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  const page = await ctx.newPage();
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(String(e)));

  // 1. Sign in as the first admin, who must change the password first.
  await page.goto(`${BASE}/`);
  assert.equal(new URL(page.url()).pathname, "/sign-in");
  await shot(page, "sign-in");
  await page.fill("input[name=email]", "admin@localhost");
  await page.fill("input[name=password]", SEED.admin_password);
  await Promise.all([page.waitForURL("**/password"), page.click("button[type=submit]")]);
  await page.getByText("Choose a new password").waitFor();
  await shot(page, "change-password");
  await page.fill("input[name=current]", SEED.admin_password);
  await page.fill("input[name=new]", "browser-test-new-password");
  await page.fill("input[name=confirm]", "browser-test-new-password");
  await Promise.all([page.waitForURL("**/projects"), page.click("form.stack button[type=submit]")]);
  log("signed in and changed the first admin's password");
  await page.getByRole("link", { name: /Health sync/ }).waitFor();
  await shot(page, "projects");

  // 2. The workflow diagram.
  await page.getByRole("link", { name: /Health sync/ }).click();
  await page.getByRole("link", { name: "Patients to DHIS2" }).click();
  await page.locator("svg.diagram").waitFor();
  assert.equal(await page.locator("svg.diagram .node.job").count(), 2);
  assert.equal(await page.locator("svg.diagram .node.trigger").count(), 2);
  assert.equal(await page.locator("svg.diagram .edge").count(), 3);
  assert.match(await page.locator(".webhook-url").first().innerText(), /\/i\/patients$/);
  await shot(page, "workflow-diagram");
  log("workflow diagram drawn with 2 triggers, 2 jobs, 3 edges and the webhook URL");

  // 3. Edit a job from the diagram: a new snapshot.
  await page.locator(`svg.diagram a.node[data-id="${SEED.job2_id}"]`).click();
  await page.waitForURL(`**/jobs/${SEED.job2_id}`);
  await page.fill("textarea[name=body]", "fn(state => {\n  state.data.fixed = true;\n  return state;\n});");
  await page.click("#job-form button[type=submit]");
  await page.getByText("Saved as a new version").waitFor();
  assert.match(await page.inputValue("textarea[name=body]"), /fixed = true/);
  await shot(page, "job-editor");
  log("job edited and saved");

  // 4. The run inspector of a failed run: steps, logs with a level filter, dataclips.
  await page.goto(`${P}/runs/${SEED.failed_run_id}`);
  assert.equal(await page.locator("tr.step").count(), 2);
  await page.locator("details.dataclip summary", { hasText: "Output of step 1" }).click();
  await page.getByText("Only the beginning is shown").waitFor();
  assert.equal(await page.locator("#logs .log:visible").count(), 2, "info and above by default");
  await page.selectOption("#log-level", "error");
  assert.equal(await page.locator("#logs .log:visible").count(), 1, "error only");
  await page.selectOption("#log-level", "debug");
  assert.equal(await page.locator("#logs .log:visible").count(), 3);
  const html = await page.content();
  assert.ok(!html.includes("<script>alert"), "markup in logs and dataclips is escaped");
  await shot(page, "run-inspector");
  log("run inspector shows steps, filtered logs, truncated dataclips");

  // 5. History: newest first, filter, select and rerun.
  await page.goto(`${P}/history`);
  assert.ok((await page.locator("tr.wo").count()) >= 4);
  await page.selectOption("select[name=state]", "failed");
  await page.click(".filters button[type=submit]");
  await page.waitForURL("**state=failed**");
  assert.equal(await page.locator("tr.wo").count(), 1);
  await page.locator("tr.wo input.wo-select").check();
  await Promise.all([page.waitForURL("**rerun=1**"), page.click("#rerun-selected")]);
  await page.getByText("1 work order(s) queued").waitFor();
  await shot(page, "history");
  log("history filtered by state, one work order rerun");

  // 6. Retry from the failed step.
  await page.goto(`${P}/runs/${SEED.failed_run_id}`);
  await Promise.all([
    page.waitForURL((u) => u.pathname.includes("/runs/") && !u.pathname.endsWith(SEED.failed_run_id)),
    page.locator(`tr.step[data-step="${SEED.step2_id}"] button.retry`).click(),
  ]);
  assert.equal(await page.locator("#run-state").innerText(), "available");
  assert.equal(await page.locator("tr.step").count(), 1, "the upstream step is reused");
  await shot(page, "retried-run");
  log("retried from step 2: a new run, available, reusing step 1");

  // 7. Live logs of an active run (the test plays the worker, writing lines).
  await page.goto(`${P}/runs/${SEED.active_run_id}`);
  const before = await page.locator("#logs .log").count();
  await page.waitForFunction((n) => document.querySelectorAll("#logs .log").length >= n + 2, before, { timeout: 20000 });
  await page.getByText(/live line/).first().waitFor();
  await shot(page, "live-logs");
  log("log lines appeared live without a reload");

  // 8. Credentials: created, never shown again.
  await page.goto(`${P}/credentials`);
  await page.fill("#new-credential input[name=name]", "Clinic API");
  await page.fill("#new-credential input[name=schema]", "http");
  await page.fill("#new-credential textarea[name=body]", '{"apiKey": "sk-browser-secret"}');
  await page.click("#new-credential button[type=submit]");
  await page.getByText("Credential saved.").waitFor();
  await page.getByRole("link", { name: "Clinic API" }).click();
  assert.ok(!(await page.content()).includes("sk-browser-secret"), "secret never sent back");
  await page.goto(`${P}/credentials`);
  await shot(page, "credentials");
  log("credential saved; its secret is not in any page");

  // 9. Queue dashboard.
  await page.goto(`${BASE}/queue`);
  await page.getByText("Runs by state").waitFor();
  await shot(page, "queue");
  log("queue dashboard");

  // 10. Members: the owner gives the editor the admin role.
  await page.goto(`${P}/members`);
  await page.fill("#add-member input[name=email]", "outsider@example.org");
  await page.selectOption("#add-member select[name=role]", "viewer");
  await page.click("#add-member button[type=submit]");
  await page.getByText("Members updated.").waitFor();
  assert.ok((await page.content()).includes("outsider@example.org"));
  await shot(page, "members");
  log("a member added with a role");
  assert.deepEqual(pageErrors, [], "no JavaScript errors in the pages");
  await ctx.close();

  // 11. A viewer is refused an edit.
  const vctx = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  const v = await vctx.newPage();
  await v.goto(`${BASE}/sign-in`);
  await v.fill("input[name=email]", "viewer@example.org");
  await v.fill("input[name=password]", SEED.viewer_password);
  await Promise.all([v.waitForURL("**/projects"), v.click("button[type=submit]")]);
  await v.goto(`${P}/jobs/${SEED.job1_id}`);
  await v.getByText("your role does not allow editing").waitFor();
  assert.equal(await v.locator("#job-form button[type=submit]").count(), 0);
  // Even a hand-made request with the viewer's own CSRF token is refused.
  const status = await v.evaluate(async () => {
    const form = new FormData(document.getElementById("job-form"));
    form.set("body", "hacked");
    const r = await fetch(location.pathname, { method: "POST", body: new URLSearchParams(form), redirect: "manual" });
    return r.status;
  });
  assert.equal(status, 403);
  await shot(v, "viewer-refused");
  log("viewer sees a read-only job and is refused an edit (403)");
  await vctx.close();
  console.log("all browser checks passed");
} catch (e) {
  console.error(`not ok - ${e.stack || e}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
