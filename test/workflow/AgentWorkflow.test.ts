/**
 * The workflow layer end to end, with the real SDK and CLI against the
 * scripted model, on the memory and SQLite engines.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { DatabaseSync } from "node:sqlite"
import { Effect, Layer, Option, Redacted, Schema, Tracer } from "effect"
import * as Workflow from "effect/workflow/Workflow"
import { WorkflowEngine } from "effect/workflow/WorkflowEngine"
import { PlanAndAct, PlanAndActLayer } from "../../examples/PlanAndAct.ts"
import type * as AgentEngine from "../../src/engine/AgentEngine.ts"
import { AgentOutput } from "../../src/output/AgentOutput.ts"
import type { OutputEvent } from "../../src/output/OutputEvent.ts"
import { PermissionPolicy } from "../../src/sdk/PermissionPolicy.ts"
import * as ScriptedModel from "../../src/testing/ScriptedModel.ts"
import * as AgentRuntime from "../../src/workflow/AgentRuntime.ts"
import * as AgentWorkflow from "../../src/workflow/AgentWorkflow.ts"
import * as ApprovalToken from "../../src/workflow/ApprovalToken.ts"
import { Approvals } from "../../src/workflow/Approvals.ts"

const secret = Redacted.make("a-test-secret-that-is-long-enough-to-sign")

const Timed = Workflow.make("Test/Timed", {
  payload: { id: Schema.String },
  success: AgentWorkflow.Decision,
  idempotencyKey: ({ id }) => id
})
const TimedLayer = AgentWorkflow.toLayer(Timed, () =>
  AgentWorkflow.awaitApproval("review", {
    request: { question: "Ship it?" },
    timeout: "400 millis",
    default: { approved: false, comment: "nobody answered" }
  })
)

const Budgeted = Workflow.make("Test/Budgeted", {
  payload: { id: Schema.String },
  success: Schema.Array(Schema.String),
  idempotencyKey: ({ id }) => id
})
const BudgetedLayer = AgentWorkflow.toLayer(Budgeted, () =>
  Effect.forEach([0, 1], (i) =>
    Effect.map(AgentWorkflow.runStep(AgentWorkflow.iteration("work", i), { prompt: `Part ${i}` }), (r) => r.text)
  ).pipe(Effect.orDie, AgentWorkflow.withBudget({ window: "6 seconds", tokens: 20 }))
)

const Chat = Workflow.make("Test/Chat", {
  payload: { id: Schema.String, first: Schema.String },
  success: Schema.Array(Schema.String),
  idempotencyKey: ({ id }) => id
})
const ChatLayer = AgentWorkflow.toLayer(Chat, ({ first }) =>
  Effect.map(Effect.orDie(AgentWorkflow.conversation("chat", { first, isEnd: (m) => m === "bye" })), (replies) =>
    replies.map((r) => r.text)
  )
)

let acquired = 0
let released = 0
const Held = Workflow.make("Test/Held", {
  payload: { id: Schema.String },
  success: Schema.String,
  idempotencyKey: ({ id }) => id
})
const HeldLayer = AgentWorkflow.toLayer(Held, () =>
  Effect.gen(function* () {
    const handle = yield* AgentWorkflow.resource(
      Effect.acquireRelease(
        Effect.sync(() => ++acquired),
        () => Effect.sync(() => released++)
      )
    )
    const one = yield* AgentWorkflow.runStep("one", {
      execute: Effect.succeed(`one@${handle}`),
      success: Schema.String
    })
    const two = yield* AgentWorkflow.runStep("two", {
      execute: Effect.succeed(`two@${handle}`),
      success: Schema.String
    })
    return `${one} ${two} released=${released}`
  })
)

const Child = Workflow.make("Test/Child", {
  payload: { id: Schema.String, topic: Schema.String },
  success: Schema.String,
  idempotencyKey: ({ id }) => id
})
const ChildLayer = AgentWorkflow.toLayer(Child, ({ topic }) =>
  Effect.map(Effect.orDie(AgentWorkflow.runStep("summary", { prompt: `Summarise ${topic}` })), (r) => r.text)
)
const Fan = Workflow.make("Test/Fan", {
  payload: { id: Schema.String },
  success: Schema.Array(Schema.String),
  idempotencyKey: ({ id }) => id
})
const FanLayer = AgentWorkflow.toLayer(Fan, ({ id }) =>
  Effect.gen(function* () {
    const drafts = yield* Effect.forEach(
      [0, 1, 2],
      (i) =>
        Effect.map(AgentWorkflow.runStep(AgentWorkflow.iteration("draft", i), { prompt: `Draft ${i}` }), (r) => r.text),
      { concurrency: 2 }
    )
    const summary = yield* Child.execute({ id: `${id}-child`, topic: "the drafts" })
    return [...drafts, summary]
  }).pipe(Effect.orDie)
)

const workflows = Layer.mergeAll(PlanAndActLayer, TimedLayer, BudgetedLayer, ChatLayer, HeldLayer, ChildLayer, FanLayer)

const tempDir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "agent-workflow-"))
let files = 0

const databases: ReadonlyArray<readonly [string, () => AgentEngine.Database]> = [
  ["memory", () => ({ _tag: "Memory" })],
  ["sqlite", () => ({ _tag: "Sqlite", filename: Path.join(tempDir, `w-${++files}.db`) })],
  [
    "the journal engine on sqlite",
    () => ({ _tag: "Sqlite", filename: Path.join(tempDir, `j-${++files}.db`), engine: "journal" })
  ]
]

const setup = (database: AgentEngine.Database, script: ScriptedModel.Script) =>
  workflows.pipe(
    Layer.provideMerge(AgentRuntime.layer(database)),
    Layer.provideMerge(ApprovalToken.ApprovalSecret.layer(secret)),
    Layer.provideMerge(ScriptedModel.layerAgentSdk({ maxRetries: 0 })),
    Layer.provideMerge(ScriptedModel.ScriptedModel.layer(script)),
    Layer.provide(PermissionPolicy.layerDenyAll)
  )

/** The signed token of a request once the run has made it. */
const pendingToken = (runId: string, step: string) =>
  Effect.gen(function* () {
    const approvals = yield* Approvals
    for (;;) {
      const wait = (yield* approvals.list({ runId, state: "pending" })).find((w) => w.step === step)
      if (wait !== undefined) return yield* approvals.tokenFor(wait)
      yield* Effect.sleep("20 millis")
    }
  })

