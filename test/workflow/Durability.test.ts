/**
 * The PlanAndAct example under SIGKILL, with the real CLI against a scripted
 * model that lives in the test process, so its request log outlives every
 * worker: the log proves what was (and was not) sent to the model again.
 */
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { DatabaseSync } from "node:sqlite"
import { Effect, Layer } from "effect"
import { AgentOutput } from "../../src/output/AgentOutput.ts"
import type { OutputEvent } from "../../src/output/OutputEvent.ts"
import * as ScriptedModel from "../../src/testing/ScriptedModel.ts"
import * as SqliteClient from "../../src/engine/SqliteClient.ts"
import { exited, freePorts, lineFrom, start } from "../engine/fixtures/Worker.ts"
import { createDatabase, dropDatabase } from "../engine/TestDatabase.ts"

const worker = Path.join(import.meta.dirname, "fixtures", "AgentWorker.ts")
const tempDir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "agent-durability-"))
const home = (name: string) => Fs.mkdtempSync(Path.join(tempDir, `${name}-`))

const plan = "1. Read the file. 2. Fix the typos."
const outcome = "Fixed two typos."

const run = (args: ReadonlyArray<string>) => start(args, worker)

/** The run's output log, read straight from the SQLite file the workers wrote. */
const outputOf = (filename: string, runId: string) =>
  Effect.gen(function* () {
    const output = yield* AgentOutput
    return yield* output.read(runId, { limit: 100_000 })
  }).pipe(Effect.provide(AgentOutput.layer().pipe(Layer.provide(SqliteClient.layer({ filename })))), Effect.orDie)

/** Sequences 1..n, and within each (step, attempt) indices 0..k: no gap, no duplicate. */
const assertContiguous = (events: ReadonlyArray<OutputEvent>) => {
  assert.deepStrictEqual(
    events.map((e) => e.sequence),
    events.map((_, i) => i + 1)
  )
  const groups = new Map<string, Array<number>>()
  for (const e of events) {
    const key = `${e.step}/${e.attempt}`
    groups.set(key, [...(groups.get(key) ?? []), e.index])
  }
  for (const [key, indices] of groups) {
    assert.deepStrictEqual(
      indices,
      indices.map((_, i) => i),
      `indices of ${key}`
    )
  }
}

const text = (events: ReadonlyArray<OutputEvent>, step: string, attempt: number) =>
  events
    .filter((e) => e.step === step && e.attempt === attempt && e.kind === "text_delta")
    .map((e) => (e.payload as { text: string }).text)
    .join("")

