/**
 * A durable `WorkflowEngine` for one process, journaling to `effect/sql`
 * tables with one write per completed activity.
 *
 * It keeps `WorkflowEngine.layerMemory`'s model (a run replays its workflow
 * from the top; recorded activity results and deferred completions
 * short-circuit; a run that suspends ends its fiber; a completion preempts or
 * wakes it) and puts the memory engine's maps in four tables:
 *
 * | table | row | written |
 * | --- | --- | --- |
 * | `journal_executions` | a run: workflow, encoded payload, parent, state, encoded result, interrupt flag | at start, at the end, on a failure suspension, on interrupt |
 * | `journal_activities` | an activity attempt's encoded `Workflow.Result` | once, when the attempt completes |
 * | `journal_deferreds` | a deferred's encoded `Exit` | once: the first completion wins |
 * | `journal_clocks` | a durable sleep's wake-up time | when the sleep is scheduled |
 *
 * Each of those writes is one autocommitted statement. On start, after the
 * engine's tables exist, every execution that has not completed is loaded and
 * replayed as soon as its workflow registers, and every pending durable clock
 * is armed again, so a process killed with SIGKILL resumes where its journal
 * ends: recorded activities return their results without running again.
 *
 * One process per database: the state of running executions lives in this
 * process, and nothing coordinates two of them. `AgentEngine.layerJournalSqlite`
 * and `AgentEngine.layerJournalPostgres` guard that (a lock file, a Postgres
 * advisory lock); several runners need `AgentEngine.layerPostgresCluster`.
 *
 * @since 0.1.0
 */
import {
  Cause,
  Clock,
  Context,
  Deferred,
  Duration,
  Effect,
  Exit,
  Fiber,
  FiberMap,
  Layer,
  Option,
  Schema,
  Scope,
  Semaphore
} from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"
import * as DurableClock from "effect/workflow/DurableClock"
import * as Workflow from "effect/workflow/Workflow"
import * as WorkflowEngine from "effect/workflow/WorkflowEngine"
import * as Durably from "./Durably.ts"

// -----------------------------------------------------------------------------
// Encodings: what the journal stores, as JSON text
// -----------------------------------------------------------------------------

// Activity results and deferred exits reach the engine already encoded by
// their own schemas (`Activity.executeEncoded`, `DurableDeferred.exitSchema`);
// what is left is the Exit/Cause structure around them, as in `effect/cluster`.
const AnyOrUndefined = Schema.Union([Schema.Undefined, Schema.Any])
const ActivityResultJson = Schema.toCodecJson(Workflow.Result({ success: AnyOrUndefined, error: AnyOrUndefined }))
const DeferredExitJson = Schema.toCodecJson(Schema.Exit(AnyOrUndefined, AnyOrUndefined, Schema.Any))
const SuspendedJson = Schema.toCodecJson(Workflow.Suspended)

type AnyResult = Workflow.Result<unknown, unknown>

/** A workflow's own payload and result codecs, built once per registration. */
interface WorkflowCodecs {
  readonly payload: Schema.Codec<unknown, unknown>
  readonly result: Schema.Codec<AnyResult, unknown>
}

const codecs = new WeakMap<Workflow.Any, WorkflowCodecs>()
const codecsFor = (workflow: Workflow.Any): WorkflowCodecs => {
  let found = codecs.get(workflow)
  if (found === undefined) {
    found = {
      payload: Schema.toCodecJson(workflow.payloadSchema) as unknown as Schema.Codec<unknown, unknown>,
      result: Schema.toCodecJson(
        Workflow.Result({ success: workflow.successSchema, error: workflow.errorSchema })
      ) as unknown as Schema.Codec<AnyResult, unknown>
    }
    codecs.set(workflow, found)
  }
  return found
}

// Workflow schemas may in principle need services; the engine's contract
// (`Encoded`) has none to give, like the other engines.
const encodeJson = <A>(codec: Schema.Codec<A, unknown>, value: A): Effect.Effect<string> =>
  Effect.map(Effect.orDie(Schema.encodeEffect(codec)(value)), (encoded) => JSON.stringify(encoded))

