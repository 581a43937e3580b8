/**
 * The durable output channel: an ordered log of output events per run, and a
 * live tail on top of it, behind one API.
 *
 * Workflow activities return a value, not a stream, yet users watch agents
 * think in real time. Producers `publish` batches of events; the log numbers
 * them 1, 2, 3, … per run with no gaps. Consumers `subscribe` from any offset:
 * the stream replays the log, then follows it live, and ends after the last
 * event once the run has ended.
 *
 * Why there is no gap or duplicate at the seam: live notifications carry no
 * events, only "run X has more". A subscriber registers for them before its
 * first read and always reads the log from the offset after the last event it
 * emitted, so whatever a notification announces, the log delivers exactly
 * once, in order. For the same reason a slow consumer costs nothing: its
 * wake-up queue holds one signal, it reads at its own pace, and the producer
 * never waits for it.
 *
 * Notifications travel in-process, and across processes through Postgres
 * `LISTEN/NOTIFY` when the log is on Postgres, so a subscriber on runner A
 * follows events produced on runner B.
 *
 * @since 0.1.0
 */
import { PgClient } from "@effect/sql-pg"
import type { Array as Arr } from "effect"
import { Context, Duration, Effect, Layer, Option, Queue, Schema, Stream } from "effect"
import * as Migrator from "effect/sql/Migrator"
import { SqlClient } from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"
import * as SqliteClient from "../engine/SqliteClient.ts"
import { BlobRef, type NewEvent, OutputEvent } from "./OutputEvent.ts"

/**
 * The run's output has ended; nothing more can be published to it.
 *
 * @category errors
 */
export class OutputClosed extends Schema.TaggedError<OutputClosed>()("OutputClosed", { runId: Schema.String }) {
  override get message(): string {
    return `The output of run ${this.runId} has ended`
  }
}

/**
 * No blob is stored under this id (it may have been deleted by retention).
 *
 * @category errors
 */
export class UnknownBlob extends Schema.TaggedError<UnknownBlob>()("UnknownBlob", { id: Schema.String }) {
  override get message(): string {
    return `No output blob ${this.id}`
  }
}

/**
 * @category models
 */
export interface Options {
  /** Payloads whose JSON is longer than this go to the blob table. Default 64 KiB. */
  readonly blobThreshold?: number
  /** How often a waiting subscriber re-reads the log even without a signal. Default 2 s. */
  readonly safetyPollInterval?: Duration.Duration
}

/**
 * @category services
 */
export class AgentOutput extends Context.Service<
  AgentOutput,
  {
    /**
     * Appends events to a run's log and returns those it stored (an event whose
     * `(step, attempt, index)` is already stored is skipped).
     */
    readonly publish: (
      runId: string,
      events: ReadonlyArray<NewEvent>
    ) => Effect.Effect<ReadonlyArray<OutputEvent>, OutputClosed | SqlError>
    /** Marks the run's output as ended: subscribers finish after its last event. */
    readonly end: (runId: string) => Effect.Effect<void, SqlError>
    /** Stored events from offset `from` (default 1), at most `limit` (default 1000). */
    readonly read: (
      runId: string,
      options?: { readonly from?: number; readonly limit?: number }
    ) => Effect.Effect<ReadonlyArray<OutputEvent>, SqlError>
    /** Replays from `from` (default 1), then follows live; ends when the run's output has ended. */
    readonly subscribe: (runId: string, options?: { readonly from?: number }) => Stream.Stream<OutputEvent, SqlError>
    /** The offset of the run's last event and whether its output has ended; `None` for an unknown run. */
    readonly status: (
      runId: string
    ) => Effect.Effect<Option.Option<{ readonly lastSequence: number; readonly ended: boolean }>, SqlError>
    /** The highest attempt number a step of the run has published under; 0 if none. */
    readonly lastAttempt: (runId: string, step: string) => Effect.Effect<number, SqlError>
    /** The names of the steps that published to a run's log, in no order. */
    readonly steps: (runId: string) => Effect.Effect<ReadonlyArray<string>, SqlError>
    /** A payload moved to the blob table. */
    readonly readBlob: (id: string) => Effect.Effect<unknown, UnknownBlob | SqlError>
    /** Deletes the output of these runs (for `Retention.cleanup`'s `onPurge`). */
    readonly purge: (runIds: ReadonlyArray<string>) => Effect.Effect<void, SqlError>
  }