const resultOf = <W extends Workflow.Any>(workflow: W, runId: string) =>
  Effect.gen(function* () {
    for (;;) {
      const result = yield* (workflow as unknown as Workflow.Workflow<string, any, any, any>).poll(runId)
      if (Option.isSome(result) && result.value._tag === "Complete") return result.value.exit
      yield* Effect.sleep("20 millis")
    }
  })

const texts = (events: ReadonlyArray<OutputEvent>, step: string) =>
  events
    .filter((e) => e.step === step && e.kind === "text_delta")
    .map((e) => (e.payload as { text: string }).text)
    .join("")

for (const [engineName, database] of databases) {
  describe(`AgentWorkflow on ${engineName}`, () => {
    it.live("PlanAndAct: plan, approval by signed token, act in the same session", () =>
      Effect.gen(function* () {
        const model = yield* ScriptedModel.ScriptedModel
        const approvals = yield* Approvals
        const output = yield* AgentOutput
        const runId = yield* PlanAndAct.execute({ task: "Tidy the README" }, { discard: true })
        const token = yield* pendingToken(runId, "review")
        const requested = (yield* output.read(runId)).find((e) => e.kind === "approval_requested")
        assert.deepStrictEqual(requested?.payload, {
          purpose: "approval",
          request: { task: "Tidy the README", plan: "1. Read it. 2. Fix typos." }
        })
        // The token never appears in the run's output.
        assert.notInclude(JSON.stringify(yield* output.read(runId)), token)

        yield* approvals.decide(token, { approved: true, comment: "Keep the tone" })
        const exit = yield* resultOf(PlanAndAct, runId)
        assert.strictEqual(exit._tag, "Success")
        assert.deepInclude(exit._tag === "Success" ? exit.value : {}, {
          approved: true,
          comment: "Keep the tone",
          outcome: "Fixed three typos."
        })
        const requests = yield* model.modelRequests
        assert.strictEqual(requests.length, 2)
        const act = ScriptedModel.conversationText(requests[1]!)
        assert.isTrue(
          act.some((t) => t.includes("Task: Tidy the README")),
          "the act step continues the session"
        )
        assert.isTrue(act.some((t) => t.includes("1. Read it. 2. Fix typos.")))
        assert.include(ScriptedModel.lastUserText(requests[1]!), "Keep the tone")

        const events = yield* output.read(runId)
        assert.deepStrictEqual(
          events.map((e) => e.sequence),
          events.map((_, i) => i + 1)
        )
        assert.strictEqual(texts(events, "plan"), "1. Read it. 2. Fix typos.")
        assert.strictEqual(texts(events, "act"), "Fixed three typos.")
        assert.isTrue(Option.getOrThrow(yield* output.status(runId)).ended, "the output ends with the run")
      }).pipe(
        Effect.provide(
          setup(database(), [
            ScriptedModel.text("1. Read it. 2. Fix typos.", { chunkSize: 5 }),
            ScriptedModel.text("Fixed three typos.")
          ])
        )
      )
    )

    it.live("PlanAndAct: a rejection ends the run with the plan and the reason; the agent does not act", () =>
      Effect.gen(function* () {
        const model = yield* ScriptedModel.ScriptedModel
        const approvals = yield* Approvals
        const runId = yield* PlanAndAct.execute({ task: "Delete the database" }, { discard: true })
        yield* approvals.decide(yield* pendingToken(runId, "review"), { approved: false, comment: "Too risky" })
        const exit = yield* resultOf(PlanAndAct, runId)
        assert.deepInclude(exit._tag === "Success" ? exit.value : {}, {
          plan: "1. Drop it.",
          approved: false,
          comment: "Too risky"
        })
        assert.strictEqual((yield* model.modelRequests).length, 1)
      }).pipe(Effect.provide(setup(database(), [ScriptedModel.text("1. Drop it.")])))
    )

    it.live("refuses forged, wrong-purpose, duplicate, unknown and finished-run decisions, changing nothing", () =>
      Effect.gen(function* () {
        const model = yield* ScriptedModel.ScriptedModel
        const approvals = yield* Approvals
        const engine = yield* WorkflowEngine
        const runId = yield* PlanAndAct.execute({ task: "Refactor" }, { discard: true })
        const token = yield* pendingToken(runId, "review")
        const before = yield* approvals.list({ runId })

        const forged = token.slice(0, -2) + (token.endsWith("AA") ? "BB" : "AA")
        assert.strictEqual((yield* Effect.flip(approvals.decide(forged, { approved: true })))._tag, "InvalidToken")
        const wrongPurpose = yield* Effect.flip(approvals.decide(token, "yes"))
        assert.deepInclude(wrongPurpose, { _tag: "InvalidToken", reason: "wrong_purpose" })
        const unknown = yield* ApprovalToken.sign(
          new ApprovalToken.Claims({ workflow: "PlanAndAct", executionId: runId, step: "nope", purpose: "approval" })
        )
        assert.deepInclude(yield* Effect.flip(approvals.decide(unknown, { approved: true })), {
          _tag: "DecisionRejected",
          reason: "unknown_request"
        })
        assert.deepStrictEqual(yield* approvals.list({ runId }), before, "nothing changed")

        yield* approvals.decide(token, { approved: false, comment: "first" })
        const again = yield* Effect.flip(approvals.decide(token, { approved: true, comment: "second" }))
        assert.deepInclude(again, { _tag: "DecisionRejected", reason: "already_decided" })
        const exit = yield* resultOf(PlanAndAct, runId)
        assert.deepInclude(exit._tag === "Success" ? exit.value : {}, { approved: false, comment: "first" })

        // A run interrupted while it waits: its token is refused afterwards.
        const other = yield* PlanAndAct.execute({ task: "Rename" }, { discard: true })
        const otherToken = yield* pendingToken(other, "review")
        yield* engine.interrupt(PlanAndAct, other)
        yield* resultOf(PlanAndAct, other)
        assert.deepInclude(yield* Effect.flip(approvals.decide(otherToken, { approved: true })), {
          _tag: "DecisionRejected",
          reason: "run_finished"
        })
        assert.strictEqual((yield* model.modelRequests).length, 2, "only the two plans reached the model")
      }).pipe(Effect.provide(setup(database(), [ScriptedModel.text("Plan A."), ScriptedModel.text("Plan B.")])))
    )

    it.live("a timeout takes the default, and a late decision is refused", () =>
      Effect.gen(function* () {
        const approvals = yield* Approvals
        const runId = yield* Timed.execute({ id: "t1" }, { discard: true })
        const token = yield* pendingToken(runId, "review")
        const exit = yield* resultOf(Timed, runId)
        assert.deepInclude(exit._tag === "Success" ? exit.value : {}, {
          approved: false,
          comment: "nobody answered",
          by: "timeout"
        })
        assert.deepInclude(yield* Effect.flip(approvals.decide(token, { approved: true })), {
          _tag: "DecisionRejected",
          reason: "timed_out"
        })
      }).pipe(Effect.provide(setup(database(), [])))
    )

    it.live("a budget window makes the next step wait, durably, until the window resets", () =>
      Effect.gen(function* () {
        const output = yield* AgentOutput
        const runId = yield* Budgeted.execute({ id: "b1" }, { discard: true })
        const exit = yield* resultOf(Budgeted, runId)
        assert.deepStrictEqual(exit._tag === "Success" ? exit.value : [], ["first part", "second part"])
        const events = yield* output.read(runId)
        const wait = events.find((e) => e.kind === "status" && (e.payload as { state: string }).state === "budget_wait")
        assert.isDefined(wait, "the second step waited for the budget")
        const until = (wait!.payload as { until: number }).until
        const secondStart = events.find((e) => e.step === "work#1" && e.kind === "status" && e.attempt === 1)!
        assert.isAtLeast(secondStart.timestamp, until)
      }).pipe(
        Effect.provide(
          setup(database(), [
            ScriptedModel.text("first part", { inputTokens: 10, outputTokens: 5 }),
            ScriptedModel.text("second part", { inputTokens: 10, outputTokens: 5 })
          ])
        )
      )
    )

    it.live("a conversation continues one session for each message that arrives", () =>
      Effect.gen(function* () {
        const model = yield* ScriptedModel.ScriptedModel
        const approvals = yield* Approvals
        const runId = yield* Chat.execute({ id: "c1", first: "Hi, I am Ada." }, { discard: true })
        yield* approvals.decide(yield* pendingToken(runId, "chat-message#1"), "What is my name?")
        yield* approvals.decide(yield* pendingToken(runId, "chat-message#2"), "bye")
        const exit = yield* resultOf(Chat, runId)
        assert.deepStrictEqual(exit._tag === "Success" ? exit.value : [], ["Hello Ada.", "Your name is Ada."])
        const second = ScriptedModel.conversationText((yield* model.modelRequests)[1]!)
        assert.isTrue(second.some((t) => t.includes("Hi, I am Ada.")))
      }).pipe(
        Effect.provide(setup(database(), [ScriptedModel.text("Hello Ada."), ScriptedModel.text("Your name is Ada.")]))
      )
    )

    it.live("a run's resource is acquired once for all its steps and released when the run ends", () =>
      Effect.gen(function* () {
        acquired = 0
        released = 0
        const exit = yield* resultOf(Held, yield* Held.execute({ id: `h-${engineName}` }, { discard: true }))
        assert.deepStrictEqual(exit._tag === "Success" ? exit.value : "", "one@1 two@1 released=0")
        assert.strictEqual(acquired, 1)
        assert.strictEqual(released, 1)
      }).pipe(Effect.provide(setup(database(), [])))
    )

    it.live("fans out agent steps with bounded concurrency and runs a child workflow", () =>
      Effect.gen(function* () {
        const model = yield* ScriptedModel.ScriptedModel
        const exit = yield* resultOf(Fan, yield* Fan.execute({ id: `f-${engineName}` }, { discard: true }))
        assert.strictEqual(exit._tag, "Success")
        const values = exit._tag === "Success" ? exit.value : []
        assert.sameMembers(values.slice(0, 3), ["d0", "d1", "d2"])
        assert.strictEqual(values[3], "all summarised")
        assert.strictEqual((yield* model.modelRequests).length, 4)
      }).pipe(
        Effect.provide(
          setup(database(), [
            ScriptedModel.text("d0"),
            ScriptedModel.text("d1"),
            ScriptedModel.text("d2"),
            ScriptedModel.text("all summarised")
          ])
        )
      )
    )
  })
}