/**
 * A step's result as `ActivityResultJson` writes it. The success of an
 * activity is already JSON (encoded by the activity's own schema), so the
 * common case skips the schema walk; it is a tenth of a step's own cost.
 */
const encodeActivityResult = (result: AnyResult): Effect.Effect<string> =>
  result._tag === "Complete" && Exit.isSuccess(result.exit)
    ? Effect.succeed(JSON.stringify({ _tag: "Complete", exit: { _tag: "Success", value: result.exit.value ?? null } }))
    : encodeJson(ActivityResultJson, result)

const decodeJson = <A>(codec: Schema.Codec<A, unknown>, text: string): Effect.Effect<A> =>
  Effect.orDie(Schema.decodeUnknownEffect(codec)(JSON.parse(text)))

// -----------------------------------------------------------------------------
// Tables
// -----------------------------------------------------------------------------

const createTables = (sql: SqlClient) => {
  // On SQLite the journal's rows live in their primary key's B-tree alone:
  // a step's commit then writes fewer pages.
  const clustered = sql.onDialectOrElse({ sqlite: () => sql.literal("WITHOUT ROWID"), orElse: () => sql.literal("") })
  return Effect.all(
    [
      sql`CREATE TABLE IF NOT EXISTS journal_executions (
        execution_id TEXT PRIMARY KEY,
        workflow TEXT NOT NULL,
        payload TEXT NOT NULL,
        parent TEXT,
        state TEXT NOT NULL,
        result TEXT,
        interrupted INTEGER NOT NULL DEFAULT 0,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
      )`,
      sql`CREATE INDEX IF NOT EXISTS journal_executions_state ON journal_executions (state, updated_at)`,
      sql`CREATE TABLE IF NOT EXISTS journal_activities (
        execution_id TEXT NOT NULL,
        name TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        result TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (execution_id, name, attempt)
      ) ${clustered}`,
      sql`CREATE TABLE IF NOT EXISTS journal_deferreds (
        execution_id TEXT NOT NULL,
        name TEXT NOT NULL,
        exit TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (execution_id, name)
      ) ${clustered}`,
      sql`CREATE TABLE IF NOT EXISTS journal_clocks (
        execution_id TEXT NOT NULL,
        name TEXT NOT NULL,
        workflow TEXT NOT NULL,
        wake_at BIGINT NOT NULL,
        PRIMARY KEY (execution_id, name)
      )`
    ],
    { discard: true }
  )
}

/**
 * The journal's table names, for code that reads or purges them (retention).
 *
 * @category models
 */
export const tables = {
  executions: "journal_executions",
  activities: "journal_activities",
  deferreds: "journal_deferreds",
  clocks: "journal_clocks"
} as const

/**
 * `journal_executions.state`: `running` covers a run that is executing or
 * waiting (resumed on start); `failed` is a run suspended by
 * `Workflow.SuspendOnFailure`, which waits for `resume` or `interrupt`.
 */
type ExecutionRowState = "running" | "failed" | "complete"

interface ExecutionRow {
  readonly execution_id: string
  readonly workflow: string
  readonly payload: string
  readonly parent: string | null
  readonly state: ExecutionRowState
  readonly result: string | null
  readonly interrupted: number | string
}

const Interrupted = { none: 0, safe: 1, unsafe: 2 } as const

// -----------------------------------------------------------------------------
// The engine
// -----------------------------------------------------------------------------

type WakeMode = "explicit" | "automatic"

const isUnwakeable = (result: AnyResult, mode: WakeMode) =>
  result._tag === "Complete" || (mode === "automatic" && result.failed === true)

interface Registration {
  readonly workflow: Workflow.Any
  readonly execute: (
    payload: object,
    executionId: string
  ) => Effect.Effect<unknown, unknown, WorkflowEngine.WorkflowInstance | WorkflowEngine.WorkflowEngine>
  readonly codecs: WorkflowCodecs
}