>()("effect-claude-agent/output/AgentOutput") {
  /**
   * The log in the engine's database (SQLite or Postgres).
   *
   * @category layers
   */
  static readonly layer = (
    options: Options = {}
  ): Layer.Layer<AgentOutput, SqlError | Migrator.MigrationError, SqlClient> => Layer.effect(AgentOutput)(make(options))

  /**
   * The log in an in-memory SQLite database, for the memory engine and tests.
   *
   * @category layers
   */
  static readonly layerMemory = (options: Options = {}): Layer.Layer<AgentOutput, SqlError | Migrator.MigrationError> =>
    AgentOutput.layer(options).pipe(Layer.provide(SqliteClient.layer({ filename: ":memory:" })))
}

const channel = "agent_output"

const migrations = (sql: SqlClient) =>
  Migrator.fromRecord({
    "1_output_log": Effect.gen(function* () {
      yield* sql`CREATE TABLE IF NOT EXISTS agent_output_runs (
        run_id TEXT PRIMARY KEY,
        last_sequence BIGINT NOT NULL DEFAULT 0,
        ended_at BIGINT
      )`
      yield* sql`CREATE TABLE IF NOT EXISTS agent_output_events (
        run_id TEXT NOT NULL,
        sequence BIGINT NOT NULL,
        step TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        idx INTEGER NOT NULL,
        kind TEXT NOT NULL,
        payload TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (run_id, sequence),
        UNIQUE (run_id, step, attempt, idx)
      )`
      yield* sql`CREATE TABLE IF NOT EXISTS agent_output_blobs (
        id TEXT PRIMARY KEY,
        run_id TEXT NOT NULL,
        data TEXT NOT NULL
      )`
      yield* sql`CREATE INDEX IF NOT EXISTS agent_output_blobs_run_idx ON agent_output_blobs (run_id)`
    })
  })

interface EventRow {
  readonly run_id: string
  readonly sequence: number | string
  readonly step: string
  readonly attempt: number
  readonly idx: number
  readonly kind: string
  readonly payload: string
  readonly created_at: number | string
}

const decodeRow = (row: EventRow): OutputEvent =>
  new OutputEvent({
    runId: row.run_id,
    sequence: Number(row.sequence),
    step: row.step,
    attempt: Number(row.attempt),
    index: Number(row.idx),
    kind: row.kind as OutputEvent["kind"],
    payload: JSON.parse(row.payload),
    timestamp: Number(row.created_at)
  })

// Rows per INSERT: 8 parameters each stays far below SQLite's 32766-variable limit.
const insertChunk = 1000

/**
 * @category constructors
 */
