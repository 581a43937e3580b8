/**
 * What runs are waiting for from people, and the decisions people made.
 *
 * A run that waits for an approval or an answer registers the request here
 * and parks on a `DurableDeferred`. A decision arrives with a signed token
 * (see `ApprovalToken`); it is recorded here first, with a conditional update
 * that only a pending request passes, and only then delivered to the
 * deferred. So a second decision, a decision after the timeout took the
 * default, or one for a run that has ended, is refused with a clear error and
 * changes nothing: the table, not a race between deliveries, decides.
 *
 * A crash between recording and delivering, or a delivery that fails, leaves
 * a decision recorded but undelivered; every process running the layer
 * delivers those in the background, at start and every few seconds after.
 *
 * @since 0.1.0
 */
import { Context, Duration, Effect, Exit, Layer, Option, Schedule, Schema } from "effect"
import * as Migrator from "effect/sql/Migrator"
import { SqlClient } from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"
import * as DurableDeferred from "effect/workflow/DurableDeferred"
import { WorkflowEngine } from "effect/workflow/WorkflowEngine"
import * as SqliteClient from "../engine/SqliteClient.ts"
import { AgentOutput } from "../output/AgentOutput.ts"
import * as ApprovalToken from "./ApprovalToken.ts"

/**
 * A reviewer's answer to an approval request.
 *
 * @category schemas
 */
export class Decision extends Schema.Class<Decision>("effect-claude-agent/Decision")({
  approved: Schema.Boolean,
  comment: Schema.optional(Schema.String),
  /** Who decided: a person, or the timeout's default. */
  by: Schema.optional(Schema.Literals(["reviewer", "timeout"]))
}) {}

/**
 * The state of a request.
 *
 * @category schemas
 */
export const State = Schema.Literals(["pending", "decided", "timed_out", "closed"])

/** @category models */
export type State = typeof State.Type

/**
 * One request a run made of a person.
 *
 * @category schemas
 */
export class Wait extends Schema.Class<Wait>("effect-claude-agent/Wait")({
  runId: Schema.String,
  workflow: Schema.String,
  step: Schema.String,
  purpose: ApprovalToken.Purpose,
  /** What the person needs to decide (the plan to approve, the question). */
  request: Schema.Unknown,
  state: State,
  /** The decision or answer, once there is one. */
  response: Schema.optional(Schema.Unknown),
  createdAt: Schema.Number,
  /** When the request times out and takes its default, if it does. */
  expiresAt: Schema.optional(Schema.Number),
  decidedAt: Schema.optional(Schema.Number)
}) {}

/**
 * A valid token whose request cannot take a decision (any more).
 *
 * @category errors
 */
export class DecisionRejected extends Schema.TaggedError<DecisionRejected>()("DecisionRejected", {
  runId: Schema.String,
  step: Schema.String,
  reason: Schema.Literals(["unknown_request", "already_decided", "timed_out", "run_finished"])
}) {
  override get message(): string {
    switch (this.reason) {
      case "unknown_request":
        return `Run ${this.runId} has no request named "${this.step}"`
      case "already_decided":
        return `The request "${this.step}" of run ${this.runId} has already been decided`
      case "timed_out":
        return `The request "${this.step}" of run ${this.runId} timed out and took its default`
      case "run_finished":
        return `Run ${this.runId} has finished; its request "${this.step}" can no longer be decided`
    }
  }
}

/** The deferred a step's decision is delivered to. */
export const deferredFor = (purpose: ApprovalToken.Purpose, step: string) =>
  purpose === "approval"
    ? DurableDeferred.make(`approval/${step}`, { success: Decision })
    : DurableDeferred.make(`input/${step}`, { success: Schema.String })

const encodeResponse = (purpose: ApprovalToken.Purpose, response: unknown): string =>
  JSON.stringify(purpose === "approval" ? Schema.encodeSync(Decision)(response as Decision) : response)

const decodeResponse = (purpose: ApprovalToken.Purpose, json: string): Decision | string =>
  purpose === "approval" ? Schema.decodeUnknownSync(Decision)(JSON.parse(json)) : (JSON.parse(json) as string)

/**
 * @category services
 */
