/**
 * One behavioural suite for every engine: what a workflow author relies on,
 * whichever engine runs it.
 */
import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect, Exit, Layer, Option, Schema } from "effect"
import * as Activity from "effect/workflow/Activity"
import * as DurableClock from "effect/workflow/DurableClock"
import * as DurableDeferred from "effect/workflow/DurableDeferred"
import * as Workflow from "effect/workflow/Workflow"
import type { WorkflowEngine } from "effect/workflow/WorkflowEngine"

/** How many times each activity ran, per execution: replays must not add to it. */
const runs = new Map<string, number>()
const countRun = (key: string) => Effect.sync(() => runs.set(key, (runs.get(key) ?? 0) + 1))
const runsOf = (key: string) => runs.get(key) ?? 0

class Refused extends Schema.TaggedError<Refused>()("Refused", { reason: Schema.String }) {}

export const Greet = Workflow.make("Conformance/Greet", {
  payload: { name: Schema.String },
  success: Schema.String,
  error: Refused,
  idempotencyKey: ({ name }) => name
})

export const Approval = DurableDeferred.make("approval", { success: Schema.Boolean })

export const Gate = Workflow.make("Conformance/Gate", {
  payload: { id: Schema.String },
  success: Schema.String,
  idempotencyKey: ({ id }) => id
})

const Nap = Workflow.make("Conformance/Nap", {
  payload: { id: Schema.String, millis: Schema.Number },
  success: Schema.String,
  idempotencyKey: ({ id }) => id
})

const Saga = Workflow.make("Conformance/Saga", {
  payload: { id: Schema.String },
  success: Schema.String,
  idempotencyKey: ({ id }) => id
})

const Parent = Workflow.make("Conformance/Parent", {
  payload: { id: Schema.String },
  success: Schema.String,
  idempotencyKey: ({ id }) => id
})

/** Until a test "deploys the fix", Fragile's code has a bug after its activity. */
let fragileFixed = false

const Fragile = Workflow.make("Conformance/Fragile", {
  payload: { id: Schema.String },
  success: Schema.String,
  idempotencyKey: ({ id }) => id
}).annotate(Workflow.SuspendOnFailure, true)

const compensated = new Set<string>()

export const workflows = Layer.mergeAll(
  Greet.toLayer(
    Effect.fnUntraced(function* ({ name }, executionId) {
      if (name === "nobody") return yield* new Refused({ reason: "no name" })
      return yield* Activity.make({
        name: "compose",
        success: Schema.String,
        execute: Effect.as(countRun(`${executionId}/compose`), `Hello, ${name}`)
      })
    })
  ),
  Gate.toLayer(
    Effect.fnUntraced(function* (_, executionId) {
      const before = yield* Activity.make({
        name: "before",
        success: Schema.String,
        execute: Effect.as(countRun(`${executionId}/before`), "prepared")
      })
      const approved = yield* DurableDeferred.await(Approval)
      return approved ? `${before}, approved` : `${before}, rejected`
    })
  ),
  Nap.toLayer(
    Effect.fnUntraced(function* ({ millis }, executionId) {
      yield* Activity.make({ name: "before", execute: countRun(`${executionId}/before`) })
      // A zero threshold makes even a short sleep go through the engine's durable clock.
      yield* DurableClock.sleep({ name: "nap", duration: Duration.millis(millis), inMemoryThreshold: Duration.zero })
      return "rested"
    })
  ),
  Saga.toLayer(
    Effect.fnUntraced(function* (_, executionId) {
      yield* Activity.make({ name: "book", execute: countRun(`${executionId}/book`) }).pipe(
        Workflow.withCompensation(() => Effect.sync(() => compensated.add(executionId)))
      )
      yield* DurableDeferred.await(Approval)
      return "booked"
    })
  ),
  Fragile.toLayer(
    Effect.fnUntraced(function* (_, executionId) {
      yield* Activity.make({ name: "prepare", execute: countRun(`${executionId}/prepare`) })
      if (!fragileFixed) return yield* Effect.die(new Error("a bug in the workflow"))
      return "fixed"
    })
  ),
  Parent.toLayer(
    Effect.fnUntraced(function* ({ id }) {
      const child = yield* Effect.orDie(Greet.execute({ name: `child-of-${id}` }))
      return `parent got: ${child}`
    })
  )
)

export const pollUntil = <A>(effect: Effect.Effect<Option.Option<A>, never, WorkflowEngine>, done: (a: A) => boolean) =>
  Effect.gen(function* () {
    for (let i = 0; i < 600; i++) {
      const result = yield* effect
      if (Option.isSome(result) && done(result.value)) return result.value
      yield* Effect.sleep(Duration.millis(50))
    }
    return yield* Effect.die(new Error("the run did not reach the expected state within 30 s"))
  })

