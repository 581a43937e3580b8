/**
 * Approvals on their own: what a decision leaves in the run's output when it
 * comes, from another process, before the run has announced its request.
 * The fault campaign found the log showing the answer before the question
 * (test/faults, a client-only process deciding as soon as requests appear).
 * And a decision whose delivery fails: kept, answered, delivered later; and
 * one that comes after its request's deadline: refused.
 */
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Layer, Redacted } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import * as WorkflowEngine from "effect/workflow/WorkflowEngine"
import * as SqliteClient from "../../src/engine/SqliteClient.ts"
import { AgentOutput } from "../../src/output/AgentOutput.ts"
import * as AgentRuntime from "../../src/workflow/AgentRuntime.ts"
import * as ApprovalToken from "../../src/workflow/ApprovalToken.ts"
import { Approvals, Decision } from "../../src/workflow/Approvals.ts"

const layer = AgentRuntime.layerServices.pipe(
  Layer.provideMerge(WorkflowEngine.layerMemory),
  Layer.provideMerge(SqliteClient.layer({ filename: ":memory:" })),
  Layer.provideMerge(ApprovalToken.ApprovalSecret.layer(Redacted.make("a-test-secret-that-is-long-enough-to-sign")))
)

describe("Approvals", () => {
  it.effect("a decision recorded before the run announced its request: the request still comes first in the log", () =>
    Effect.gen(function* () {
      const approvals = yield* Approvals
      const output = yield* AgentOutput
      const sql = yield* SqlClient
      const request = { runId: "run-1", workflow: "Test/Flow", step: "review", purpose: "approval" as const }
      // Where `request` is between its two writes: the request stored, not yet announced.
      yield* sql`INSERT INTO agent_waits (run_id, step, workflow, purpose, request, state, created_at)
        VALUES ('run-1', 'review', 'Test/Flow', 'approval', ${JSON.stringify({ plan: "p" })}, 'pending', ${Date.now()})`
      const [wait] = yield* approvals.list({ runId: "run-1" })
      yield* approvals.decide(yield* approvals.tokenFor(wait!), { approved: true })
      // The run's own announcement, late: nothing new is stored.
      yield* approvals.request({ ...request, request: { plan: "p" } })

      const events = yield* output.read("run-1")
      assert.deepStrictEqual(
        events.map((e) => [e.sequence, e.step, e.index, e.kind]),
        [
          [1, "review", 0, "approval_requested"],
          [2, "review", 1, "decided"]
        ]
      )
      assert.deepStrictEqual(events[0]!.payload, { purpose: "approval", request: { plan: "p" } })
    }).pipe(Effect.provide(layer))
  )

  it.live("a decision whose delivery fails is kept, answered, and delivered by the background sweep", () =>
    Effect.gen(function* () {
      // The first delivery dies, as the cluster engine's does when the run's workflow is not registered yet.
      let failures = 1
      const delivered = yield* Deferred.make<string>()
      const engine = Layer.effect(WorkflowEngine.WorkflowEngine)(
        Effect.gen(function* () {
          const memory = yield* WorkflowEngine.WorkflowEngine
          return WorkflowEngine.WorkflowEngine.of({
            ...memory,
            deferredDone: (deferred, options) =>
              failures-- > 0
                ? Effect.die(new Error("Entity type 'Test/Flow' not registered"))
                : Effect.andThen(
                    memory.deferredDone(deferred, options),
                    Deferred.succeed(delivered, options.deferredName)
                  )
          })
        })
      ).pipe(Layer.provide(WorkflowEngine.layerMemory))
      const flaky = AgentRuntime.layerServices.pipe(
        Layer.provideMerge(engine),
        Layer.provideMerge(SqliteClient.layer({ filename: ":memory:" })),
        Layer.provideMerge(
          ApprovalToken.ApprovalSecret.layer(Redacted.make("a-test-secret-that-is-long-enough-to-sign"))
        )
      )
      yield* Effect.gen(function* () {
        const approvals = yield* Approvals
        yield* approvals.request({
          runId: "run-2",
          workflow: "Test/Flow",
          step: "review",
          purpose: "approval",
          request: null
        })
        const [wait] = yield* approvals.list({ runId: "run-2" })
        // Recorded, so the reviewer is told so; a second decision is refused as already decided.
        yield* approvals.decide(yield* approvals.tokenFor(wait!), { approved: true })
        const again = yield* Effect.flip(approvals.decide(yield* approvals.tokenFor(wait!), { approved: false }))
        assert.strictEqual(again.reason, "already_decided")
        assert.strictEqual(yield* Deferred.await(delivered), "approval/review")
      }).pipe(Effect.provide(flaky))
    })
  )

  it.live(
    "a decision recorded by a process that died before announcing it is announced and delivered by the sweep",
    () =>
      Effect.gen(function* () {
        const output = yield* AgentOutput
        const sql = yield* SqlClient
        // What the dead process left: the request stored, the decision recorded, neither announced nor delivered.
        yield* sql`INSERT INTO agent_waits (run_id, step, workflow, purpose, request, state, response, created_at, decided_at)
        VALUES ('run-3', 'review', 'Test/Flow', 'approval', ${JSON.stringify({ plan: "p" })}, 'decided',
          ${JSON.stringify({ approved: true, comment: "ok" })}, ${Date.now()}, ${Date.now()})`
        const delivered = sql<{ readonly delivered_at: unknown }>`SELECT delivered_at FROM agent_waits
          WHERE run_id = 'run-3'`
        while ((yield* delivered)[0]!.delivered_at === null) yield* Effect.sleep("100 millis")
        const events = yield* output.read("run-3")
        assert.deepStrictEqual(
          events.map((e) => [e.step, e.index, e.kind]),
          [
            ["review", 0, "approval_requested"],
            ["review", 1, "decided"]
          ]
        )
        assert.deepInclude(events[1]!.payload as object, { purpose: "approval" })
      }).pipe(Effect.provide(layer), Effect.timeout("20 seconds"))
  )

  it.effect("a token used after its request's deadline is refused, even before the timeout has fired", () =>
    Effect.gen(function* () {
      const approvals = yield* Approvals
      const output = yield* AgentOutput
      // The deadline has passed; the run's timer, on a runner that was down, has not fired.
      yield* approvals.request({
        runId: "run-4",
        workflow: "Test/Flow",
        step: "review",
        purpose: "approval",
        request: { plan: "p" },
        expiresAt: Date.now() - 1
      })
      const [wait] = yield* approvals.list({ runId: "run-4" })
      const error = yield* Effect.flip(approvals.decide(yield* approvals.tokenFor(wait!), { approved: true }))
      assert.deepInclude(error, { _tag: "DecisionRejected", reason: "timed_out" })
      assert.strictEqual((yield* approvals.list({ runId: "run-4" }))[0]!.state, "pending")
      // When the timer fires, the run takes its default, not the late decision.
      const fallback = new Decision({ approved: false, comment: "timed out", by: "timeout" })
      assert.deepStrictEqual(yield* approvals.expire("run-4", "review", fallback), fallback)
      assert.deepStrictEqual(
        (yield* output.read("run-4")).map((e) => e.kind),
        ["approval_requested", "decided"]
      )
    }).pipe(Effect.provide(layer))
  )
})
