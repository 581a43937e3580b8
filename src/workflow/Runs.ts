/**
 * The run registry: which runs exist, of which workflow, with what input, and
 * how they ended.
 *
 * Effect's engine can run, poll and interrupt a run whose workflow and id you
 * already know, but it cannot list runs, and it cannot tell a run that works
 * from one that waits for a person. This table can: a run is registered when
 * it starts (by whoever starts it, and again, harmlessly, each time its body
 * starts) and records its outcome when it ends. `waiting` is derived, never
 * stored: a running run with a pending request in `Approvals` waits.
 *
 * Nothing here holds an approval token; tokens are derived on demand from the
 * requests (`Approvals.tokenFor`).
 *
 * @since 0.1.0
 */
import { Context, Effect, Layer, Metric, Option, Schema } from "effect"
import * as Migrator from "effect/sql/Migrator"
import { SqlClient } from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"
import * as AgentMetrics from "./AgentMetrics.ts"
import { Approvals, Wait } from "./Approvals.ts"

/**
 * What a run is doing: working, waiting for a person, or ended one way or another.
 *
 * @category schemas
 */
export const Status = Schema.Literals(["running", "waiting", "completed", "failed", "interrupted"])

/** @category models */
export type Status = typeof Status.Type

/**
 * How a run ended.
 *
 * @category schemas
 */
export const Outcome = Schema.Literals(["completed", "failed", "interrupted"])

/** @category models */
export type Outcome = typeof Outcome.Type

/**
 * A run as the registry knows it.
 *
 * @category schemas
 */
/**
 * Tokens and cost of a run's completed agent steps.
 *
 * @category schemas
 */
export const Usage = Schema.Struct({
  inputTokens: Schema.Number,
  outputTokens: Schema.Number,
  costUsd: Schema.Number
})

/** @category models */
export type Usage = typeof Usage.Type

export class Run extends Schema.Class<Run>("effect-claude-agent/Run")({
  runId: Schema.String,
  workflow: Schema.String,
  status: Status,
  /** The payload, JSON-encoded with the workflow's payload schema. */
  input: Schema.Unknown,
  /** The encoded result, once completed. */
  result: Schema.optional(Schema.Unknown),
  /** The encoded error (or a description of the defect), once failed. */
  error: Schema.optional(Schema.Unknown),
  idempotencyKey: Schema.optional(Schema.String),
  createdAt: Schema.Number,
  updatedAt: Schema.Number,
  /** The requests the run waits for, newest first. */
  pending: Schema.Array(Wait),
  /** What its completed agent steps used, summed. */
  usage: Usage
}) {}

/**
 * A list cursor that this registry did not hand out.
 *
 * @category errors
 */
export class InvalidCursor extends Schema.TaggedError<InvalidCursor>()("InvalidCursor", { cursor: Schema.String }) {
  override get message(): string {
    return `The cursor "${this.cursor}" is not one this server handed out`
  }
}

/**
 * @category models
 */
export interface ListFilter {
  readonly status?: Status | undefined
  readonly workflow?: string | undefined
  /** At most this many runs (1 to 100). Default 20. */
  readonly limit?: number | undefined
  /** The `nextCursor` of the previous page. */
  readonly cursor?: string | undefined
}

/**
 * @category services
 */
export class Runs extends Context.Service<
  Runs,
  {
    /**
     * Registers a run unless it is registered already, and returns the stored
     * run (for an existing one, with its original input and key).
     */
    readonly register: (run: {
      readonly runId: string
      readonly workflow: string
      readonly input: unknown
      readonly idempotencyKey?: string | undefined
    }) => Effect.Effect<Run, SqlError>
    /** Records what a completed agent step used; a replay of the step records nothing more. */
    readonly recordUsage: (runId: string, step: string, usage: Usage) => Effect.Effect<void, SqlError>
    /** Records how a run ended. The first outcome recorded stays. */
    readonly finish: (
      runId: string,
      outcome: { readonly status: Outcome; readonly result?: unknown; readonly error?: unknown }
    ) => Effect.Effect<void, SqlError>
    readonly get: (runId: string) => Effect.Effect<Option.Option<Run>, SqlError>
    /** Runs, newest first, a page at a time. */
    readonly list: (
      filter?: ListFilter
    ) => Effect.Effect<
      { readonly runs: ReadonlyArray<Run>; readonly nextCursor: string | undefined },
      SqlError | InvalidCursor
    >
  }