const step = (name: string) => AgentWorkflow.runStep(name, { execute: Effect.succeed(name), success: Schema.String })

describe("AgentWorkflow.patched", () => {
  const Evolving = Workflow.make("Test/Evolving", {
    payload: { id: Schema.String },
    success: Schema.String,
    idempotencyKey: ({ id }) => id
  })
  // Version 1: a, review, b.
  const v1 = AgentWorkflow.toLayer(Evolving, () =>
    Effect.gen(function* () {
      yield* step("a")
      yield* AgentWorkflow.awaitApproval("review", { request: "go on?" })
      return yield* step("b")
    })
  )
  // Version 2 asks for a check before the review, for runs that are new at that point.
  const v2 = AgentWorkflow.toLayer(Evolving, () =>
    Effect.gen(function* () {
      yield* step("a")
      const checked = (yield* AgentWorkflow.patched("check-first")) ? yield* step("check") : "unchecked"
      yield* AgentWorkflow.awaitApproval("review", { request: "go on?" })
      return `${checked} ${yield* step("b")}`
    })
  )
  const on = (filename: string, version: typeof v1) =>
    version.pipe(
      Layer.provideMerge(AgentRuntime.layer({ _tag: "Sqlite", filename })),
      Layer.provideMerge(ApprovalToken.ApprovalSecret.layer(secret))
    )

  it.live("keeps in-flight runs on the old path and sends new runs down the new one", () =>
    Effect.gen(function* () {
      const filename = Path.join(tempDir, "patched.db")
      const old = yield* Effect.gen(function* () {
        const runId = yield* Evolving.execute({ id: "old" }, { discard: true })
        yield* pendingToken(runId, "review")
        return runId
      }).pipe(Effect.provide(on(filename, v1)))

      yield* Effect.gen(function* () {
        const approvals = yield* Approvals
        yield* approvals.decide(yield* pendingToken(old, "review"), { approved: true })
        const oldExit = yield* resultOf(Evolving, old)
        assert.deepStrictEqual(oldExit._tag === "Success" ? oldExit.value : "", "unchecked b")

        const fresh = yield* Evolving.execute({ id: "new" }, { discard: true })
        yield* approvals.decide(yield* pendingToken(fresh, "review"), { approved: true })
        const newExit = yield* resultOf(Evolving, fresh)
        assert.deepStrictEqual(newExit._tag === "Success" ? newExit.value : "", "check b")
      }).pipe(Effect.provide(on(filename, v2)))
    })
  )
})