export const unique = (label: string) => `${label}-${Math.random().toString(36).slice(2, 10)}`

/**
 * Runs the suite against the engine a fresh `engine()` layer provides.
 */
export const conformance = (engineName: string, engine: () => Layer.Layer<WorkflowEngine, unknown>) => {
  const provide = <A, E>(effect: Effect.Effect<A, E, WorkflowEngine>) =>
    effect.pipe(Effect.provide(workflows.pipe(Layer.provideMerge(engine()))))

  describe(`engine conformance: ${engineName}`, () => {
    it.live("executes a workflow and polls its result", () =>
      provide(
        Effect.gen(function* () {
          const name = unique("ada")
          assert.strictEqual(yield* Greet.execute({ name }), `Hello, ${name}`)
          const executionId = yield* Greet.executionId({ name })
          const polled = yield* Greet.poll(executionId)
          assert.isTrue(Option.isSome(polled) && polled.value._tag === "Complete")
          // Executing the same payload again joins the finished run: the activity does not run twice.
          assert.strictEqual(yield* Greet.execute({ name }), `Hello, ${name}`)
          assert.strictEqual(runsOf(`${executionId}/compose`), 1)
        })
      )
    )

    it.live("preserves a typed error", () =>
      provide(
        Effect.gen(function* () {
          const error = yield* Effect.flip(Greet.execute({ name: "nobody" }))
          assert.instanceOf(error, Refused)
          assert.strictEqual(error.reason, "no name")
        })
      )
    )

    it.live("suspends on a deferred and resumes when it is completed, running the activity once", () =>
      provide(
        Effect.gen(function* () {
          const id = unique("gate")
          const executionId = yield* Gate.execute({ id }, { discard: true })
          yield* pollUntil(Gate.poll(executionId), (r) => r._tag === "Suspended")
          const token = DurableDeferred.tokenFromExecutionId(Approval, { workflow: Gate, executionId })
          yield* DurableDeferred.succeed(Approval, { token, value: true })
          const result = yield* pollUntil(Gate.poll(executionId), (r) => r._tag === "Complete")
          assert.deepStrictEqual(
            result._tag === "Complete" ? result.exit : undefined,
            Exit.succeed("prepared, approved")
          )
          assert.strictEqual(runsOf(`${executionId}/before`), 1)
        })
      )
    )

    it.live("sleeps durably and wakes up", () =>
      provide(
        Effect.gen(function* () {
          const id = unique("nap")
          const executionId = yield* Nap.execute({ id, millis: 300 }, { discard: true })
          const result = yield* pollUntil(Nap.poll(executionId), (r) => r._tag === "Complete")
          assert.deepStrictEqual(result._tag === "Complete" ? result.exit : undefined, Exit.succeed("rested"))
          assert.strictEqual(runsOf(`${executionId}/before`), 1)
        })
      )
    )

    it.live("runs compensations when a run is interrupted", () =>
      provide(
        Effect.gen(function* () {
          const id = unique("saga")
          const executionId = yield* Saga.execute({ id }, { discard: true })
          yield* pollUntil(Saga.poll(executionId), (r) => r._tag === "Suspended")
          yield* Saga.interrupt(executionId)
          const result = yield* pollUntil(Saga.poll(executionId), (r) => r._tag === "Complete")
          assert.isTrue(result._tag === "Complete" && Exit.hasInterrupts(result.exit))
          assert.isTrue(compensated.has(executionId))
          assert.strictEqual(runsOf(`${executionId}/book`), 1)
        })
      )
    )

    it.live("suspends a failing run with SuspendOnFailure, and resume finishes it after the fix", () =>
      provide(
        Effect.gen(function* () {
          fragileFixed = false
          const id = unique("fragile")
          const executionId = yield* Fragile.execute({ id }, { discard: true })
          const suspended = yield* pollUntil(Fragile.poll(executionId), (r) => r._tag === "Suspended")
          assert.isTrue(suspended._tag === "Suspended" && suspended.failed === true)
          fragileFixed = true
          yield* Fragile.resume(executionId)
          const result = yield* pollUntil(Fragile.poll(executionId), (r) => r._tag === "Complete")
          assert.deepStrictEqual(result._tag === "Complete" ? result.exit : undefined, Exit.succeed("fixed"))
          assert.strictEqual(runsOf(`${executionId}/prepare`), 1)
        })
      )
    )

    it.live("runs a child workflow", () =>
      provide(
        Effect.gen(function* () {
          const id = unique("parent")
          assert.strictEqual(yield* Parent.execute({ id }), `parent got: Hello, child-of-${id}`)
        })
      )
    )
  })
}
