/**
 * Two runner processes on one Postgres: the one running a workflow is killed
 * with SIGKILL, and the other must finish the run.
 */
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { Effect } from "effect"
import { exited, failover, freePorts, lineFrom, linesOf, start, waitForLog } from "./fixtures/Worker.ts"
import { createDatabase, dropDatabase } from "./TestDatabase.ts"

let url = ""
beforeAll(async () => {
  url = await createDatabase("failover")
})
afterAll(() => dropDatabase(url))

describe("two runners on Postgres", () => {
  it.live(
    "a surviving runner takes over and finishes the run of a runner killed with SIGKILL",
    () =>
      Effect.gen(function* () {
        const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "agent-failover-"))
        // Shards are placed by hash: retry until the run was still on the killed
        // runner, so that the survivor really had to take it over.
        let attempt = 0
        let trial = yield* failover({ url, log: Path.join(dir, "0.log"), id: "failover-0" })
        while (!trial.takeover && attempt < 4) {
          attempt++
          trial = yield* failover({ url, log: Path.join(dir, `${attempt}.log`), id: `failover-${attempt}` })
        }
        const { executionId, millis, outcome, takeover } = trial
        const log = Path.join(dir, `${attempt}.log`)
        assert.isTrue(takeover, "in 5 attempts the run was never on the killed runner")
        yield* Effect.log(`failover: run finished ${millis.toFixed(0)} ms after the SIGKILL`)
        assert.deepStrictEqual(outcome, { ok: "first done, second done" })
        const lines = linesOf(log)
        assert.strictEqual(lines.filter((l) => l === `first ${executionId}`).length, 1, lines.join("\n"))
        assert.strictEqual(lines.filter((l) => l === `second ${executionId}`).length, 1, lines.join("\n"))
      }),
    240_000
  )

  it.live(
    "a client-only process completes an approval of a run hosted by a runner",
    () =>
      Effect.gen(function* () {
        const log = Path.join(Fs.mkdtempSync(Path.join(Os.tmpdir(), "agent-client-")), "client.log")
        const [port] = yield* freePorts(1)
        const runner = start([url, log, "deferred", "client-approval", "start", String(port)])
        const executionId = yield* lineFrom(runner, "STARTED ")
        yield* waitForLog(log, `first ${executionId}`)
        const client = start([url, log, "deferred", "client-approval", "approve"])
        assert.strictEqual(yield* lineFrom(client, "APPROVED "), executionId)
        yield* exited(client)
        assert.strictEqual(client.exitCode, 0)
        // The runner, which hosts the run, continues past the approval.
        yield* waitForLog(log, `second ${executionId}`)
        runner.kill("SIGTERM")
        yield* exited(runner)
        assert.strictEqual(linesOf(log).filter((l) => l === `first ${executionId}`).length, 1)
      }),
    120_000
  )
})