describe("Approvals after a crash", () => {
  const Gate = Workflow.make("Test/Gate", {
    payload: { id: Schema.String },
    success: Schema.String,
    idempotencyKey: ({ id }) => id
  })
  const GateLayer = AgentWorkflow.toLayer(Gate, () =>
    Effect.map(AgentWorkflow.awaitApproval("review", { request: "ok?" }), (d) => `approved=${d.approved}`)
  )
  const on = (filename: string, engine: "cluster" | "journal" = "cluster") =>
    GateLayer.pipe(
      Layer.provideMerge(AgentRuntime.layer({ _tag: "Sqlite", filename, engine })),
      Layer.provideMerge(ApprovalToken.ApprovalSecret.layer(secret))
    )

  for (const [engine, other] of [
    ["cluster", "journal"],
    ["journal", "cluster"]
  ] as const) {
    it.live(`refuses to start the ${other} engine over unfinished runs of the ${engine} engine, then lets it`, () =>
      Effect.gen(function* () {
        const filename = Path.join(tempDir, `switch-${engine}.db`)
        const runId = yield* Effect.gen(function* () {
          const id = yield* Gate.execute({ id: "s" }, { discard: true })
          yield* pendingToken(id, "review")
          return id
        }).pipe(Effect.provide(on(filename, engine)))

        const refused = yield* Effect.flip(Effect.provide(Effect.void, on(filename, other)))
        assert.instanceOf(refused, AgentRuntime.EngineSwitched)
        assert.deepInclude(refused, { engine: other, other: engine, unfinished: 1 })
        assert.include(refused.message, `Start on the ${engine} engine`)

        // Finished on its own engine, the run no longer holds the database to it.
        yield* Effect.gen(function* () {
          const approvals = yield* Approvals
          yield* approvals.decide(yield* pendingToken(runId, "review"), { approved: true })
          yield* resultOf(Gate, runId)
        }).pipe(Effect.provide(on(filename, engine)))
        const next = yield* Gate.execute({ id: "after" }).pipe(
          Effect.raceFirst(Effect.as(Effect.sleep("100 millis"), "parked")),
          Effect.provide(on(filename, other))
        )
        assert.strictEqual(next, "parked")
      })
    )
  }

  it.live("delivers on start a decision that was recorded but not delivered before the process died", () =>
    Effect.gen(function* () {
      const filename = Path.join(tempDir, "undelivered.db")
      const runId = yield* Effect.gen(function* () {
        const id = yield* Gate.execute({ id: "g" }, { discard: true })
        yield* pendingToken(id, "review")
        return id
      }).pipe(Effect.provide(on(filename)))
      // What a process that died between recording and delivering leaves behind.
      const db = new DatabaseSync(filename)
      db.prepare(
        `UPDATE agent_waits SET state = 'decided', response = '{"approved":true,"by":"reviewer"}' WHERE run_id = ?`
      ).run(runId)
      db.close()
      const exit = yield* resultOf(Gate, runId).pipe(Effect.provide(on(filename)))
      assert.deepStrictEqual(exit._tag === "Success" ? exit.value : "", "approved=true")
    })
  )
})