>()("effect-claude-agent/workflow/Runs") {
  /**
   * The registry in the engine's database, beside the requests it reads.
   *
   * @category layers
   */
  static readonly layer: Layer.Layer<Runs, SqlError | Migrator.MigrationError, SqlClient | Approvals> = Layer.effect(
    Runs
  )(Effect.suspend(() => make))
}

const migrations = (sql: SqlClient) =>
  Migrator.fromRecord({
    "1_runs": Effect.gen(function* () {
      yield* sql`CREATE TABLE IF NOT EXISTS agent_runs (
        run_id TEXT PRIMARY KEY,
        workflow TEXT NOT NULL,
        status TEXT NOT NULL,
        input TEXT NOT NULL,
        result TEXT,
        error TEXT,
        idempotency_key TEXT,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
      )`
      yield* sql`CREATE INDEX IF NOT EXISTS agent_runs_created_idx ON agent_runs (created_at, run_id)`
    }),
    // Per step, so that recording it again on a replay is a no-op.
    "2_usage": sql`CREATE TABLE IF NOT EXISTS agent_run_usage (
        run_id TEXT NOT NULL,
        step TEXT NOT NULL,
        input_tokens BIGINT NOT NULL,
        output_tokens BIGINT NOT NULL,
        cost_usd DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (run_id, step)
      )`
  })

interface RunRow {
  readonly run_id: string
  readonly workflow: string
  readonly status: "running" | Outcome
  readonly input: string
  readonly result: string | null
  readonly error: string | null
  readonly idempotency_key: string | null
  readonly created_at: number | string
  readonly updated_at: number | string
}

const encodeCursor = (row: RunRow) =>
  Buffer.from(JSON.stringify([Number(row.created_at), row.run_id])).toString("base64url")

const decodeCursor = (cursor: string): Option.Option<readonly [number, string]> =>
  Option.liftThrowable(() => JSON.parse(Buffer.from(cursor, "base64url").toString("utf8")) as unknown)().pipe(
    Option.filter(
      (value): value is [number, string] =>
        Array.isArray(value) &&
        value.length === 2 &&
        Number.isSafeInteger(value[0]) &&
        typeof value[1] === "string" &&
        // No run id has one, and Postgres cannot compare text with it: a forged cursor, refused.
        !value[1].includes("\u0000")
    )
  )

/**
 * @category constructors
 */