/** An execution that has not completed: everything the engine knows of it in memory. */
interface Execution {
  readonly executionId: string
  readonly workflowName: string
  readonly parent: string | undefined
  /** Typed once decoded (or given by `execute`); the stored JSON until then. */
  payload: { readonly typed: object } | { readonly json: string }
  interrupted: boolean
  interruptedUnsafe: boolean
  /** The strongest wake requested while a run was finishing, or before its workflow registered. */
  resumeRequested: WakeMode | undefined
  /** Whether a run has started in this process: registration starts those that have not. */
  started: boolean
  /** The run in progress, or the last one when it ended without a result (a defect in the engine). */
  run:
    | { readonly fiber: Fiber.Fiber<AnyResult>; readonly instance: WorkflowEngine.WorkflowInstance["Service"] }
    | undefined
  /** The result of the last run when it suspended. */
  last: Workflow.Suspended | undefined
  /** Recorded activity results by `attempt/name`, loaded for the run in progress only. */
  activities: Map<string, AnyResult> | undefined
  /** Deferred completions (encoded exits); kept while the execution is in memory. */
  readonly deferreds: Map<string, Exit.Exit<unknown, unknown>>
  /** Completed when the execution completes. */
  readonly done: Deferred.Deferred<void>
  /** Parent of every run's scope: scopes of suspended runs stay open until the execution finishes. */
  readonly scope: Scope.Closeable
}

const activityKey = (name: string, attempt: number) => `${attempt}/${name}`

// A journal write is never given up (see `Durably`): giving up would leave the
// run with no result until the process restarts.
const durably = <A>(effect: Effect.Effect<A, SqlError>): Effect.Effect<A> =>
  effect.pipe(Effect.retry(Durably.schedule), Effect.orDie)

/**
 * Builds the engine on the `SqlClient` in context: creates the tables, loads
 * the executions that have not completed and re-arms their durable clocks.
 * Executions replay as their workflows register.
 *
 * @category constructors
 */