describe("AgentWorkflow observability", () => {
  it.live("a span per run and per step, with run id, step, attempt, tokens and cost", () => {
    const spans: Array<Tracer.NativeSpan> = []
    const tracer = Tracer.make({
      span(options) {
        const span = new Tracer.NativeSpan(options)
        spans.push(span)
        return span
      }
    })
    return Effect.gen(function* () {
      const approvals = yield* Approvals
      const runId = yield* PlanAndAct.execute({ task: "Trace me" }, { discard: true })
      yield* approvals.decide(yield* pendingToken(runId, "review"), { approved: true })
      yield* resultOf(PlanAndAct, runId)
      const run = spans.find((s) => s.name === "AgentWorkflow.run PlanAndAct")
      assert.strictEqual(run?.attributes.get("run.id"), runId)
      const attempts = spans.filter((s) => s.name === "AgentActivity.attempt")
      assert.sameMembers(
        attempts.map((s) => s.attributes.get("step")),
        ["plan", "act"]
      )
      for (const span of attempts) {
        assert.strictEqual(span.attributes.get("run.id"), runId)
        assert.strictEqual(span.attributes.get("attempt"), 1)
        assert.strictEqual(span.attributes.get("agent.input_tokens"), 10)
        assert.strictEqual(span.attributes.get("agent.output_tokens"), 5)
        assert.isNumber(span.attributes.get("agent.cost_usd"))
      }
      assert.isTrue(
        spans.some((s) => s.name === "AgentWorkflow.await approval" && s.attributes.get("step") === "review")
      )
    }).pipe(
      Effect.provide(
        setup({ _tag: "Memory" }, [ScriptedModel.text("Plan."), ScriptedModel.text("Done.")]).pipe(
          Layer.provide(Layer.succeed(Tracer.Tracer)(tracer))
        )
      ),
      Effect.provideService(Tracer.Tracer, tracer)
    )
  })
})

describe("AgentWorkflow step names", () => {
  const Reserved = Workflow.make("Test/Reserved", {
    payload: { id: Schema.String },
    success: Schema.String,
    idempotencyKey: ({ id }) => id
  })
  it.live("refuses a step name with a slash, which the layer reserves", () =>
    Effect.gen(function* () {
      const exit = yield* Effect.exit(Reserved.execute({ id: "r" }))
      assert.include(String(exit), 'contains "/"')
    }).pipe(
      Effect.provide(
        AgentWorkflow.toLayer(Reserved, () =>
          AgentWorkflow.runStep("a/b", { execute: Effect.succeed("x"), success: Schema.String })
        ).pipe(
          Layer.provideMerge(AgentRuntime.layer({ _tag: "Memory" })),
          Layer.provideMerge(ApprovalToken.ApprovalSecret.layer(secret))
        )
      )
    )
  )
})
