/**
 * The dashboard in a real browser: Debian's Chromium driven by playwright-core
 * against a real server process on loopback, with the scripted model.
 */
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { Effect } from "effect"
import { type Browser, chromium, type Page } from "playwright-core"
import { dataDir, type Running, startServer, stopServer } from "../server/TestServer.ts"

// The README's screenshots are rewritten only when asked (`DASHBOARD_SCREENSHOTS=1 npx vitest run test/dashboard`):
// otherwise every test run would leave the checkout changed.
const images =
  process.env.DASHBOARD_SCREENSHOTS === "1"
    ? Path.resolve(import.meta.dirname, "../../docs/images")
    : Fs.mkdtempSync(Path.join(Os.tmpdir(), "dashboard-screenshots-"))

let server: Running
let browser: Browser

beforeAll(async () => {
  server = await Effect.runPromise(startServer(dataDir()))
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
  })
}, 120_000)

afterAll(async () => {
  await browser?.close()
  if (server !== undefined) await Effect.runPromise(stopServer(server, "SIGKILL"))
})

/** A page that records every URL it requests, to prove the token never travels in one. */
const openPage = async () => {
  const page = await browser.newPage({ viewport: { width: 1280, height: 860 } })
  const urls: Array<string> = []
  page.on("request", (request) => urls.push(request.url()))
  await page.goto(server.url)
  return { page, urls }
}

const logIn = async (page: Page, token: string) => {
  await page.getByLabel("API token").fill(token)
  await page.getByRole("button", { name: "Log in" }).click()
}

describe("dashboard", () => {
  it.live("refuses a wrong token", () =>
    Effect.promise(async () => {
      const { page } = await openPage()
      await logIn(page, "not-the-token")
      await page.getByRole("alert").filter({ hasText: "That token was refused." }).waitFor()
      await page.close()
    })
  )

  it.live(
    "starts PlanAndAct, shows the agent's output live, approves with a comment and sees the run complete",
    () =>
      Effect.promise(async () => {
        const { page, urls } = await openPage()
        await logIn(page, server.token)
        await page.getByRole("heading", { name: "Runs" }).waitFor()

        await page.getByRole("link", { name: "Start a run" }).click()
        await page.getByLabel("Workflow").selectOption("PlanAndAct")
        await page.getByLabel("task").fill("Tidy up the README")
        await page.getByRole("button", { name: "Start" }).click()

        // The plan streams into the output log, then the run asks for approval.
        const output = page.getByRole("log", { name: "Agent output" })
        await output.getByText("plan", { exact: false }).first().waitFor({ timeout: 60_000 })
        const approval = page.getByRole("heading", { name: "Approval needed: review" })
        await approval.waitFor({ timeout: 60_000 })
        assert.isAbove((await output.textContent())?.length ?? 0, 10)
        Fs.mkdirSync(images, { recursive: true })
        await page.screenshot({ path: Path.join(images, "dashboard-run.png") })

        await page.getByLabel("Comment").fill("Keep the tone friendly")
        await page.getByRole("button", { name: "Approve" }).click()
        await page.locator(".status.completed").first().waitFor({ timeout: 60_000 })
        const result = await page.locator("pre.json").last().textContent()
        assert.include(result ?? "", "Keep the tone friendly")
        assert.include(result ?? "", '"approved": true')

        await page.getByRole("link", { name: "Runs" }).first().click()
        await page.getByRole("cell", { name: "completed" }).first().waitFor()
        await page.screenshot({ path: Path.join(images, "dashboard-runs.png") })

        assert.isFalse(
          urls.some((url) => url.includes(server.token)),
          "the API token never travels in a URL"
        )
        await page.close()
      }),
    180_000
  )
})
