/**
 * Durability under SIGKILL: a real runner process is killed at chosen points
 * of a run, a new one is started on the same database, and the run must
 * complete without re-running what had completed.
 */
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { Effect } from "effect"
import { exited, lineFrom, linesOf, start, waitForLog } from "./fixtures/Worker.ts"
import { createDatabase, dropDatabase } from "./TestDatabase.ts"

const tempDir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "agent-crash-"))

const scenarios = [
  { scenario: "after-activity", killAfter: "first", expected: "first done, second done", secondRuns: 1 },
  { scenario: "during-activity", killAfter: "second", expected: "first done, second done", secondRuns: 2 },
  { scenario: "deferred", killAfter: "first", expected: "first done, approved=true, second done", secondRuns: 1 },
  { scenario: "durable-sleep", killAfter: "first", expected: "first done, slept, second done", secondRuns: 1 }
] as const

const crashSuite = (engine: string, databaseUrl: (scenario: string) => string) =>
  describe(`SIGKILL on ${engine}`, () => {
    it.live.each(scenarios)(
      "$scenario: the run completes and completed activities do not run again",
      ({ scenario, killAfter, expected, secondRuns }) =>
        Effect.gen(function* () {
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
        }),
      120_000
    )
  })

crashSuite("sqlite", (scenario) => `sqlite:${Path.join(tempDir, `${scenario}.db`)}`)
crashSuite("sqlite journal", (scenario) => `sqlite+journal:${Path.join(tempDir, `journal-${scenario}.db`)}`)

const postgresUrls: Array<string> = []
let postgresBase = ""
let journalBase = ""
beforeAll(async () => {
  postgresBase = await createDatabase("crash")
  journalBase = await createDatabase("crash_journal")
  postgresUrls.push(postgresBase, journalBase)
})
afterAll(() => Promise.all(postgresUrls.map(dropDatabase)))
// One database for the four scenarios: each run has its own id.
crashSuite("postgres", () => postgresBase)
crashSuite("postgres journal", () => journalBase.replace(/^postgres:/, "postgres+journal:"))