export class Approvals extends Context.Service<
  Approvals,
  {
    /** Registers a request (again, on replay: a no-op) and announces it in the run's output. */
    readonly request: (wait: {
      readonly runId: string
      readonly workflow: string
      readonly step: string
      readonly purpose: ApprovalToken.Purpose
      readonly request: unknown
      readonly expiresAt?: number | undefined
    }) => Effect.Effect<void, SqlError>
    /** Records a decision for a token's request, then delivers it to the waiting run. */
    readonly decide: (
      token: string,
      response: Decision | string
    ) => Effect.Effect<ApprovalToken.Claims, ApprovalToken.InvalidToken | DecisionRejected | SqlError>
    /**
     * The timeout fired: the request takes `fallback` unless a decision was
     * recorded first, in which case that decision is the answer.
     */
    readonly expire: (
      runId: string,
      step: string,
      fallback: Decision | string
    ) => Effect.Effect<Decision | string, SqlError>
    /** The run ended: its pending requests can no longer be decided. */
    readonly close: (runId: string) => Effect.Effect<void, SqlError>
    /** Requests, newest first, filtered by run and state. */
    readonly list: (filter?: {
      readonly runId?: string
      readonly state?: State
    }) => Effect.Effect<ReadonlyArray<Wait>, SqlError>
    /** The signed token for a request, to hand to the person who decides it. */
    readonly tokenFor: (wait: Wait) => Effect.Effect<string>
  }
>()("effect-claude-agent/workflow/Approvals") {
  /**
   * Requests in the engine's database (SQLite or Postgres).
   *
   * @category layers
   */
  static readonly layer: Layer.Layer<
    Approvals,
    SqlError | Migrator.MigrationError,
    SqlClient | WorkflowEngine | AgentOutput | ApprovalToken.ApprovalSecret
  > = Layer.effect(Approvals)(Effect.suspend(() => make))

  /**
   * Requests in an in-memory SQLite database, for the memory engine and tests.
   *
   * @category layers
   */
  static readonly layerMemory: Layer.Layer<
    Approvals,
    SqlError | Migrator.MigrationError,
    WorkflowEngine | AgentOutput | ApprovalToken.ApprovalSecret
  > = Layer.suspend(() => Approvals.layer.pipe(Layer.provide(SqliteClient.layer({ filename: ":memory:" }))))
}

const migrations = (sql: SqlClient) =>
  Migrator.fromRecord({
    "1_waits": Effect.gen(function* () {
      yield* sql`CREATE TABLE IF NOT EXISTS agent_waits (
        run_id TEXT NOT NULL,
        step TEXT NOT NULL,
        workflow TEXT NOT NULL,
        purpose TEXT NOT NULL,
        request TEXT NOT NULL,
        state TEXT NOT NULL,
        response TEXT,
        created_at BIGINT NOT NULL,
        expires_at BIGINT,
        decided_at BIGINT,
        delivered_at BIGINT,
        PRIMARY KEY (run_id, step)
      )`
      yield* sql`CREATE INDEX IF NOT EXISTS agent_waits_state_idx ON agent_waits (state, created_at)`
    }),
    // What the redelivery sweep reads every few seconds: a handful of rows, never the decided history.
    "2_undelivered": sql`CREATE INDEX IF NOT EXISTS agent_waits_undelivered_idx ON agent_waits (run_id)
      WHERE state = 'decided' AND delivered_at IS NULL`
  })

interface WaitRow {
  readonly run_id: string
  readonly step: string
  readonly workflow: string
  readonly purpose: ApprovalToken.Purpose
  readonly request: string
  readonly state: State
  readonly response: string | null
  readonly created_at: number | string
  readonly expires_at: number | string | null
  readonly decided_at: number | string | null
}

const toWait = (row: WaitRow): Wait =>
  new Wait({
    runId: row.run_id,
    workflow: row.workflow,
    step: row.step,
    purpose: row.purpose,
    request: JSON.parse(row.request),
    state: row.state,
    ...(row.response === null ? {} : { response: decodeResponse(row.purpose, row.response) }),
    createdAt: Number(row.created_at),
    ...(row.expires_at === null ? {} : { expiresAt: Number(row.expires_at) }),
    ...(row.decided_at === null ? {} : { decidedAt: Number(row.decided_at) })
  })

// How often every process looks for decisions recorded but not delivered.
const redeliverEvery = Duration.seconds(5)

const deliveryDeferred = (runId: string, step: string, cause: unknown) =>
  Effect.logWarning("decision recorded; its delivery failed and will be retried", { runId, step }, cause)

/**
 * @category constructors
 */
