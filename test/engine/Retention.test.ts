import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { Duration, Effect, Exit, Layer, Option, Redacted } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import * as DurableDeferred from "effect/workflow/DurableDeferred"
import * as AgentEngine from "../../src/engine/AgentEngine.ts"
import * as Retention from "../../src/engine/Retention.ts"
import { AgentOutput } from "../../src/output/AgentOutput.ts"
import { Approval, Gate, Greet, pollUntil, unique, workflows } from "./Conformance.ts"
import { createDatabase, dropDatabase } from "./TestDatabase.ts"

const tempDir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "agent-retention-"))

/** Rows an execution has in the cluster engine's tables. */
const clusterRows = (sql: SqlClient, id: string) =>
  Effect.map(sql<{ n: number }>`SELECT count(*) AS n FROM cluster_messages WHERE entity_id = ${id}`, (r) =>
    Number(r[0]!.n)
  )

/** Rows an execution has in the journal engine's tables. */
const journalRows = (sql: SqlClient, id: string) =>
  Effect.map(
    sql<{ n: number }>`SELECT (SELECT count(*) FROM journal_executions WHERE execution_id = ${id})
      + (SELECT count(*) FROM journal_activities WHERE execution_id = ${id}) AS n`,
    (r) => Number(r[0]!.n)
  )

const retentionSuite = (
  engine: string,
  layer: () => Layer.Layer<any, unknown>,
  rowsIn: (sql: SqlClient, id: string) => Effect.Effect<number, unknown> = clusterRows
) =>
  describe(`Retention on ${engine}`, () => {
    it.live("deletes only finished executions beyond the policy, and everything of them", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient
        const names = [unique("old"), unique("middle"), unique("newest")]
        for (const name of names) {
          yield* Greet.execute({ name })
          // Snowflake time has millisecond resolution: keep the finish order unambiguous.
          yield* Effect.sleep("5 millis")
        }
        const waiting = yield* Gate.execute({ id: unique("waiting") }, { discard: true })
        yield* pollUntil(Gate.poll(waiting), (r) => r._tag === "Suspended")
        const ids = yield* Effect.forEach(names, (name) => Greet.executionId({ name }))
        const rowsOf = (id: string) => rowsIn(sql, id)

        const report = yield* Retention.cleanup({ maxCount: 1 })
        assert.strictEqual(report.deletedExecutions, 2)
        assert.strictEqual(yield* rowsOf(ids[0]!), 0)
        assert.strictEqual(yield* rowsOf(ids[1]!), 0)
        assert.isAbove(yield* rowsOf(ids[2]!), 0)
        assert.isTrue(Option.isNone(yield* Greet.poll(ids[0]!)))
        assert.isTrue(Option.isSome(yield* Greet.poll(ids[2]!)))

        // A second pass with the same policy has nothing left to do.
        assert.strictEqual((yield* Retention.cleanup({ maxCount: 1 })).deletedExecutions, 0)

        // By age, seen from an hour in the future: the last finished one goes too.
        const aged = yield* Retention.cleanup({ maxAge: Duration.minutes(30) }, { now: Date.now() + 3_600_000 })
        assert.strictEqual(aged.deletedExecutions, 1)
        assert.strictEqual(yield* rowsOf(ids[2]!), 0)

        // The waiting run was never touched: it still resumes and finishes.
        assert.isAbove(yield* rowsOf(waiting), 0)
        const token = DurableDeferred.tokenFromExecutionId(Approval, { workflow: Gate, executionId: waiting })
        yield* DurableDeferred.succeed(Approval, { token, value: true })
        const done = yield* pollUntil(Gate.poll(waiting), (r) => r._tag === "Complete")
        assert.deepStrictEqual(done._tag === "Complete" ? done.exit : undefined, Exit.succeed("prepared, approved"))
      }).pipe(Effect.provide(workflows.pipe(Layer.provideMerge(layer()))))
    )

    it.live("purges the output of the runs it deletes, in the same pass", () =>
      Effect.gen(function* () {
        const output = yield* AgentOutput
        const names = [unique("old"), unique("new")]
        const ids: Array<string> = []
        for (const name of names) {
          yield* Greet.execute({ name })
          const id = yield* Greet.executionId({ name })
          ids.push(id)
          yield* output.publish(id, [{ step: "s", attempt: 1, index: 0, kind: "result", payload: name }])
          yield* Effect.sleep("5 millis")
        }
        const report = yield* Retention.cleanup({ maxCount: 1 }, { onPurge: output.purge })
        assert.strictEqual(report.deletedExecutions, 1)
        assert.strictEqual((yield* output.read(ids[0]!)).length, 0)
        assert.strictEqual((yield* output.read(ids[1]!)).length, 1)
      }).pipe(Effect.provide(Layer.mergeAll(workflows, AgentOutput.layer()).pipe(Layer.provideMerge(layer()))))
    )

    it.live("deletes nothing without a limit", () =>
      Effect.gen(function* () {
        yield* Greet.execute({ name: unique("kept") })
        assert.strictEqual((yield* Retention.cleanup({})).deletedExecutions, 0)
      }).pipe(Effect.provide(workflows.pipe(Layer.provideMerge(layer()))))
    )
  })

let counter = 0
retentionSuite("sqlite", () => AgentEngine.layerSqlite({ filename: Path.join(tempDir, `r-${++counter}.db`) }))
retentionSuite(
  "sqlite journal",
  () => AgentEngine.layerJournalSqlite({ filename: Path.join(tempDir, `r-${++counter}.db`) }),
  journalRows
)

const urls: Array<string> = []
beforeAll(async () => {
  urls.push(
    await createDatabase("retention-a"),
    await createDatabase("retention-b"),
    await createDatabase("retention-c")
  )
})
const journalUrls: Array<string> = []
beforeAll(async () => {
  journalUrls.push(
    await createDatabase("retention-journal-a"),
    await createDatabase("retention-journal-b"),
    await createDatabase("retention-journal-c")
  )
})
afterAll(() => Promise.all([...urls, ...journalUrls].map(dropDatabase)))
let pgIndex = 0
retentionSuite("postgres", () => AgentEngine.layerPostgres({ url: Redacted.make(urls[pgIndex++]!) }))
let journalIndex = 0
retentionSuite(
  "postgres journal",
  () => AgentEngine.layerJournalPostgres({ url: Redacted.make(journalUrls[journalIndex++]!) }),
  journalRows
)
