/**
 * Agent steps as activities, with the real SDK and CLI against the scripted model.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { Cause, Duration, Effect, Exit, Layer, Schema } from "effect"
import * as Workflow from "effect/workflow/Workflow"
import type { WorkflowEngine } from "effect/workflow/WorkflowEngine"
import * as AgentEngine from "../../src/engine/AgentEngine.ts"
import { AgentOutput } from "../../src/output/AgentOutput.ts"
import * as AgentMessage from "../../src/sdk/AgentMessage.ts"
import * as AgentSdkError from "../../src/sdk/AgentSdkError.ts"
import { PermissionPolicy } from "../../src/sdk/PermissionPolicy.ts"
import * as ScriptedModel from "../../src/testing/ScriptedModel.ts"
import * as AgentActivity from "../../src/workflow/AgentActivity.ts"
import * as StepName from "../../src/workflow/StepName.ts"

const Ask = Workflow.make("Test/Ask", {
  payload: { id: Schema.String, question: Schema.String },
  success: AgentMessage.QueryResult,
  error: AgentSdkError.AgentSdkError,
  idempotencyKey: ({ id }) => id
})

const AskLayer = Ask.toLayer(({ question }) =>
  AgentActivity.query("ask", question, { retry: { times: 2, base: Duration.millis(50) } })
)

const Twice = Workflow.make("Test/Twice", {
  payload: { id: Schema.String, distinct: Schema.Boolean },
  success: Schema.Array(Schema.String),
  error: AgentSdkError.AgentSdkError,
  idempotencyKey: ({ id }) => id
})

const TwiceLayer = Twice.toLayer(({ distinct }) =>
  Effect.forEach([0, 1], (i) =>
    Effect.map(AgentActivity.query(distinct ? StepName.iteration("draft", i) : "draft", `Draft ${i}`), (r) => r.text)
  )
)

const tempDir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "agent-activity-"))
let files = 0

const engines: ReadonlyArray<readonly [string, () => Layer.Layer<WorkflowEngine, unknown>]> = [
  ["memory", () => AgentEngine.layerMemory],
  ["sqlite", () => AgentEngine.layerSqlite({ filename: Path.join(tempDir, `a-${++files}.db`) })]
]

const setup = (engine: Layer.Layer<WorkflowEngine, unknown>, script: ScriptedModel.Script) =>
  Layer.mergeAll(AskLayer, TwiceLayer).pipe(
    Layer.provideMerge(engine),
    Layer.provideMerge(AgentOutput.layerMemory()),
    Layer.provideMerge(ScriptedModel.layerAgentSdk({ maxRetries: 0 })),
    Layer.provideMerge(ScriptedModel.ScriptedModel.layer(script)),
    Layer.provide(PermissionPolicy.layerDenyAll)
  )

for (const [engineName, engine] of engines) {
  describe(`AgentActivity.query on ${engineName}`, () => {
    it.live("runs the query once, publishes its output and returns the summary", () =>
      Effect.gen(function* () {
        const model = yield* ScriptedModel.ScriptedModel
        const output = yield* AgentOutput
        const result = yield* Ask.execute({ id: "a1", question: "What is 2 + 2?" })
        assert.strictEqual(result.text, "Four.")
        const runId = yield* Ask.executionId({ id: "a1", question: "What is 2 + 2?" })
        const events = yield* output.read(runId)
        assert.deepStrictEqual(
          events.map((e) => e.sequence),
          events.map((_, i) => i + 1)
        )
        assert.strictEqual(events[0]!.kind, "status")
        assert.strictEqual(
          events
            .filter((e) => e.kind === "text_delta")
            .map((e) => (e.payload as { text: string }).text)
            .join(""),
          "Four."
        )
        assert.strictEqual(events.at(-1)!.kind, "result")
        assert.isTrue(events.every((e) => e.step === "ask" && e.attempt === 1))
        // The journal answers a second execution: the model is not asked again.
        assert.strictEqual((yield* Ask.execute({ id: "a1", question: "What is 2 + 2?" })).text, "Four.")
        assert.strictEqual((yield* model.modelRequests).length, 1)
      }).pipe(Effect.provide(setup(engine(), [ScriptedModel.text("Four.", { chunkSize: 2 })])))
    )

    it.live("takes a step's result from the output log when the journal missed it: the model is not asked again", () =>
      Effect.gen(function* () {
        const model = yield* ScriptedModel.ScriptedModel
        const output = yield* AgentOutput
        const first = yield* Ask.execute({ id: "logged", question: "Q" })
        const logged = (yield* output.read(yield* Ask.executionId({ id: "logged", question: "Q" }))).at(-1)!
        assert.strictEqual(logged.kind, "result")
        // What a runner leaves when it stores the result event and dies before the journal has the step.
        const runId = yield* Ask.executionId({ id: "cut", question: "Q" })
        yield* output.publish(runId, [{ step: "ask", attempt: 1, index: 0, kind: "result", payload: logged.payload }])
        const again = yield* Ask.execute({ id: "cut", question: "Q" })
        assert.deepStrictEqual(again, first)
        assert.strictEqual((yield* model.modelRequests).length, 1)
      }).pipe(Effect.provide(setup(engine(), [ScriptedModel.text("Once.")])))
    )

    it.live("retries an overloaded model after a durable backoff, each attempt visible", () =>
      Effect.gen(function* () {
        const model = yield* ScriptedModel.ScriptedModel
        const output = yield* AgentOutput
        const result = yield* Ask.execute({ id: "a2", question: "Hello?" })
        assert.strictEqual(result.text, "Hello after a retry.")
        const runId = yield* Ask.executionId({ id: "a2", question: "Hello?" })
        const events = yield* output.read(runId)
        const failed = events.filter((e) => e.attempt === 1)
        assert.deepStrictEqual(
          failed.map((e) => e.kind),
          ["status", "error"]
        )
        assert.strictEqual((failed[1]!.payload as { reason: string }).reason, "OverloadedError")
        assert.isTrue(events.some((e) => e.attempt === 2 && e.kind === "result"))
        assert.strictEqual((yield* model.modelRequests).length, 2)
      }).pipe(Effect.provide(setup(engine(), [ScriptedModel.error(529), ScriptedModel.text("Hello after a retry.")])))
    )

    it.live("fails at once on an error a retry cannot fix", () =>
      Effect.gen(function* () {
        const model = yield* ScriptedModel.ScriptedModel
        const error = yield* Effect.flip(Ask.execute({ id: "a3", question: "Hello?" }))
        assert.strictEqual(error.reason._tag, "AuthenticationError")
        assert.strictEqual((yield* model.modelRequests).length, 1)
      }).pipe(Effect.provide(setup(engine(), [ScriptedModel.error(401), ScriptedModel.text("never sent")])))
    )
  })
}

describe("AgentActivity step names", () => {
  it.live("refuses a step name used twice in one run, before the model is asked again", () =>
    Effect.gen(function* () {
      const model = yield* ScriptedModel.ScriptedModel
      const exit = yield* Effect.exit(Twice.execute({ id: "t1", distinct: false }))
      assert.isTrue(Exit.isFailure(exit))
      assert.include(String(Exit.isFailure(exit) ? Cause.squash(exit.cause) : ""), 'step name "draft" is used twice')
      assert.strictEqual((yield* model.modelRequests).length, 1)
    }).pipe(Effect.provide(setup(AgentEngine.layerMemory, [ScriptedModel.text("one"), ScriptedModel.text("two")])))
  )

  it.live("runs every iteration of a loop named with iteration()", () =>
    Effect.gen(function* () {
      assert.deepStrictEqual(yield* Twice.execute({ id: "t2", distinct: true }), ["one", "two"])
    }).pipe(Effect.provide(setup(AgentEngine.layerMemory, [ScriptedModel.text("one"), ScriptedModel.text("two")])))
  )
})

describe("AgentActivity.backoff", () => {
  it("doubles from the base, is capped, and jitters deterministically within [half, all]", () => {
    const policy = { base: Duration.millis(100), max: Duration.millis(1000) }
    for (let attempt = 1; attempt <= 6; attempt++) {
      const ceiling = Math.min(1000, 100 * 2 ** (attempt - 1))
      const millis = Duration.toMillis(AgentActivity.backoff(policy, attempt, "run/step"))
      assert.isAtLeast(millis, ceiling / 2)
      assert.isAtMost(millis, ceiling)
      assert.strictEqual(millis, Duration.toMillis(AgentActivity.backoff(policy, attempt, "run/step")))
    }
    assert.notStrictEqual(
      Duration.toMillis(AgentActivity.backoff(policy, 3, "run-a/step")),
      Duration.toMillis(AgentActivity.backoff(policy, 3, "run-b/step"))
    )
  })
})
