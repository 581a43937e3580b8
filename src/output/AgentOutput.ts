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
 * Why there is no gap or duplicate at the seam: a subscriber registers for
 * news of its run before its first read, and only ever emits the events that
 * follow the last one it emitted, from the log or from a publish it was handed.
 * News across processes carries no events, only "run X has more": the
 * subscriber reads the log from the offset after its last event, so whatever
 * a notification announces, the log delivers exactly once, in order. In the
 * publishing process a publish hands its committed events to the subscribers
 * it finds waiting, and a subscriber takes them only if they continue exactly
 * from its last event; anything else (a gap, another process's events, the
 * end) sends it to the log. For the same reason a slow consumer costs
 * nothing: its mailbox holds one signal or one batch, it reads at its own
 * pace, and the producer never waits for it.
 *
 * Notifications travel in-process, and across processes through Postgres
 * `LISTEN/NOTIFY` when the log is on Postgres, so a subscriber on runner A
 * follows events produced on runner B.
 *
 * @since 0.1.0
 */
import { PgClient } from "@effect/sql-pg"
import type { Array as Arr } from "effect"
import { type Cause, Context, Duration, Effect, Layer, Option, Queue, Schedule, Schema, Stream } from "effect"
import * as Migrator from "effect/sql/Migrator"
import { SqlClient } from "effect/sql/SqlClient"
import { isSqlError, type SqlError } from "effect/sql/SqlError"
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
    /** The payload of a step's first `result` event, from the blob table if it was moved there. */
    readonly stepResult: (runId: string, step: string) => Effect.Effect<Option.Option<unknown>, UnknownBlob | SqlError>
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

// Events a subscriber reads from the log at a time.
const pageSize = 500

const keyOf = (step: string, attempt: number, index: number) => `${step}\u0000${attempt}\u0000${index}`

/** The stored form of `fresh`, numbered from `last + 1`; `payloads` are their stored JSON. */
const toEvents = (
  runId: string,
  last: number,
  fresh: ReadonlyArray<NewEvent>,
  payloads: ReadonlyArray<string>,
  now: number
): ReadonlyArray<OutputEvent> =>
  fresh.map(
    (event, i) =>
      new OutputEvent({
        runId,
        sequence: last + i + 1,
        step: event.step,
        attempt: event.attempt,
        index: event.index,
        kind: event.kind,
        payload: JSON.parse(payloads[i]!),
        timestamp: now
      })
  )

/** News for a waiting subscriber: the log has more (`wake`), and perhaps a publish's events. */
interface News {
  readonly wake: boolean
  readonly batch?: ReadonlyArray<OutputEvent>
}

/**
 * What a waiting subscriber is told: that the log has news (a wake-up), and
 * perhaps the events of a publish in this process (a batch). It holds at most
 * one batch, so a slow consumer never makes it grow: a second batch before the
 * first was taken turns both into a wake-up, and the log has them.
 */
interface Mailbox {
  /** News without events: read the log. */
  readonly offerWake: () => void
  /** A publish's committed events, in order, numbered without gaps. */
  readonly offerBatch: (events: ReadonlyArray<OutputEvent>) => void
  /** Waits for news; after `timeout` without any, a wake-up. */
  readonly take: (timeout: Duration.Duration) => Effect.Effect<News>
}

const makeMailbox: Effect.Effect<Mailbox> = Effect.map(Queue.sliding<void>(1), (signal) => {
  let wake = false
  let batch: ReadonlyArray<OutputEvent> | undefined = undefined
  const offerWake = () => {
    wake = true
    Queue.offerUnsafe(signal, undefined)
  }
  return {
    offerWake,
    offerBatch: (events) => {
      if (batch !== undefined) {
        batch = undefined
        return offerWake()
      }
      batch = events
      Queue.offerUnsafe(signal, undefined)
    },
    take: (timeout) =>
      Effect.gen(function* () {
        for (;;) {
          const signalled = yield* Queue.take(signal).pipe(Effect.timeoutOption(timeout))
          const woken = wake || Option.isNone(signalled)
          const news: News = batch === undefined ? { wake: woken } : { wake: woken, batch }
          wake = false
          batch = undefined
          // Not even a wake-up: a signal whose news an earlier take already had.
          if (news.wake || news.batch !== undefined) return news
        }
      })
  }
})

