/**
 * What the journal engine adds to the conformance suite: its state lives in
 * the database, so a new engine on the same database (a restart) picks up
 * where the last one stopped. Each test stops the engine between phases by
 * closing its layer; test/engine/Crash.test.ts does the same with SIGKILL.
 */
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { Duration, Effect, Exit, Layer, Option, Redacted, Schema } from "effect"
import * as Activity from "effect/workflow/Activity"
import * as DurableClock from "effect/workflow/DurableClock"
import * as DurableDeferred from "effect/workflow/DurableDeferred"
import * as Workflow from "effect/workflow/Workflow"
import type { WorkflowEngine } from "effect/workflow/WorkflowEngine"
import * as AgentEngine from "../../src/engine/AgentEngine.ts"
import { pollUntil, unique } from "./Conformance.ts"
import { createDatabase, dropDatabase } from "./TestDatabase.ts"

const runs = new Map<string, number>()
const countRun = (key: string) => Effect.sync(() => runs.set(key, (runs.get(key) ?? 0) + 1))
const runsOf = (key: string) => runs.get(key) ?? 0

const step = (name: string, executionId: string) =>
  Activity.make({ name, success: Schema.String, execute: Effect.as(countRun(`${executionId}/${name}`), name) })

const Decision = DurableDeferred.make("decision", { success: Schema.Boolean })

/** A workflow whose runs are keyed by an id and that returns a string. */
const workflowById = <const Tag extends string>(tag: Tag) =>
  Workflow.make(tag, { payload: { id: Schema.String }, success: Schema.String, idempotencyKey: ({ id }) => id })

const Review = workflowById("Journal/Review")

const Sleeper = workflowById("Journal/Sleeper")

const Outer = workflowById("Journal/Outer")

const Busy = workflowById("Journal/Busy")

/** While true, Busy works (in memory, outside any activity) until its engine stops. */
let busyBlocks = true

/** Until a test "deploys the fix", Brittle's code has a bug after its activity. */
let brittleFixed = false

const Brittle = workflowById("Journal/Brittle").annotate(Workflow.SuspendOnFailure, true)

const ReviewLayer = Review.toLayer(
  Effect.fnUntraced(function* (_, executionId) {
    const before = yield* step("before", executionId)
    const approved = yield* DurableDeferred.await(Decision)
    const after = yield* step("after", executionId)
    return `${before}, ${approved ? "approved" : "rejected"}, ${after}`
  })
)

const workflows = Layer.mergeAll(
  ReviewLayer,
  Sleeper.toLayer(
    Effect.fnUntraced(function* (_, executionId) {
      yield* step("before", executionId)
      yield* DurableClock.sleep({ name: "rest", duration: Duration.millis(400), inMemoryThreshold: Duration.zero })
      return yield* step("after", executionId)
    })
  ),
  Outer.toLayer(
    Effect.fnUntraced(function* ({ id }, executionId) {
      yield* step("before", executionId)
      return `outer got: ${yield* Review.execute({ id: `${id}-inner` })}`
    })
  ),
  Busy.toLayer(
    Effect.fnUntraced(function* (_, executionId) {
      yield* Workflow.addFinalizer((exit) => countRun(`${executionId}/finalizer-${exit._tag}`))
      yield* step("before", executionId)
      if (busyBlocks) yield* Effect.never
      return yield* step("after", executionId)
    })
  ),
  Brittle.toLayer(
    Effect.fnUntraced(function* (_, executionId) {
      yield* step("prepare", executionId)
      if (!brittleFixed) return yield* Effect.die(new Error("a bug in the workflow"))
      return "fixed"
    })
  )
)

const decide = (executionId: string, value: boolean) =>
  DurableDeferred.succeed(Decision, {
    token: DurableDeferred.tokenFromExecutionId(Decision, { workflow: Review, executionId }),
    value
  })

const completed = <A>(result: Workflow.Result<A, unknown>) =>
  result._tag === "Complete" ? Exit.getSuccess(result.exit) : Option.none()

