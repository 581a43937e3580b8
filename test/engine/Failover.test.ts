/**
 * Two runner processes on one Postgres: the one running a workflow is killed
 * with SIGKILL, and the other must finish the run.
 */
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { type ChildProcess, spawn } from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { Effect } from "effect"
import { createDatabase, dropDatabase } from "./TestDatabase.ts"

const worker = Path.join(import.meta.dirname, "fixtures", "CrashWorker.ts")
const tempDir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "agent-failover-"))

const start = (args: ReadonlyArray<string>): ChildProcess =>
  spawn(process.execPath, [worker, ...args], { stdio: ["ignore", "pipe", "pipe"] })

const lineFrom = (child: ChildProcess, prefix: string) =>
  Effect.callback<string, Error>((resume) => {
    let buffer = ""
    let stderr = ""
    const timer = setTimeout(() => resume(Effect.fail(new Error(`no "${prefix}" within 90 s; stderr:\n${stderr}`))), 90_000)
    child.stdout!.on("data", (chunk: Buffer) => {
      buffer += chunk.toString()
      const line = buffer.split("\n").find((l) => l.startsWith(prefix))
      if (line !== undefined) {
        clearTimeout(timer)
        resume(Effect.succeed(line.slice(prefix.length).trim()))
      }
    })
    child.stderr!.on("data", (chunk: Buffer) => {
      stderr += chunk.toString()
    })
    child.on("exit", (code) => {
      clearTimeout(timer)
      resume(Effect.fail(new Error(`worker exited (${code}) before "${prefix}"; stderr:\n${stderr}`)))
    })
  })

const linesOf = (log: string) => Fs.existsSync(log) ? Fs.readFileSync(log, "utf8").split("\n").filter(Boolean) : []

let url = ""
beforeAll(async () => {
  url = await createDatabase("failover")
})
afterAll(() => dropDatabase(url))

describe("two runners on Postgres", () => {
  it.live("a surviving runner finishes the run of a runner killed with SIGKILL", () =>
    Effect.gen(function*() {
      const log = Path.join(tempDir, "failover.log")
      const port = 20000 + Math.floor(Math.random() * 20000)
      const a = start([url, log, "after-activity", "failover-run", "start", String(port)])
      const executionId = yield* lineFrom(a, "STARTED ")
      for (let i = 0; i < 600 && !linesOf(log).includes(`first ${executionId}`); i++) yield* Effect.sleep("50 millis")

      const b = start([url, log, "after-activity", "failover-run", "finish", String(port + 1)])
      const result = Effect.runPromise(lineFrom(b, "RESULT "))
      // Give B time to register as a runner before A dies.
      yield* Effect.sleep("2 seconds")
      const killedAt = Date.now()
      a.kill("SIGKILL")
      const outcome = JSON.parse(yield* Effect.promise(() => result))
      yield* Effect.log(`failover: run finished ${Date.now() - killedAt} ms after the SIGKILL`)
      b.kill("SIGTERM")

      assert.deepStrictEqual(outcome, { ok: "first done, second done" })
      const lines = linesOf(log)
      assert.strictEqual(lines.filter((l) => l === `first ${executionId}`).length, 1, lines.join("\n"))
      assert.strictEqual(lines.filter((l) => l === `second ${executionId}`).length, 1, lines.join("\n"))
    }), 120_000)
})