describe("PlanAndAct under SIGKILL on SQLite", () => {
  it.live(
    "killed while waiting for approval: approved by token from another process, nothing re-sent",
    () =>
      Effect.gen(function* () {
        const model = yield* ScriptedModel.ScriptedModel
        const filename = Path.join(tempDir, "waiting.db")
        const url = `sqlite:${filename}`
        const first = run([url, model.url, home("a"), "Fix the README", "start"])
        const runId = yield* lineFrom(first, "STARTED ")
        const token = yield* lineFrom(first, "WAITING ")
        first.kill("SIGKILL")
        yield* exited(first)

        const second = run([url, model.url, home("b"), "Fix the README", "finish", "-", token])
        const result = JSON.parse(yield* lineFrom(second, "RESULT "))
        yield* exited(second)
        assert.deepInclude(result.ok, { plan, approved: true, comment: "Go ahead", outcome })

        const requests = yield* model.modelRequests
        assert.strictEqual(requests.length, 2, "the plan was sent once and the act once")
        assert.include(ScriptedModel.lastUserText(requests[1]!), "Go ahead")
        const events = yield* outputOf(filename, runId)
        assertContiguous(events)
        assert.strictEqual(text(events, "plan", 1), plan)
        assert.strictEqual(text(events, "act", 1), outcome)
      }).pipe(
        Effect.provide(ScriptedModel.ScriptedModel.layer([ScriptedModel.text(plan), ScriptedModel.text(outcome)]))
      ),
    120_000
  )

  it.live(
    "killed while the plan streams: the plan runs again as a new attempt, completed steps never",
    () =>
      Effect.gen(function* () {
        const model = yield* ScriptedModel.ScriptedModel
        const filename = Path.join(tempDir, "streaming.db")
        const url = `sqlite:${filename}`
        const first = run([url, model.url, home("a"), "Fix the docs", "start"])
        const runId = yield* lineFrom(first, "STARTED ")
        // Kill once some of the slow plan has been streamed and stored.
        for (;;) {
          const stored = Fs.existsSync(filename)
            ? (new DatabaseSync(filename, { readOnly: true })
                .prepare("SELECT COUNT(*) AS n FROM agent_output_events WHERE kind = 'text_delta'")
                .get() as { n: number } | undefined)
            : undefined
          if (stored !== undefined && stored.n >= 3) break
          yield* Effect.sleep("50 millis")
        }
        first.kill("SIGKILL")
        yield* exited(first)

        const second = run([url, model.url, home("b"), "Fix the docs", "finish"])
        const result = JSON.parse(yield* lineFrom(second, "RESULT "))
        yield* exited(second)
        assert.deepInclude(result.ok, { plan, approved: true, outcome })

        const requests = yield* model.modelRequests
        // The cut-off plan, the plan again, the act: the completed plan was never re-sent.
        assert.strictEqual(requests.length, 3)
        const events = yield* outputOf(filename, runId)
        assertContiguous(events)
        const cut = text(events, "plan", 1)
        assert.isTrue(plan.startsWith(cut) && cut.length < plan.length, `cut-off attempt: "${cut}"`)
        assert.isFalse(events.some((e) => e.step === "plan" && e.attempt === 1 && e.kind === "result"))
        assert.strictEqual(text(events, "plan", 2), plan)
        assert.strictEqual(text(events, "act", 1), outcome)
      }).pipe(
        Effect.provide(
          ScriptedModel.ScriptedModel.layer([
            ScriptedModel.text(plan, { chunkSize: 2, chunkDelayMs: 150 }),
            ScriptedModel.text(plan),
            ScriptedModel.text(outcome)
          ])
        )
      ),
    120_000
  )
})

let postgres = ""
beforeAll(async () => {
  postgres = await createDatabase("sessions")
})
afterAll(() => dropDatabase(postgres))

describe("sessions across runners on Postgres", () => {
  it.live(
    "step 1 on runner A, A killed, step 2 on runner B continues the same conversation",
    () =>
      Effect.gen(function* () {
        const model = yield* ScriptedModel.ScriptedModel
        const [portA, portB] = yield* freePorts(2)
        const a = run([postgres, model.url, home("runner-a"), "Fix the CLI", "start", String(portA)])
        yield* lineFrom(a, "STARTED ")
        const token = yield* lineFrom(a, "WAITING ")
        a.kill("SIGKILL")
        yield* exited(a)

        // B has its own HOME: A's transcript on disk is out of its reach.
        const b = run([postgres, model.url, home("runner-b"), "Fix the CLI", "finish", String(portB), token])
        const result = JSON.parse(yield* lineFrom(b, "RESULT "))
        b.kill("SIGTERM")
        yield* exited(b)
        assert.deepInclude(result.ok, { approved: true, outcome }, JSON.stringify(result))

        const requests = yield* model.modelRequests
        assert.strictEqual(requests.length, 2)
        const act = ScriptedModel.conversationText(requests[1]!)
        assert.isTrue(
          act.some((t) => t.includes("Task: Fix the CLI")),
          "B's request carries A's first turn"
        )
        assert.isTrue(
          act.some((t) => t.includes(plan)),
          "and A's answer"
        )
      }).pipe(
        Effect.provide(ScriptedModel.ScriptedModel.layer([ScriptedModel.text(plan), ScriptedModel.text(outcome)]))
      ),
    180_000
  )
})