/** Starts a run and waits until it reaches `state` (by default, suspended); returns its execution id. */
const startUntil = <A, E>(
  start: Effect.Effect<string, never, WorkflowEngine>,
  poll: (executionId: string) => Effect.Effect<Option.Option<Workflow.Result<A, E>>, never, WorkflowEngine>,
  state: (result: Workflow.Result<A, E>) => boolean = (result) => result._tag === "Suspended"
) => Effect.flatMap(start, (executionId) => Effect.as(pollUntil(poll(executionId), state), executionId))

type Engine = () => Layer.Layer<WorkflowEngine, unknown>

/** One engine's life: the layer is built (with the workflows registered, unless told not to), the effect runs, the engine stops. */
const life =
  (engine: Engine) =>
  <A, E>(effect: Effect.Effect<A, E, WorkflowEngine>, options: { readonly register?: boolean } = {}) =>
    effect.pipe(Effect.provide(options.register === false ? engine() : workflows.pipe(Layer.provideMerge(engine()))))

const isComplete = (result: Workflow.Result<unknown, unknown>) => result._tag === "Complete"

const journalSuite = (name: string, engine: Engine) =>
  describe(`JournalEngine on ${name}`, () => {
    const run = life(engine)

    it.live("a run waiting on a deferred resumes after a restart; recorded activities do not run again", () =>
      Effect.gen(function* () {
        const id = unique("review")
        const executionId = yield* run(
          startUntil(Review.execute({ id }, { discard: true }), (started) => Review.poll(started))
        )
        const result = yield* run(
          Effect.andThen(decide(executionId, true), pollUntil(Review.poll(executionId), isComplete))
        )
        assert.deepStrictEqual(completed(result), Option.some("before, approved, after"))
        assert.strictEqual(runsOf(`${executionId}/before`), 1)
        assert.strictEqual(runsOf(`${executionId}/after`), 1)
      })
    )

    it.live("a completion stored while the workflow was not running wakes the run on the next start", () =>
      Effect.gen(function* () {
        const id = unique("review")
        const executionId = yield* run(
          startUntil(Review.execute({ id }, { discard: true }), (started) => Review.poll(started))
        )
        // An engine on which the workflow is not registered stores the completion; nothing can replay it.
        yield* run(decide(executionId, true), { register: false })
        const result = yield* run(pollUntil(Review.poll(executionId), isComplete))
        assert.deepStrictEqual(completed(result), Option.some("before, approved, after"))
        assert.strictEqual(runsOf(`${executionId}/before`), 1)
      })
    )

    it.live("the first completion of a deferred wins, before and after a restart", () =>
      Effect.gen(function* () {
        const id = unique("review")
        const executionId = yield* run(Review.executionId({ id }))
        // Completed before the run even exists: the run finds it and never suspends.
        yield* run(decide(executionId, false), { register: false })
        yield* run(decide(executionId, true), { register: false })
        const result = yield* run(Effect.andThen(decide(executionId, true), Review.execute({ id })))
        assert.strictEqual(result, "before, rejected, after")
        assert.strictEqual(runsOf(`${executionId}/before`), 1)
      })
    )

    it.live("a durable sleep is re-armed on start and wakes the run", () =>
      Effect.gen(function* () {
        const id = unique("sleeper")
        const executionId = yield* run(
          startUntil(Sleeper.execute({ id }, { discard: true }), (started) => Sleeper.poll(started))
        )
        // Nothing but the clock can finish the run now.
        const result = yield* run(pollUntil(Sleeper.poll(executionId), isComplete))
        assert.deepStrictEqual(completed(result), Option.some("after"))
        assert.strictEqual(runsOf(`${executionId}/before`), 1)
        assert.strictEqual(runsOf(`${executionId}/after`), 1)
      })
    )

    it.live("a parent waiting on a child resumes after a restart when the child completes", () =>
      Effect.gen(function* () {
        const id = unique("outer")
        const innerId = yield* run(Review.executionId({ id: `${id}-inner` }))
        const outerId = yield* run(
          Effect.tap(
            startUntil(Outer.execute({ id }, { discard: true }), (started) => Outer.poll(started)),
            () => pollUntil(Review.poll(innerId), (r) => r._tag === "Suspended")
          )
        )
        const result = yield* run(Effect.andThen(decide(innerId, true), pollUntil(Outer.poll(outerId), isComplete)))
        assert.deepStrictEqual(completed(result), Option.some("outer got: before, approved, after"))
        assert.strictEqual(runsOf(`${outerId}/before`), 1)
        assert.strictEqual(runsOf(`${innerId}/before`), 1)
      })
    )

    it.live("a run suspended by a failure stays suspended across a restart until it is resumed", () =>
      Effect.gen(function* () {
        brittleFixed = false
        const id = unique("brittle")
        const executionId = yield* run(
          startUntil(
            Brittle.execute({ id }, { discard: true }),
            (started) => Brittle.poll(started),
            (r) => r._tag === "Suspended" && r.failed === true
          )
        )
        brittleFixed = true
        const result = yield* run(
          Effect.gen(function* () {
            // Not resumed on start: it still reports the failure.
            const polled = yield* Brittle.poll(executionId)
            assert.isTrue(Option.isSome(polled) && polled.value._tag === "Suspended" && polled.value.failed === true)
            yield* Brittle.resume(executionId)
            return yield* pollUntil(Brittle.poll(executionId), isComplete)
          })
        )
        assert.deepStrictEqual(completed(result), Option.some("fixed"))
        assert.strictEqual(runsOf(`${executionId}/prepare`), 1)
      })
    )

    it.live("a run cut off by the engine stopping runs no durable finalizer, and finishes after a restart", () =>
      Effect.gen(function* () {
        busyBlocks = true
        const id = unique("busy")
        const executionId = yield* run(
          Effect.gen(function* () {
            const started = yield* Busy.execute({ id }, { discard: true })
            while (runsOf(`${started}/before`) === 0) yield* Effect.sleep("20 millis")
            return started
          })
        )
        assert.strictEqual(runsOf(`${executionId}/finalizer-Failure`), 0)
        assert.strictEqual(runsOf(`${executionId}/finalizer-Success`), 0)
        busyBlocks = false
        const result = yield* run(pollUntil(Busy.poll(executionId), isComplete))
        assert.deepStrictEqual(completed(result), Option.some("after"))
        assert.strictEqual(runsOf(`${executionId}/before`), 1)
        assert.strictEqual(runsOf(`${executionId}/finalizer-Success`), 1)
        assert.strictEqual(runsOf(`${executionId}/finalizer-Failure`), 0)
      })
    )

    it.live("a finished run's result outlives the engine", () =>
      Effect.gen(function* () {
        const id = unique("review")
        const executionId = yield* run(
          startUntil(
            Effect.tap(Review.execute({ id }, { discard: true }), (started) => decide(started, true)),
            (started) => Review.poll(started),
            isComplete
          )
        )
        // Executing the same payload again joins the finished run.
        assert.strictEqual(yield* run(Review.execute({ id })), "before, approved, after")
        assert.strictEqual(runsOf(`${executionId}/after`), 1)
      })
    )
  })

const tempDir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "journal-engine-"))
// One database per suite, as a deployment has: every life of every test opens it again.
journalSuite("SQLite", () => AgentEngine.layerJournalSqlite({ filename: Path.join(tempDir, "journal.db") }))

let postgresUrl = ""
beforeAll(async () => {
  postgresUrl = await createDatabase("journal")
})
afterAll(() => dropDatabase(postgresUrl))
journalSuite("Postgres", () => AgentEngine.layerJournalPostgres({ url: Redacted.make(postgresUrl) }))

// The SQLite lock file is tested with layerSqlite's, in AgentEngine.test.ts.
describe("single process", () => {
  it.live("a second journal engine on the same Postgres database fails with DatabaseInUse", () =>
    Effect.gen(function* () {
      const url = Redacted.make(postgresUrl)
      yield* Layer.build(AgentEngine.layerJournalPostgres({ url }))
      const error = yield* Effect.flip(Layer.build(AgentEngine.layerJournalPostgres({ url })))
      assert.strictEqual((error as AgentEngine.DatabaseInUse)._tag, "DatabaseInUse")
      assert.include((error as AgentEngine.DatabaseInUse).message, "layerPostgresCluster")
    }).pipe(Effect.scoped)
  )
})