export const make = Effect.gen(function* () {
  const sql = yield* SqlClient
  const approvals = yield* Approvals
  yield* Migrator.make({})({ loader: migrations(sql), table: "agent_runs_migrations" })

  const usageOf = (runId: string) =>
    Effect.map(
      sql<{
        readonly input_tokens: number | string | null
        readonly output_tokens: number | string | null
        readonly cost_usd: number | string | null
      }>`SELECT SUM(input_tokens) AS input_tokens, SUM(output_tokens) AS output_tokens, SUM(cost_usd) AS cost_usd
        FROM agent_run_usage WHERE run_id = ${runId}`,
      ([row]): Usage => ({
        inputTokens: Number(row?.input_tokens ?? 0),
        outputTokens: Number(row?.output_tokens ?? 0),
        costUsd: Number(row?.cost_usd ?? 0)
      })
    )

  const recordUsage: Runs["Service"]["recordUsage"] = (runId, step, usage) =>
    Effect.asVoid(sql`INSERT INTO agent_run_usage (run_id, step, input_tokens, output_tokens, cost_usd)
      VALUES (${runId}, ${step}, ${usage.inputTokens}, ${usage.outputTokens}, ${usage.costUsd})
      ON CONFLICT DO NOTHING`)

  const toRun = (row: RunRow) =>
    Effect.map(
      Effect.all([
        row.status === "running" ? approvals.list({ runId: row.run_id, state: "pending" }) : Effect.succeed([]),
        usageOf(row.run_id)
      ]),
      ([pending, usage]) =>
        new Run({
          runId: row.run_id,
          workflow: row.workflow,
          status: row.status === "running" && pending.length > 0 ? "waiting" : row.status,
          input: JSON.parse(row.input),
          ...(row.result === null ? {} : { result: JSON.parse(row.result) }),
          ...(row.error === null ? {} : { error: JSON.parse(row.error) }),
          ...(row.idempotency_key === null ? {} : { idempotencyKey: row.idempotency_key }),
          createdAt: Number(row.created_at),
          updatedAt: Number(row.updated_at),
          pending,
          usage
        })
    )

  const get: Runs["Service"]["get"] = (runId) =>
    Effect.flatMap(sql<RunRow>`SELECT * FROM agent_runs WHERE run_id = ${runId}`, (rows) =>
      rows.length === 0 ? Effect.succeedNone : Effect.map(toRun(rows[0]!), Option.some)
    )

  const register: Runs["Service"]["register"] = (run) =>
    Effect.gen(function* () {
      const now = Date.now()
      const inserted = yield* sql`INSERT INTO agent_runs
          (run_id, workflow, status, input, idempotency_key, created_at, updated_at)
        VALUES (${run.runId}, ${run.workflow}, 'running', ${JSON.stringify(run.input ?? null)},
          ${run.idempotencyKey ?? null}, ${now}, ${now})
        ON CONFLICT (run_id) DO NOTHING
        RETURNING run_id`
      if (inserted.length > 0) {
        yield* Metric.update(Metric.withAttributes(AgentMetrics.runsStarted, { workflow: run.workflow }), 1)
      }
      return Option.getOrThrow(yield* get(run.runId))
    })

  const finish: Runs["Service"]["finish"] = (runId, outcome) =>
    Effect.gen(function* () {
      const updated = yield* sql<{ readonly workflow: string }>`UPDATE agent_runs SET status = ${outcome.status},
          result = ${outcome.result === undefined ? null : JSON.stringify(outcome.result)},
          error = ${outcome.error === undefined ? null : JSON.stringify(outcome.error)},
          updated_at = ${Date.now()}
        WHERE run_id = ${runId} AND status = 'running'
        RETURNING workflow`
      if (updated.length > 0) {
        yield* Metric.update(
          Metric.withAttributes(AgentMetrics.runsEnded, { workflow: updated[0]!.workflow, status: outcome.status }),
          1
        )
      }
    })

  // "waiting" and "running" split the stored "running" by the requests table.
  const pendingExists = sql`EXISTS (SELECT 1 FROM agent_waits w WHERE w.run_id = agent_runs.run_id AND w.state = 'pending')`

  const list: Runs["Service"]["list"] = (filter = {}) =>
    Effect.gen(function* () {
      const limit = Math.min(100, Math.max(1, filter.limit ?? 20))
      const after = filter.cursor === undefined ? Option.none() : decodeCursor(filter.cursor)
      if (filter.cursor !== undefined && Option.isNone(after)) {
        return yield* new InvalidCursor({ cursor: filter.cursor })
      }
      const conditions = [
        ...(filter.workflow === undefined ? [] : [sql`workflow = ${filter.workflow}`]),
        ...(filter.status === undefined
          ? []
          : filter.status === "waiting"
            ? [sql`status = 'running'`, pendingExists]
            : filter.status === "running"
              ? [sql`status = 'running'`, sql`NOT ${pendingExists}`]
              : [sql`status = ${filter.status}`]),
        ...Option.match(after, {
          onNone: () => [],
          onSome: ([createdAt, runId]) => [
            sql`(created_at < ${createdAt} OR (created_at = ${createdAt} AND run_id < ${runId}))`
          ]
        })
      ]
      const rows = yield* sql<RunRow>`SELECT * FROM agent_runs WHERE ${sql.and(conditions)}
        ORDER BY created_at DESC, run_id DESC LIMIT ${limit + 1}`
      const page = rows.slice(0, limit)
      const runs = yield* Effect.forEach(page, toRun)
      return { runs, nextCursor: rows.length > limit ? encodeCursor(page[page.length - 1]!) : undefined }
    })

  return Runs.of({ register, recordUsage, finish, get, list })
})