export const make = Effect.fnUntraced(function* (options: Options = {}) {
  const sql = yield* SqlClient
  yield* Migrator.make({})({ loader: migrations(sql), table: "agent_output_migrations" })

  const blobThreshold = options.blobThreshold ?? 64 * 1024
  const safetyPoll = options.safetyPollInterval ?? Duration.seconds(2)
  const pg = Option.getOrUndefined(yield* Effect.serviceOption(PgClient.PgClient))
  const forUpdate = pg === undefined ? sql.literal("") : sql.literal("FOR UPDATE")

  // Per run, the wake-up queues of its subscribers: each holds at most the
  // latest signal, so signals are never lost and never pile up.
  const waiters = new Map<string, Set<Queue.Queue<void>>>()
  const signal = (runId: string) => {
    for (const waiter of waiters.get(runId) ?? []) Queue.offerUnsafe(waiter, undefined)
  }
  const announce = (runId: string) =>
    Effect.andThen(
      Effect.sync(() => signal(runId)),
      pg === undefined ? Effect.void : Effect.ignore(pg.notify(channel, runId))
    )

  if (pg !== undefined) {
    // Other runners' appends arrive here; ours too, which costs one extra read.
    const notifications = yield* pg.listen(channel)
    yield* Stream.fromQueue(notifications).pipe(
      Stream.runForEach((notification) => Effect.sync(() => signal(notification.payload))),
      Effect.catchCause((cause) =>
        Effect.logWarning("AgentOutput: LISTEN ended; subscribers fall back to polling", cause)
      ),
      Effect.forkScoped
    )
  }

  const storePayload = (runId: string, event: NewEvent) =>
    Effect.gen(function* () {
      const json = JSON.stringify(event.payload ?? null)
      if (json.length <= blobThreshold) return json
      // Deterministic id: a retried publish stores the blob once.
      const id = `${runId}/${event.step}/${event.attempt}/${event.index}`
      yield* sql`INSERT INTO agent_output_blobs (id, run_id, data) VALUES (${id}, ${runId}, ${json})
        ON CONFLICT (id) DO NOTHING`
      return JSON.stringify({ blob: id, bytes: json.length } satisfies BlobRef)
    })

  const publish = (runId: string, events: ReadonlyArray<NewEvent>) =>
    Effect.gen(function* () {
      if (events.length === 0) return []
      const stored = yield* sql.withTransaction(
        Effect.gen(function* () {
          yield* sql`INSERT INTO agent_output_runs (run_id, last_sequence) VALUES (${runId}, 0)
          ON CONFLICT (run_id) DO NOTHING`
          // The row lock (Postgres) or the single writer (SQLite) serialises the numbering.
          const [run] = yield* sql<{ readonly last_sequence: number | string; readonly ended_at: unknown }>`
          SELECT last_sequence, ended_at FROM agent_output_runs WHERE run_id = ${runId} ${forUpdate}`
          if (run!.ended_at !== null) return yield* new OutputClosed({ runId })

          // Skip what is stored already, before numbering: a retry leaves no gap.
          // Only the batch's own index range is looked up, so the check costs the
          // same for the thousandth batch of a step as for the first.
          const existing = new Set<string>()
          const indexes = events.map((e) => e.index)
          const rows = yield* sql<{ readonly step: string; readonly attempt: number; readonly idx: number }>`
          SELECT step, attempt, idx FROM agent_output_events
          WHERE run_id = ${runId}
            AND step IN ${sql.in([...new Set(events.map((e) => e.step))])}
            AND attempt IN ${sql.in([...new Set(events.map((e) => e.attempt))])}
            AND idx >= ${Math.min(...indexes)} AND idx <= ${Math.max(...indexes)}`
          for (const row of rows) existing.add(`${row.step}\u0000${Number(row.attempt)}\u0000${Number(row.idx)}`)
          const fresh: Array<NewEvent> = []
          for (const event of events) {
            const key = `${event.step}\u0000${event.attempt}\u0000${event.index}`
            if (!existing.has(key)) {
              existing.add(key)
              fresh.push(event)
            }
          }
          if (fresh.length === 0) return []

          let sequence = Number(run!.last_sequence)
          const now = Date.now()
          const out: Array<OutputEvent> = []
          const values: Array<Record<string, unknown>> = []
          for (const event of fresh) {
            sequence++
            const payload = yield* storePayload(runId, event)
            values.push({
              run_id: runId,
              sequence,
              step: event.step,
              attempt: event.attempt,
              idx: event.index,
              kind: event.kind,
              payload,
              created_at: now
            })
            out.push(
              new OutputEvent({
                runId,
                sequence,
                step: event.step,
                attempt: event.attempt,
                index: event.index,
                kind: event.kind,
                payload: JSON.parse(payload),
                timestamp: now
              })
            )
          }
          for (let i = 0; i < values.length; i += insertChunk) {
            const chunk = values.slice(i, i + insertChunk) as unknown as Arr.NonEmptyReadonlyArray<
              Record<string, unknown>
            >
            yield* sql`INSERT INTO agent_output_events ${sql.insert(chunk)}`
          }
          yield* sql`UPDATE agent_output_runs SET last_sequence = ${sequence} WHERE run_id = ${runId}`
          return out
        })
      )
      if (stored.length > 0) yield* announce(runId)
      return stored
    })

  const end = (runId: string) =>
    Effect.gen(function* () {
      yield* sql`INSERT INTO agent_output_runs (run_id, last_sequence, ended_at) VALUES (${runId}, 0, ${Date.now()})
        ON CONFLICT (run_id) DO UPDATE SET ended_at = COALESCE(agent_output_runs.ended_at, excluded.ended_at)`
      yield* announce(runId)
    })

  const read = (runId: string, readOptions: { readonly from?: number; readonly limit?: number } = {}) =>
    Effect.map(
      sql<EventRow>`SELECT run_id, sequence, step, attempt, idx, kind, payload, created_at
        FROM agent_output_events
        WHERE run_id = ${runId} AND sequence >= ${readOptions.from ?? 1}
        ORDER BY sequence LIMIT ${readOptions.limit ?? 1000}`,
      (rows) => rows.map(decodeRow)
    )

  const status = (runId: string) =>
    Effect.map(
      sql<{ readonly last_sequence: number | string; readonly ended_at: unknown }>`
        SELECT last_sequence, ended_at FROM agent_output_runs WHERE run_id = ${runId}`,
      (rows) =>
        rows.length === 0
          ? Option.none()
          : Option.some({ lastSequence: Number(rows[0]!.last_sequence), ended: rows[0]!.ended_at !== null })
    )

  const subscribe = (runId: string, subscribeOptions: { readonly from?: number } = {}) =>
    Stream.unwrap(
      Effect.gen(function* () {
        const wake = yield* Queue.sliding<void>(1)
        // Registered before the first read: a signal sent after that read is never missed.
        yield* Effect.acquireRelease(
          Effect.sync(() => {
            const set = waiters.get(runId) ?? new Set()
            set.add(wake)
            waiters.set(runId, set)
          }),
          () =>
            Effect.sync(() => {
              const set = waiters.get(runId)
              set?.delete(wake)
              if (set?.size === 0) waiters.delete(runId)
            })
        )
        return Stream.paginate(Math.max(1, subscribeOptions.from ?? 1), (next) =>
          Effect.gen(function* () {
            const events = yield* read(runId, { from: next, limit: 500 })
            if (events.length > 0) return [events, Option.some(next + events.length)] as const
            const current = yield* status(runId)
            if (Option.isSome(current) && current.value.ended && next > current.value.lastSequence) {
              return [[], Option.none()] as const
            }
            yield* Queue.take(wake).pipe(Effect.timeoutOption(safetyPoll))
            return [[], Option.some(next)] as const
          })
        )
      })
    )

  const lastAttempt = (runId: string, step: string) =>
    Effect.map(
      sql<{ readonly attempt: number | string | null }>`SELECT MAX(attempt) AS attempt FROM agent_output_events
        WHERE run_id = ${runId} AND step = ${step}`,
      (rows) => Number(rows[0]?.attempt ?? 0)
    )

  const steps = (runId: string) =>
    Effect.map(
      sql<{ readonly step: string }>`SELECT DISTINCT step FROM agent_output_events WHERE run_id = ${runId}`,
      (rows) => rows.map((row) => row.step)
    )

  const readBlob = (id: string) =>
    Effect.flatMap(sql<{ readonly data: string }>`SELECT data FROM agent_output_blobs WHERE id = ${id}`, (rows) =>
      rows.length === 0 ? Effect.fail(new UnknownBlob({ id })) : Effect.succeed(JSON.parse(rows[0]!.data))
    )

  const purge = (runIds: ReadonlyArray<string>) =>
    runIds.length === 0
      ? Effect.void
      : sql.withTransaction(
          Effect.gen(function* () {
            yield* sql`DELETE FROM agent_output_events WHERE run_id IN ${sql.in(runIds)}`
            yield* sql`DELETE FROM agent_output_blobs WHERE run_id IN ${sql.in(runIds)}`
            yield* sql`DELETE FROM agent_output_runs WHERE run_id IN ${sql.in(runIds)}`
          })
        )

  return AgentOutput.of({ publish, end, read, subscribe, status, lastAttempt, steps, readBlob, purge })
})