const listenEnded = (cause: Cause.Cause<unknown>) =>
  Effect.logWarning("AgentOutput: LISTEN ended; listening again, subscribers poll meanwhile", cause)

/**
 * @category constructors
 */
export const make = Effect.fnUntraced(function* (options: Options = {}) {
  const sql = yield* SqlClient
  yield* Migrator.make({})({ loader: migrations(sql), table: "agent_output_migrations" })

  const blobThreshold = options.blobThreshold ?? 64 * 1024
  const safetyPoll = options.safetyPollInterval ?? Duration.seconds(2)
  const pg = Option.getOrUndefined(yield* Effect.serviceOption(PgClient.PgClient))
  // On Postgres the NOTIFY goes out with the append's own commit: no round
  // trip of its own, and none at all if the transaction rolls back.
  const notifying = (runId: string) =>
    pg === undefined ? sql.literal("") : sql`RETURNING pg_notify(${channel}, ${runId})`

  // Per run, the mailboxes of its waiting subscribers.
  const waiters = new Map<string, Set<Mailbox>>()
  const wake = (runId: string) => {
    for (const mailbox of waiters.get(runId) ?? []) mailbox.offerWake()
  }
  const handOff = (runId: string, events: ReadonlyArray<OutputEvent>) => {
    for (const mailbox of waiters.get(runId) ?? []) mailbox.offerBatch(events)
  }

  // Our own NOTIFY comes back too, and can arrive before our publish has
  // handed its events over: a subscriber woken by it would read the log for
  // them. So while this process appends to a run, a notification for the run
  // is held (never dropped) until those appends are done, after the hand-over.
  const appending = new Map<string, { count: number; notified: boolean }>()
  const whileAppending = <A, E, R>(runId: string, effect: Effect.Effect<A, E, R>) =>
    Effect.acquireUseRelease(
      Effect.sync(() => {
        const state = appending.get(runId) ?? { count: 0, notified: false }
        state.count++
        appending.set(runId, state)
      }),
      () => effect,
      () =>
        Effect.sync(() => {
          const state = appending.get(runId)!
          if (--state.count > 0) return
          appending.delete(runId)
          if (state.notified) wake(runId)
        })
    )

  if (pg !== undefined) {
    const listener = pg
    // Other runners' appends arrive here; ours too, which costs a subscriber
    // that was handed the events one read that finds nothing.
    const follow = (notifications: Queue.Dequeue<{ readonly payload: string }, unknown>) =>
      Stream.fromQueue(notifications).pipe(
        Stream.runForEach((notification) =>
          Effect.sync(() => {
            const state = appending.get(notification.payload)
            if (state === undefined) wake(notification.payload)
            else state.notified = true
          })
        )
      )
    // A dropped connection ends LISTEN. Listen again, and then wake every
    // subscriber: what other processes appended meanwhile announced itself to nobody.
    const listenAgain = Effect.sleep(Duration.seconds(1)).pipe(
      Effect.andThen(
        Effect.scoped(
          Effect.gen(function* () {
            const notifications = yield* listener.listen(channel)
            for (const runId of waiters.keys()) wake(runId)
            yield* follow(notifications)
          })
        )
      ),
      Effect.catchCause(listenEnded),
      Effect.forever
    )
    // The first LISTEN is in place before the layer is: nothing appended after it goes unannounced.
    const first = yield* listener.listen(channel)
    yield* follow(first).pipe(Effect.catchCause(listenEnded), Effect.andThen(listenAgain), Effect.forkScoped)
  }

  const storePayload = (runId: string, event: NewEvent, json: string) =>
    Effect.gen(function* () {
      if (json.length <= blobThreshold) return json
      // Deterministic id: a retried publish stores the blob once.
      const id = `${runId}/${event.step}/${event.attempt}/${event.index}`
      yield* sql`INSERT INTO agent_output_blobs (id, run_id, data) VALUES (${id}, ${runId}, ${json})
        ON CONFLICT (id) DO NOTHING`
      return JSON.stringify({ blob: id, bytes: json.length } satisfies BlobRef)
    })

  /**
   * Postgres, outside a transaction: the whole append as one autocommitted
   * statement. The run's row is locked by the upsert that reserves the
   * batch's numbers; a key already stored makes the INSERT fail on the
   * table's unique key, the statement rolls back whole (no number is spent),
   * and `None` sends the batch to `appendInTransaction`, which skips it.
   */
  const appendInOneStatement = (runId: string, fresh: ReadonlyArray<NewEvent>, payloads: ReadonlyArray<string>) =>
    Effect.gen(function* () {
      const now = Date.now()
      const rows = yield* sql<{ readonly base: number | string }>`WITH run AS (
          INSERT INTO agent_output_runs AS r (run_id, last_sequence) VALUES (${runId}, ${fresh.length})
          ON CONFLICT (run_id) DO UPDATE SET last_sequence = r.last_sequence + excluded.last_sequence
            WHERE r.ended_at IS NULL
          RETURNING r.last_sequence - ${fresh.length} AS base
        ), appended AS (
          INSERT INTO agent_output_events (run_id, sequence, step, attempt, idx, kind, payload, created_at)
          SELECT ${runId}, run.base + v.ord, v.step, v.attempt, v.idx, v.kind, v.payload, ${now}
          FROM run, unnest(
            ${fresh.map((e) => e.step)}::text[], ${fresh.map((e) => e.attempt)}::int[],
            ${fresh.map((e) => e.index)}::int[], ${fresh.map((e) => e.kind)}::text[], ${payloads}::text[]
          ) WITH ORDINALITY AS v (step, attempt, idx, kind, payload, ord)
        )
        SELECT base, pg_notify(${channel}, ${runId}) FROM run`.pipe(
        Effect.map(Option.some),
        Effect.catchIf(
          (error) => error.reason._tag === "UniqueViolation",
          () => Effect.succeedNone
        )
      )
      if (Option.isNone(rows)) return Option.none()
      // No row: the upsert's condition failed, the run has ended.
      if (rows.value.length === 0) return yield* new OutputClosed({ runId })
      const stored = toEvents(runId, Number(rows.value[0]!.base), fresh, payloads, now)
      handOff(runId, stored)
      return Option.some(stored)
    })

  const appendInTransaction = (runId: string, events: ReadonlyArray<NewEvent>) =>
    sql.withTransaction(
      Effect.gen(function* () {
        // The upsert locks the run's row (Postgres; SQLite has a single
        // writer), which serialises the numbering.
        const [run] = yield* sql<{ readonly last_sequence: number | string; readonly ended_at: unknown }>`
          INSERT INTO agent_output_runs (run_id, last_sequence) VALUES (${runId}, 0)
          ON CONFLICT (run_id) DO UPDATE SET run_id = excluded.run_id
          RETURNING last_sequence, ended_at`
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
        for (const row of rows) existing.add(keyOf(row.step, Number(row.attempt), Number(row.idx)))
        const fresh: Array<NewEvent> = []
        for (const event of events) {
          const key = keyOf(event.step, event.attempt, event.index)
          if (!existing.has(key)) {
            existing.add(key)
            fresh.push(event)
          }
        }
        if (fresh.length === 0) return []

        const last = Number(run!.last_sequence)
        const now = Date.now()
        const payloads: Array<string> = []
        for (const event of fresh)
          payloads.push(yield* storePayload(runId, event, JSON.stringify(event.payload ?? null)))
        const values = fresh.map((event, i) => ({
          run_id: runId,
          sequence: last + i + 1,
          step: event.step,
          attempt: event.attempt,
          idx: event.index,
          kind: event.kind,
          payload: payloads[i]!,
          created_at: now
        }))
        for (let i = 0; i < values.length; i += insertChunk) {
          const chunk = values.slice(i, i + insertChunk) as unknown as Arr.NonEmptyReadonlyArray<
            Record<string, unknown>
          >
          yield* sql`INSERT INTO agent_output_events ${sql.insert(chunk)}`
        }
        yield* sql`UPDATE agent_output_runs SET last_sequence = ${last + fresh.length} WHERE run_id = ${runId}
          ${notifying(runId)}`
        const stored = toEvents(runId, last, fresh, payloads, now)
        // Once the outermost transaction has committed: never an event that could still roll back.
        yield* sql.afterCommit(Effect.sync(() => handOff(runId, stored)))
        return stored
      })
    )

  const appendOnPostgres = (runId: string, events: ReadonlyArray<NewEvent>) =>
    Effect.gen(function* () {
      // Outside a transaction the append can be one statement; inside one it
      // must not fail on a stored key (that would abort the caller's transaction).
      if (Option.isNone(yield* Effect.serviceOption(sql.transactionService))) {
        const fresh: Array<NewEvent> = []
        const payloads: Array<string> = []
        const keys = new Set<string>()
        let small = true
        for (const event of events) {
          const key = keyOf(event.step, event.attempt, event.index)
          if (keys.has(key)) continue
          keys.add(key)
          const json = JSON.stringify(event.payload ?? null)
          small &&= json.length <= blobThreshold
          fresh.push(event)
          payloads.push(json)
        }
        // Large payloads go to the blob table first, in the append's transaction.
        if (small) {
          const stored = yield* appendInOneStatement(runId, fresh, payloads)
          if (Option.isSome(stored)) return stored.value
        }
      }
      return yield* appendInTransaction(runId, events)
    })

  const allStored = (runId: string, events: ReadonlyArray<NewEvent>) =>
    Effect.map(
      sql<{ readonly step: string; readonly attempt: number | string; readonly idx: number | string }>`
        SELECT step, attempt, idx FROM agent_output_events
        WHERE run_id = ${runId} AND step IN ${sql.in([...new Set(events.map((e) => e.step))])}`,
      (rows) => {
        const stored = new Set(rows.map((row) => `${row.step}\u0000${Number(row.attempt)}\u0000${Number(row.idx)}`))
        return events.every((e) => stored.has(`${e.step}\u0000${e.attempt}\u0000${e.index}`))
      }
    )

  const publish = (runId: string, events: ReadonlyArray<NewEvent>) =>
    Effect.gen(function* () {
      if (events.length === 0) return []
      const stored = yield* (
        pg === undefined ? appendInTransaction(runId, events) : whileAppending(runId, appendOnPostgres(runId, events))
      ).pipe(
        // After the end, a batch the log holds already is a replay's, not new output: the engine runs
        // a finished run again when it could not store its result (a full disk), and that must not fail it.
        Effect.catchTag("OutputClosed", (closed) =>
          Effect.flatMap(allStored(runId, events), (all) => (all ? Effect.succeed([]) : Effect.fail(closed)))
        )
      )
      // The subscribers just handed these events get a turn before the producer
      // goes on (say, to spawn a process, which blocks the event loop).
      if (stored.length > 0 && waiters.has(runId)) yield* Effect.yieldNow
      return stored
    })

  const end = (runId: string) =>
    Effect.gen(function* () {
      yield* sql`INSERT INTO agent_output_runs (run_id, last_sequence, ended_at) VALUES (${runId}, 0, ${Date.now()})
        ON CONFLICT (run_id) DO UPDATE SET ended_at = COALESCE(agent_output_runs.ended_at, excluded.ended_at)
        ${notifying(runId)}`
      yield* sql.afterCommit(Effect.sync(() => wake(runId)))
    })

  const read = (runId: string, readOptions: { readonly from?: number; readonly limit?: number } = {}) =>
    Effect.map(
      sql<EventRow>`SELECT run_id, sequence, step, attempt, idx, kind, payload, created_at
        FROM agent_output_events
        WHERE run_id = ${runId} AND sequence >= ${readOptions.from ?? 1}
        ORDER BY sequence LIMIT ${readOptions.limit ?? 1000}`,
      (rows) => rows.map(decodeRow)
    )

  /**
   * A page of events from `from` and the run's state, in one statement: one
   * round trip, and a state that matches the page, so "ended, and nothing
   * after this page" needs no second look. The state's row has no sequence.
   */
  const readPage = (runId: string, from: number) =>
    Effect.map(
      sql<EventRow & { readonly last_sequence: number | string | null; readonly ended_at: unknown }>`
        SELECT * FROM (
          SELECT run_id, sequence, step, attempt, idx, kind, payload, created_at,
            CAST(NULL AS BIGINT) AS last_sequence, CAST(NULL AS BIGINT) AS ended_at
          FROM agent_output_events
          WHERE run_id = ${runId} AND sequence >= ${from}
          ORDER BY sequence LIMIT ${pageSize}
        ) page
        UNION ALL
        SELECT run_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, last_sequence, ended_at
        FROM agent_output_runs WHERE run_id = ${runId}`,
      (rows) => {
        const events: Array<OutputEvent> = []
        let ended = false
        let lastSequence = 0
        for (const row of rows) {
          if (row.sequence === null) {
            ended = row.ended_at !== null
            lastSequence = Number(row.last_sequence)
          } else events.push(decodeRow(row))
        }
        events.sort((a, b) => a.sequence - b.sequence)
        return { events, ended, lastSequence }
      }
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
        const mailbox = yield* makeMailbox
        // Registered before the first read: news sent after that read is never missed.
        yield* Effect.acquireRelease(
          Effect.sync(() => {
            const set = waiters.get(runId) ?? new Set()
            set.add(mailbox)
            waiters.set(runId, set)
          }),
          () =>
            Effect.sync(() => {
              const set = waiters.get(runId)
              set?.delete(mailbox)
              if (set?.size === 0) waiters.delete(runId)
            })
        )
        // `next`: the offset after the last event emitted. While `wait`, the
        // subscriber reads only when told there is news. A handed-over batch
        // that continues from `next` is emitted as it is (a wake-up that came
        // with it is read after it); anything else reads the log from `next`.
        return Stream.paginate({ next: Math.max(1, subscribeOptions.from ?? 1), wait: false }, ({ next, wait }) =>
          Effect.gen(function* () {
            if (wait) {
              const news = yield* mailbox.take(safetyPoll)
              if (news.batch !== undefined && news.batch[0]!.sequence <= next) {
                const fresh = news.batch.filter((event) => event.sequence >= next)
                return [fresh, Option.some({ next: next + fresh.length, wait: !news.wake })] as const
              }
            }
            // A read on a connection the database has just dropped fails once; the next one gets a new one.
            const page = yield* readPage(runId, next).pipe(
              Effect.retry({ while: isSqlError, schedule: Schedule.exponential(Duration.millis(50)), times: 6 })
            )
            const after = next + page.events.length
            if (page.events.length === pageSize)
              return [page.events, Option.some({ next: after, wait: false })] as const
            if (page.ended && after > page.lastSequence) return [page.events, Option.none()] as const
            return [page.events, Option.some({ next: after, wait: true })] as const
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

  const stepResult = (runId: string, step: string) =>
    Effect.gen(function* () {
      const rows = yield* sql<{ readonly payload: string }>`SELECT payload FROM agent_output_events
        WHERE run_id = ${runId} AND step = ${step} AND kind = 'result' ORDER BY sequence LIMIT 1`
      if (rows.length === 0) return Option.none()
      const payload: unknown = JSON.parse(rows[0]!.payload)
      return Option.some(Schema.is(BlobRef)(payload) ? yield* readBlob(payload.blob) : payload)
    })

  return AgentOutput.of({ publish, end, read, subscribe, status, lastAttempt, steps, stepResult, readBlob, purge })
})