export const make = Effect.gen(function* () {
  const sql = yield* SqlClient
  const engine = yield* WorkflowEngine
  const output = yield* AgentOutput
  const secret = yield* ApprovalToken.ApprovalSecret
  yield* Migrator.make({})({ loader: migrations(sql), table: "agent_waits_migrations" })

  const find = (runId: string, step: string) =>
    Effect.map(sql<WaitRow>`SELECT * FROM agent_waits WHERE run_id = ${runId} AND step = ${step}`, (rows) =>
      Option.map(Option.fromNullishOr(rows[0]), toWait)
    )

  // Announced in the run's output under the request's own step name; index 0
  // is the request, 1 the decision, so a replayed announcement is a no-op.
  const announce = (
    runId: string,
    step: string,
    index: number,
    kind: "approval_requested" | "input_requested" | "decided",
    payload: unknown
  ) =>
    output.publish(runId, [{ step, attempt: 1, index, kind, payload }]).pipe(
      Effect.asVoid,
      Effect.catchTag("OutputClosed", () => Effect.void)
    )

  const deliver = (row: {
    readonly runId: string
    readonly workflow: string
    readonly step: string
    readonly purpose: ApprovalToken.Purpose
    readonly response: Decision | string
  }) =>
    Effect.gen(function* () {
      const deferred = deferredFor(row.purpose, row.step)
      yield* engine.deferredDone(deferred as unknown as DurableDeferred.DurableDeferred<typeof Schema.Unknown>, {
        workflowName: row.workflow,
        executionId: row.runId,
        deferredName: deferred.name,
        exit: Exit.succeed(row.response)
      })
      yield* sql`UPDATE agent_waits SET delivered_at = ${Date.now()} WHERE run_id = ${row.runId} AND step = ${row.step}`
    })

  // The request's announcement (index 0), from the request or its stored row: the same event either way.
  const announceRequest = (wait: {
    readonly runId: string
    readonly step: string
    readonly purpose: ApprovalToken.Purpose
    readonly request: unknown
    readonly expiresAt?: number | undefined
  }) =>
    announce(wait.runId, wait.step, 0, wait.purpose === "approval" ? "approval_requested" : "input_requested", {
      purpose: wait.purpose,
      request: wait.request ?? null,
      ...(wait.expiresAt === undefined ? {} : { expiresAt: wait.expiresAt })
    })

  const request: Approvals["Service"]["request"] = (wait) =>
    Effect.gen(function* () {
      yield* sql`INSERT INTO agent_waits (run_id, step, workflow, purpose, request, state, created_at, expires_at)
        VALUES (${wait.runId}, ${wait.step}, ${wait.workflow}, ${wait.purpose}, ${JSON.stringify(wait.request ?? null)},
          'pending', ${Date.now()}, ${wait.expiresAt ?? null})
        ON CONFLICT DO NOTHING`
      yield* announceRequest(wait)
    })

  const decide: Approvals["Service"]["decide"] = (token, response) =>
    Effect.gen(function* () {
      const claims = yield* ApprovalToken.verify(token, typeof response === "string" ? "input" : "approval").pipe(
        Effect.provideService(ApprovalToken.ApprovalSecret, secret)
      )
      const value: Decision | string =
        typeof response === "string" ? response : new Decision({ ...response, by: "reviewer" })
      const now = Date.now()
      const updated = yield* sql`UPDATE agent_waits
        SET state = 'decided', response = ${encodeResponse(claims.purpose, value)}, decided_at = ${now}
        WHERE run_id = ${claims.executionId} AND step = ${claims.step} AND purpose = ${claims.purpose}
          AND state = 'pending' AND (expires_at IS NULL OR expires_at > ${now})
        RETURNING request, expires_at`
      if (updated.length === 0) {
        const existing = yield* find(claims.executionId, claims.step)
        // Past its deadline a request is timed out, even while its timer has not fired yet (say its runner
        // was down at the deadline): the run then takes its default, and the late token is refused.
        const reason =
          Option.isNone(existing) || existing.value.purpose !== claims.purpose
            ? "unknown_request"
            : existing.value.state === "timed_out" ||
                (existing.value.state === "pending" &&
                  existing.value.expiresAt !== undefined &&
                  existing.value.expiresAt <= now)
              ? "timed_out"
              : existing.value.state === "closed"
                ? "run_finished"
                : "already_decided"
        return yield* new DecisionRejected({ runId: claims.executionId, step: claims.step, reason })
      }
      // A decision that comes quickly, from another process, can be recorded before the run has
      // announced the request: announce it here first, so the log never shows the answer before the question.
      const row = updated[0] as { readonly request: string; readonly expires_at: number | string | null }
      yield* announceRequest({
        runId: claims.executionId,
        step: claims.step,
        purpose: claims.purpose,
        request: JSON.parse(row.request),
        expiresAt: row.expires_at === null ? undefined : Number(row.expires_at)
      })
      yield* announce(claims.executionId, claims.step, 1, "decided", { purpose: claims.purpose, response: value })
      // The decision is recorded: it stands whether this delivery works or the sweep makes it later.
      yield* deliver({ ...claims, runId: claims.executionId, response: value }).pipe(
        Effect.andThen(
          Effect.logInfo("decision recorded and delivered", { runId: claims.executionId, step: claims.step })
        ),
        Effect.catchCause((cause) => deliveryDeferred(claims.executionId, claims.step, cause))
      )
      return claims
    })

  const expire: Approvals["Service"]["expire"] = (runId, step, fallback) =>
    Effect.gen(function* () {
      const updated = yield* sql`UPDATE agent_waits
        SET state = 'timed_out', response = ${encodeResponse(typeof fallback === "string" ? "input" : "approval", fallback)},
          decided_at = ${Date.now()}, delivered_at = ${Date.now()}
        WHERE run_id = ${runId} AND step = ${step} AND state = 'pending'
        RETURNING run_id`
      if (updated.length > 0) {
        yield* announce(runId, step, 1, "decided", { response: fallback, timedOut: true })
        return fallback
      }
      const existing = yield* find(runId, step)
      // A decision recorded before the timeout fired is the answer.
      return Option.match(
        Option.flatMap(existing, (w) => Option.fromUndefinedOr(w.response)),
        {
          onNone: () => fallback,
          onSome: (response) => response as Decision | string
        }
      )
    })

  const close: Approvals["Service"]["close"] = (runId) =>
    Effect.asVoid(sql`UPDATE agent_waits SET state = 'closed' WHERE run_id = ${runId} AND state = 'pending'`)

  const list: Approvals["Service"]["list"] = (filter = {}) =>
    Effect.map(
      sql<WaitRow>`SELECT * FROM agent_waits WHERE ${sql.and([
        ...(filter.runId === undefined ? [] : [sql`run_id = ${filter.runId}`]),
        ...(filter.state === undefined ? [] : [sql`state = ${filter.state}`])
      ])} ORDER BY created_at DESC`,
      (rows) => rows.map(toWait)
    )

  const tokenFor: Approvals["Service"]["tokenFor"] = (wait) =>
    ApprovalToken.sign(
      new ApprovalToken.Claims({
        workflow: wait.workflow,
        executionId: wait.runId,
        step: wait.step,
        purpose: wait.purpose
      })
    ).pipe(Effect.provideService(ApprovalToken.ApprovalSecret, secret))

  // Decisions recorded but not delivered: their process died in between, or the delivery failed (the
  // database away, or at start-up the run's workflow not registered yet, which the cluster engine waits
  // for). Delivering is idempotent, the deferred's first completion wins, so processes may race here.
  // In the background: a delivery waits for the workflows this very process registers after this layer.
  const sweep = Effect.gen(function* () {
    const undelivered = yield* sql<WaitRow>`SELECT * FROM agent_waits
      WHERE state = 'decided' AND delivered_at IS NULL`
    yield* Effect.forEach(
      undelivered.map(toWait),
      (wait) =>
        // The process that recorded it may have died before announcing it, too (a no-op if it had).
        announceRequest(wait).pipe(
          Effect.andThen(
            announce(wait.runId, wait.step, 1, "decided", { purpose: wait.purpose, response: wait.response })
          ),
          Effect.andThen(deliver({ ...wait, response: wait.response as Decision | string })),
          Effect.andThen(Effect.logInfo("undelivered decision delivered", { runId: wait.runId, step: wait.step })),
          Effect.catchCause((cause) => deliveryDeferred(wait.runId, wait.step, cause))
        ),
      { concurrency: 4, discard: true }
    )
  })
  yield* sweep.pipe(
    Effect.catchCause((cause) => Effect.logWarning("Approvals: the redelivery sweep failed; trying again", cause)),
    Effect.repeat(Schedule.spaced(redeliverEvery)),
    Effect.forkScoped
  )

  return Approvals.of({ request, decide, expire, close, list, tokenFor })
})
