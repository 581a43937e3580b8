/**
 * Durability under SIGKILL: a real runner process is killed at chosen points
 * of a run, a new one is started on the same database, and the run must
 * complete without re-running what had completed.
 */
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { type ChildProcess, spawn } from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { Effect } from "effect"
import { createDatabase, dropDatabase } from "./TestDatabase.ts"

const worker = Path.join(import.meta.dirname, "fixtures", "CrashWorker.ts")
const tempDir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "agent-crash-"))

const start = (args: ReadonlyArray<string>): ChildProcess =>
  spawn(process.execPath, [worker, ...args], { stdio: ["ignore", "pipe", "pipe"] })

/** Waits for a line of the child's stdout that starts with `prefix`. */
const lineFrom = (child: ChildProcess, prefix: string) =>
  Effect.callback<string, Error>((resume) => {
    let buffer = ""
    let stderr = ""
    const timer = setTimeout(() => resume(Effect.fail(new Error(`no "${prefix}" within 60 s; stderr:\n${stderr}`))), 60_000)
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

const exited = (child: ChildProcess) =>
  Effect.callback<void>((resume) => {
    if (child.exitCode !== null || child.signalCode !== null) return resume(Effect.void)
    child.once("exit", () => resume(Effect.void))
  })

const linesOf = (log: string) => Fs.existsSync(log) ? Fs.readFileSync(log, "utf8").split("\n").filter(Boolean) : []

const waitForLog = (log: string, line: string) =>
  Effect.gen(function*() {
    for (let i = 0; i < 600; i++) {
      if (linesOf(log).includes(line)) return
      yield* Effect.sleep("50 millis")
    }
    return yield* Effect.die(new Error(`"${line}" never appeared in ${log}`))
  })

const scenarios = [
  { scenario: "after-activity", killAfter: "first", expected: "first done, second done", secondRuns: 1 },
  { scenario: "during-activity", killAfter: "second", expected: "first done, second done", secondRuns: 2 },
  { scenario: "deferred", killAfter: "first", expected: "first done, approved=true, second done", secondRuns: 1 },
  { scenario: "durable-sleep", killAfter: "first", expected: "first done, slept, second done", secondRuns: 1 }
] as const

const crashSuite = (engine: string, databaseUrl: (scenario: string) => string) =>
  describe(`SIGKILL on ${engine}`, () => {
    it.live.each(scenarios)("$scenario: the run completes and completed activities do not run again", (
      { scenario, killAfter, expected, secondRuns }
    ) =>
      Effect.gen(function*() {
        const url = databaseUrl(scenario)
        const log = Path.join(tempDir, `${engine}-${scenario}.log`)
        const id = `crash-${scenario}`

        const first = start([url, log, scenario, id, "start"])
        const executionId = yield* lineFrom(first, "STARTED ")
        yield* waitForLog(log, `${killAfter} ${executionId}`)
        // Let the run reach its wait (suspension, durable sleep, in-flight activity).
        yield* Effect.sleep("300 millis")
        first.kill("SIGKILL")
        yield* exited(first)
        assert.strictEqual(first.signalCode, "SIGKILL")

        const second = start([url, log, scenario, id, "finish"])
        const result = JSON.parse(yield* lineFrom(second, "RESULT "))
        yield* exited(second)
        assert.deepStrictEqual(result, { ok: expected })
        assert.strictEqual(second.exitCode, 0)

        const lines = linesOf(log)
        assert.strictEqual(lines.filter((l) => l === `first ${executionId}`).length, 1, lines.join("\n"))
        assert.strictEqual(lines.filter((l) => l === `second ${executionId}`).length, secondRuns, lines.join("\n"))
      }), 120_000)
  })

crashSuite("sqlite", (scenario) => `sqlite:${Path.join(tempDir, `${scenario}.db`)}`)

const postgresUrls: Array<string> = []
let postgresBase = ""
beforeAll(async () => {
  postgresBase = await createDatabase("crash")
  postgresUrls.push(postgresBase)
})
afterAll(() => Promise.all(postgresUrls.map(dropDatabase)))
// One database for the four scenarios: each run has its own id.
crashSuite("postgres", () => postgresBase)