export const make: Effect.Effect<WorkflowEngine.WorkflowEngine["Service"], SqlError, SqlClient | Scope.Scope> =
  Effect.gen(function* () {
    const sql = (yield* SqlClient).withoutTransforms()
    const scope = yield* Effect.scope
    yield* createTables(sql)

    const registrations = new Map<string, Registration>()
    const registered = new Map<string, Deferred.Deferred<Registration>>()
    const registrationOf = (workflowName: string) => {
      let deferred = registered.get(workflowName)
      if (deferred === undefined) {
        deferred = Deferred.makeUnsafe<Registration>()
        registered.set(workflowName, deferred)
      }
      return deferred
    }

    const executions = new Map<string, Execution>()
    const deferredState = WorkflowEngine.makeDeferredState()
    const clocks = yield* FiberMap.make<string>()
    // Serialises the creation of executions, so that two callers of one new
    // execution share it and its row is inserted once.
    const creating = Semaphore.makeUnsafe(1)

    const newExecution = (options: {
      readonly executionId: string
      readonly workflowName: string
      readonly parent: string | undefined
      readonly payload: Execution["payload"]
    }): Execution => ({
      ...options,
      interrupted: false,
      interruptedUnsafe: false,
      resumeRequested: undefined,
      started: false,
      run: undefined,
      last: undefined,
      activities: undefined,
      deferreds: new Map(),
      done: Deferred.makeUnsafe(),
      scope: Scope.makeUnsafe()
    })

    const fromRow = (row: ExecutionRow) =>
      Effect.gen(function* () {
        const execution = newExecution({
          executionId: row.execution_id,
          workflowName: row.workflow,
          parent: row.parent ?? undefined,
          payload: { json: row.payload }
        })
        const interrupted = Number(row.interrupted)
        execution.interrupted = interrupted >= Interrupted.safe
        execution.interruptedUnsafe = interrupted === Interrupted.unsafe
        if (row.state === "failed" && row.result !== null) execution.last = yield* decodeJson(SuspendedJson, row.result)
        return execution
      })

    // -- writes ---------------------------------------------------------------

    const setState = (execution: Execution, state: ExecutionRowState, result: string | null) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) =>
        durably(sql`UPDATE journal_executions SET state = ${state}, result = ${result}, updated_at = ${now}
          WHERE execution_id = ${execution.executionId}`)
      )

    // -- reads ----------------------------------------------------------------

    /** Loads the run's recorded activities and the execution's deferred completions, and decodes its payload. */
    const loadJournal = (execution: Execution, registration: Registration) =>
      Effect.gen(function* () {
        const rows = yield* durably(sql<{
          readonly kind: number | string
          readonly name: string
          readonly attempt: number | string
          readonly value: string
        }>`SELECT 0 AS kind, name, attempt, result AS value FROM journal_activities WHERE execution_id = ${execution.executionId}
          UNION ALL
          SELECT 1 AS kind, name, 0 AS attempt, exit AS value FROM journal_deferreds WHERE execution_id = ${execution.executionId}`)
        const activities = new Map<string, AnyResult>()
        for (const row of rows) {
          if (Number(row.kind) === 0) {
            activities.set(activityKey(row.name, Number(row.attempt)), yield* decodeJson(ActivityResultJson, row.value))
          } else if (!execution.deferreds.has(row.name)) {
            execution.deferreds.set(row.name, yield* decodeJson(DeferredExitJson, row.value))
          }
        }
        execution.activities = activities
        if ("json" in execution.payload) {
          execution.payload = {
            typed: (yield* decodeJson(registration.codecs.payload, execution.payload.json)) as object
          }
        }
        return execution.payload.typed
      })

    const completedResult = (workflow: Workflow.Any, executionId: string) =>
      Effect.gen(function* () {
        const rows = yield* durably(
          sql<{ readonly result: string }>`SELECT result FROM journal_executions
            WHERE execution_id = ${executionId} AND state = ${"complete"}`
        )
        const row = rows[0]
        if (row === undefined) return Option.none<AnyResult>()
        return Option.some(yield* decodeJson(codecsFor(workflow).result, row.result))
      })

    // -- runs -----------------------------------------------------------------

    /** Records how a run ended: the result of a complete execution, or a failure suspension. */
    const settle = (execution: Execution, registration: Registration, result: AnyResult) =>
      Effect.gen(function* () {
        if (result._tag === "Complete") {
          yield* setState(execution, "complete", yield* encodeJson(registration.codecs.result, result))
          if (execution.parent !== undefined) yield* Effect.forkIn(resume(execution.parent, "automatic"), scope)
        } else if (result.failed === true) {
          yield* setState(execution, "failed", yield* encodeJson(SuspendedJson, result))
        }
      }).pipe(Effect.uninterruptible)

    const start = Effect.fnUntraced(function* (execution: Execution, registration: Registration) {
      const executionId = execution.executionId
      const workflow = registration.workflow
      execution.started = true
      // Like the other engines, each run gets a fresh scope, so replays rebuild
      // compensations instead of registering them again.
      const instance = WorkflowEngine.WorkflowInstance.initial(workflow, executionId, {
        scope: Scope.forkUnsafe(execution.scope)
      })
      const body = Effect.flatMap(loadJournal(execution, registration), (payload) =>
        registration.execute(payload, executionId).pipe(
          Effect.onExit((exit) => {
            // Safe interrupts take effect only when the run would suspend;
            // unsafe interrupts must also survive a replay that completes normally.
            if (
              !execution.interrupted ||
              (!execution.interruptedUnsafe &&
                !instance.suspended &&
                !instance.abandoned &&
                !(Context.get(workflow.annotations, Workflow.SuspendOnFailure) && Exit.isFailure(exit)))
            ) {
              return Effect.void
            }
            instance.interrupted = true
            instance.suspended = false
            return Effect.withFiber((fiber) => Effect.interruptible(Fiber.interrupt(fiber)))
          }),
          Workflow.intoResult,
          Effect.provideService(WorkflowEngine.WorkflowEngine, engine),
          (effect) => deferredState.trackRun(instance, effect)
        )
      )
      const fiber = yield* body.pipe(
        Effect.tap((result) => settle(execution, registration, result)),
        Effect.onExit((exit) =>
          Effect.suspend(() => {
            execution.activities = undefined
            if (Exit.isSuccess(exit) && exit.value._tag === "Suspended") {
              execution.last = exit.value
              if (execution.run?.instance === instance) execution.run = undefined
              return Effect.void
            }
            // A run that ended without a result (the engine stopped, or its journal
            // failed) leaves the execution as it was, to run again.
            if (!(Exit.isSuccess(exit) && exit.value._tag === "Complete")) return Effect.void
            if (executions.get(executionId) === execution) executions.delete(executionId)
            // The final run's scope closed with the real exit. Closing the parent
            // then closes earlier scopes in reverse order with `Exit.void`, so
            // their superseded compensations are skipped.
            return Effect.andThen(Scope.close(execution.scope, Exit.void), Deferred.succeed(execution.done, undefined))
          })
        ),
        // In the engine's scope: the registration's own finalizer stops it (see `register`).
        Effect.forkIn(scope)
      )
      execution.run = { fiber, instance }
    })

    const resume = Effect.fnUntraced(function* (executionId: string, mode: WakeMode): Effect.fn.Return<void> {
      const execution = executions.get(executionId)
      if (execution === undefined) return
      const run = execution.run
      if (run !== undefined && run.fiber.pollUnsafe() === undefined) {
        // Queue wakes until the run finishes; explicit wakes take priority.
        const requested = execution.resumeRequested
        execution.resumeRequested = mode === "explicit" ? mode : (requested ?? mode)
        if (requested === undefined) {
          yield* Fiber.await(run.fiber).pipe(
            Effect.flatMap(() => {
              const queued = execution.resumeRequested!
              execution.resumeRequested = undefined
              return resume(executionId, queued)
            }),
            Effect.forkIn(scope)
          )
        }
        return
      }
      if (execution.last !== undefined && isUnwakeable(execution.last, mode)) return
      const registration = registrations.get(execution.workflowName)
      if (registration === undefined) {
        // Started when its workflow registers.
        execution.resumeRequested = mode === "explicit" ? mode : (execution.resumeRequested ?? mode)
        return
      }
      if (execution.last?.failed === true) {
        // Explicitly resumed after a failure: from now on it resumes on start again.
        yield* setState(execution, "running", null)
      }
      execution.last = undefined
      execution.run = undefined
      yield* start(execution, registration)
    })

    /** Completes the deferred if nobody has, and wakes the run; the first completion wins. */
    const complete = (options: {
      readonly workflowName: string
      readonly executionId: string
      readonly deferredName: string
      readonly exit: Exit.Exit<unknown, unknown>
    }) =>
      Effect.gen(function* () {
        const { deferredName, executionId } = options
        if (executions.get(executionId)?.deferreds.has(deferredName)) return
        const exit = yield* encodeJson(DeferredExitJson, options.exit)
        const now = yield* Clock.currentTimeMillis
        const won = yield* durably(
          sql`INSERT INTO journal_deferreds (execution_id, name, exit, created_at)
            VALUES (${executionId}, ${deferredName}, ${exit}, ${now})
            ON CONFLICT (execution_id, name) DO NOTHING RETURNING name`
        )
        if (won.length === 0) {
          // Someone completed it first, unless the stored completion is this one (a retried
          // statement whose first attempt committed, or the same completion sent again): then
          // the wake below may not have happened yet.
          const stored = yield* durably(
            sql<{ readonly exit: string }>`SELECT exit FROM journal_deferreds
              WHERE execution_id = ${executionId} AND name = ${deferredName}`
          )
          if (stored[0]?.exit !== exit) return
        }
        executions.get(executionId)?.deferreds.set(deferredName, options.exit)
        const wake = Effect.andThen(
          deferredState.deferredDone(executionId, deferredName),
          resume(executionId, "automatic")
        )
        const current = yield* Effect.serviceOption(WorkflowEngine.WorkflowInstance)
        // A workflow finalizer cannot wait for its own run's cleanup.
        // The engine scope owns the wake so cleanup still precedes replay.
        yield* Option.isSome(current) && current.value.executionId === executionId
          ? Effect.asVoid(Effect.forkIn(wake, scope))
          : wake
      })

    const armClock = (options: {
      readonly workflowName: string
      readonly executionId: string
      readonly name: string
      readonly wakeAt: number
    }) =>
      Effect.gen(function* () {
        const now = yield* Clock.currentTimeMillis
        const deferred = DurableClock.make({ name: options.name, duration: Duration.zero }).deferred
        yield* engine
          .deferredDone(deferred, {
            workflowName: options.workflowName,
            executionId: options.executionId,
            deferredName: deferred.name,
            exit: Exit.void
          })
          .pipe(
            Effect.delay(Duration.millis(Math.max(0, options.wakeAt - now))),
            FiberMap.run(clocks, `${options.executionId}/${options.name}`, { onlyIfMissing: true })
          )
      })

    /** Creates the execution, or finds it: in memory while it has not completed, in the journal after. */
    const create = (
      registration: Registration,
      options: {
        readonly executionId: string
        readonly payload: object
        readonly parent: string | undefined
      }
    ) =>
      creating.withPermits(1)(
        Effect.gen(function* () {
          const existing = executions.get(options.executionId)
          if (existing !== undefined) return existing
          const payload = yield* encodeJson(registration.codecs.payload, options.payload)
          const now = yield* Clock.currentTimeMillis
          const inserted = yield* durably(
            sql`INSERT INTO journal_executions
              (execution_id, workflow, payload, parent, state, result, interrupted, created_at, updated_at)
              VALUES (${options.executionId}, ${registration.workflow._tag}, ${payload}, ${options.parent ?? null},
                ${"running"}, ${null}, ${Interrupted.none}, ${now}, ${now})
              ON CONFLICT (execution_id) DO NOTHING RETURNING execution_id`
          )
          if (inserted.length > 0) {
            const execution = newExecution({
              executionId: options.executionId,
              workflowName: registration.workflow._tag,
              parent: options.parent,
              payload: { typed: options.payload }
            })
            executions.set(options.executionId, execution)
            yield* resume(options.executionId, "explicit")
            return execution
          }
          const rows = yield* durably(
            sql<ExecutionRow>`SELECT * FROM journal_executions WHERE execution_id = ${options.executionId}`
          )
          const row = rows[0]!
          if (row.state === "complete") return yield* decodeJson(registration.codecs.result, row.result!)
          // Not complete yet not in memory: another process wrote it (not supported) or
          // it was loaded and lost; adopt it as on start.
          const adopted = yield* fromRow(row)
          executions.set(options.executionId, adopted)
          yield* resume(options.executionId, "automatic")
          return adopted
        })
      )

    const engine: WorkflowEngine.WorkflowEngine["Service"] = WorkflowEngine.makeUnsafe({
      register: Effect.fnUntraced(function* (workflow, execute) {
        const registration: Registration = { workflow, execute, codecs: codecsFor(workflow) }
        registrations.set(workflow._tag, registration)
        // When the workflow's layer stops, its runs stop without a result: marked
        // abandoned first, so that `Workflow.addFinalizer` callbacks (durable
        // finalizers) do not run, and the runs replay on the next start.
        yield* Effect.addFinalizer(() =>
          Effect.suspend(() => {
            if (registrations.get(workflow._tag) === registration) registrations.delete(workflow._tag)
            const runs: Array<Fiber.Fiber<AnyResult>> = []
            for (const execution of executions.values()) {
              if (execution.workflowName !== workflow._tag || execution.run === undefined) continue
              execution.run.instance.abandoned = true
              execution.started = false
              runs.push(execution.run.fiber)
            }
            return Fiber.interruptAll(runs)
          })
        )
        // Executions loaded on start (or woken before this) replay now.
        for (const execution of executions.values()) {
          if (execution.workflowName !== workflow._tag || execution.started) continue
          const mode = execution.resumeRequested ?? "automatic"
          execution.resumeRequested = undefined
          yield* resume(execution.executionId, mode)
        }
        yield* Deferred.succeed(registrationOf(workflow._tag), registration)
      }),

      execute: Effect.fnUntraced(function* (workflow, options) {
        // Like the cluster engines, a run of a workflow that has not registered
        // yet (a child, while the process starts) waits for its registration.
        const registration = yield* Deferred.await(registrationOf(workflow._tag))
        const found =
          executions.get(options.executionId) ??
          (yield* create(registration, {
            executionId: options.executionId,
            payload: options.payload,
            parent: options.detached ? undefined : options.parent?.executionId
          }))
        if (options.discard) return undefined as any
        if (Workflow.isResult(found)) return found as any
        const execution = found as Execution
        // Capture together so a wake that swaps in a replay cannot desync them.
        const run = execution.run
        if (run === undefined) return (execution.last ?? new Workflow.Suspended({})) as any
        const exit = yield* Fiber.await(run.fiber)
        if (Exit.isFailure(exit) && Cause.hasInterruptsOnly(exit.cause) && run.instance.suspended) {
          // A completion preempted the run; the caller retries into the replay.
          return new Workflow.Suspended({}) as any
        }
        return (yield* exit) as any
      }),

      awaitComplete: (_workflow, executionId) =>
        Effect.suspend(() => {
          const execution = executions.get(executionId)
          // Not in memory: it has completed (or never existed), and the caller's next poll says which.
          return execution === undefined ? Effect.void : Deferred.await(execution.done)
        }),

      poll: (workflow, executionId) =>
        Effect.suspend(() => {
          const execution = executions.get(executionId)
          if (execution === undefined) {
            return completedResult(workflow, executionId)
          }
          const exit = execution.run?.fiber.pollUnsafe()
          if (exit === undefined) {
            return Effect.succeed(execution.run === undefined ? Option.fromUndefinedOr(execution.last) : Option.none())
          }
          return exit._tag === "Success" ? Effect.succeedSome(exit.value) : Effect.die(exit.cause)
        }),

      interrupt: Effect.fnUntraced(function* (_workflow, executionId) {
        const execution = executions.get(executionId)
        if (execution === undefined) return
        if (!execution.interrupted) {
          execution.interrupted = true
          yield* markInterrupted(execution, Interrupted.safe)
        }
        yield* resume(executionId, "explicit")
      }),

      interruptUnsafe: Effect.fnUntraced(function* (_workflow, executionId) {
        const execution = executions.get(executionId)
        if (execution === undefined) return
        execution.interrupted = true
        execution.interruptedUnsafe = true
        yield* markInterrupted(execution, Interrupted.unsafe)
        if (execution.run !== undefined) yield* Fiber.interrupt(execution.run.fiber)
        // Replay after hard interruption to record a terminal workflow result.
        yield* resume(executionId, "explicit")
      }),

      resume: (_workflow, executionId) => resume(executionId, "explicit"),

      activityExecute: Effect.fnUntraced(function* (activity, attempt) {
        const instance = yield* WorkflowEngine.WorkflowInstance
        const execution = executions.get(instance.executionId)
        const key = activityKey(activity.name, attempt)
        const recorded = execution?.activities?.get(key)
        if (recorded !== undefined) return recorded
        // A pending interrupt replays only to rebuild compensations, so it must
        // not run new activities. Finalizers run once `interrupted` is set.
        if (execution?.interrupted && !instance.interrupted) return new Workflow.Suspended({})
        const activityInstance = WorkflowEngine.WorkflowInstance.initial(instance.workflow, instance.executionId)
        activityInstance.interrupted = instance.interrupted
        const result = yield* activity.executeEncoded.pipe(
          Workflow.intoResult,
          Effect.provideService(WorkflowEngine.WorkflowInstance, activityInstance)
        )
        // Only a completed attempt is recorded: a suspended one runs again on the next replay.
        if (result._tag === "Complete") yield* record(instance.executionId, activity.name, attempt, result, execution)
        return result
      }),

      deferredResult: Effect.fnUntraced(function* (deferred) {
        const instance = yield* WorkflowEngine.WorkflowInstance
        return Option.fromUndefinedOr(executions.get(instance.executionId)?.deferreds.get(deferred.name))
      }),

      deferredDone: complete,

      scheduleClock: (workflow, options) =>
        Effect.gen(function* () {
          const key = `${options.executionId}/${options.clock.name}`
          if (yield* FiberMap.has(clocks, key)) return
          if (executions.get(options.executionId)?.deferreds.has(options.clock.deferred.name)) return
          const wakeAt = (yield* Clock.currentTimeMillis) + Duration.toMillis(options.clock.duration)
          // A clock scheduled before keeps its wake-up time.
          const rows = yield* durably(
            sql<{
              readonly wake_at: number | string
            }>`INSERT INTO journal_clocks (execution_id, name, workflow, wake_at)
              VALUES (${options.executionId}, ${options.clock.name}, ${workflow._tag}, ${wakeAt})
              ON CONFLICT (execution_id, name) DO UPDATE SET wake_at = journal_clocks.wake_at
              RETURNING wake_at`
          )
          yield* armClock({
            workflowName: workflow._tag,
            executionId: options.executionId,
            name: options.clock.name,
            wakeAt: Number(rows[0]?.wake_at ?? wakeAt)
          })
        })
    })

    const markInterrupted = (execution: Execution, flag: number) =>
      Effect.gen(function* () {
        const now = yield* Clock.currentTimeMillis
        // A run suspended by a failure resumes on start again, to finish interrupting.
        yield* durably(sql`UPDATE journal_executions SET interrupted = ${flag}, state = ${"running"}, updated_at = ${now}
          WHERE execution_id = ${execution.executionId}`)
        execution.last = execution.last?.failed === true ? undefined : execution.last
      })

    /** The one write of a step: the attempt's result. */
    const record = (
      executionId: string,
      name: string,
      attempt: number,
      result: AnyResult,
      execution: Execution | undefined
    ) =>
      Effect.gen(function* () {
        const encoded = yield* encodeActivityResult(result)
        const now = yield* Clock.currentTimeMillis
        yield* durably(sql`INSERT INTO journal_activities (execution_id, name, attempt, result, created_at)
          VALUES (${executionId}, ${name}, ${attempt}, ${encoded}, ${now})
          ON CONFLICT (execution_id, name, attempt) DO NOTHING`)
        execution?.activities?.set(activityKey(name, attempt), result)
      }).pipe(Effect.uninterruptible)

    // -- recovery -------------------------------------------------------------

    const unfinished = yield* sql<ExecutionRow>`SELECT * FROM journal_executions WHERE state <> ${"complete"}`
    for (const row of unfinished) executions.set(row.execution_id, yield* fromRow(row))
    const pendingClocks = yield* sql<{
      readonly execution_id: string
      readonly workflow: string
      readonly name: string
      readonly wake_at: number | string
    }>`SELECT c.execution_id, c.workflow, c.name, c.wake_at FROM journal_clocks c
      JOIN journal_executions e ON e.execution_id = c.execution_id
      WHERE e.state <> ${"complete"} AND NOT EXISTS (
        SELECT 1 FROM journal_deferreds d
        WHERE d.execution_id = c.execution_id AND d.name = ${"DurableClock/"} || c.name
      )`
    for (const clock of pendingClocks) {
      yield* armClock({
        workflowName: clock.workflow,
        executionId: clock.execution_id,
        name: clock.name,
        wakeAt: Number(clock.wake_at)
      })
    }
    if (unfinished.length > 0) {
      yield* Effect.logInfo("journal engine: resuming unfinished executions", {
        executions: unfinished.length,
        clocks: pendingClocks.length
      })
    }

    return engine
  })

/**
 * The engine as a layer over the `SqlClient` in context. Guard single-process
 * use around it (see `AgentEngine.layerJournalSqlite` / `layerJournalPostgres`).
 *
 * @category layers
 */
export const layer: Layer.Layer<WorkflowEngine.WorkflowEngine, SqlError, SqlClient> = Layer.effect(
  WorkflowEngine.WorkflowEngine
)(make)
