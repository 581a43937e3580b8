/**
 * Deletes finished workflow executions: `effect/cluster` never does, so a
 * busy engine's tables would grow without bound.
 *
 * An execution is finished when its `run` request has a `Complete` reply (or,
 * in the journal engine's tables, its row is `complete`); it is kept while it
 * is younger than `maxAge` and among the `maxCount` most recently finished.
 * Running, suspended and waiting executions are never touched. All rows of an
 * execution (its run, activities, deferreds, durable clocks and their replies)
 * share its id and go together. Each engine's tables are cleaned when they
 * exist, so one cleanup serves a database either engine has used.
 *
 * @since 0.1.0
 */
import { Duration, Effect, Layer, Schedule } from "effect"
import * as Snowflake from "effect/cluster/Snowflake"
import { SqlClient } from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"
import * as JournalEngine from "./JournalEngine.ts"

/**
 * What to keep. With neither limit, nothing is deleted.
 *
 * @category models
 */
export interface Policy {
  /** Delete executions that finished longer ago than this. */
  readonly maxAge?: Duration.Duration | undefined
  /** Keep at most this many finished executions, the most recent ones. */
  readonly maxCount?: number | undefined
}

/**
 * Called with the execution ids about to be deleted, inside the deleting
 * transaction, so that other stores (the output log) purge theirs with them.
 *
 * @category models
 */
export type OnPurge = (executionIds: ReadonlyArray<string>) => Effect.Effect<void, SqlError, SqlClient>

/** @category models */
export interface Report {
  readonly deletedExecutions: number
}

const batchSize = 500

/**
 * Deletes what the policy does not keep, in batches of 500 executions per
 * transaction.
 *
 * @category cleanup
 */
export const cleanup = (
  policy: Policy,
  options: { readonly now?: number; readonly onPurge?: OnPurge } = {}
): Effect.Effect<Report, SqlError, SqlClient> =>
  Effect.gen(function* () {
    if (policy.maxAge === undefined && policy.maxCount === undefined) return { deletedExecutions: 0 }
    const sql = yield* SqlClient
    const cutoff =
      policy.maxAge === undefined ? undefined : (options.now ?? Date.now()) - Duration.toMillis(policy.maxAge)
    const present = yield* presentTables(["cluster_messages", JournalEngine.tables.executions])
    const cluster = present.has("cluster_messages")
    const journal = present.has(JournalEngine.tables.executions)
    // Snowflakes carry their creation time: (id >> 22) ms after Snowflake's epoch.
    const finishedAt = sql.literal(`((m.last_reply_id >> 22) + ${Snowflake.constEpochMillis})`)
    const isComplete = sql.onDialectOrElse({
      pg: () => sql.literal(`(r.payload::jsonb -> 'value' ->> '_tag') = 'Complete'`),
      orElse: () => sql.literal(`json_extract(r.payload, '$.value._tag') = 'Complete'`)
    })
    type Finished = { readonly entity_id: string; readonly finished_at: number | string }
    const clusterRows = cluster
      ? yield* sql<Finished>`
      SELECT m.entity_id, ${finishedAt} AS finished_at
      FROM cluster_messages m
      JOIN cluster_replies r ON r.request_id = m.id
      WHERE m.tag = 'run' AND m.processed = ${true}
        AND m.entity_type LIKE 'Workflow/%' AND m.entity_type <> 'Workflow/-/DurableClock'
        AND ${isComplete}
    `
      : []
    const journalRows = journal
      ? yield* sql<Finished>`SELECT execution_id AS entity_id, updated_at AS finished_at
          FROM journal_executions WHERE state = ${"complete"}`
      : []
    const rows = [...clusterRows, ...journalRows]
      .map((row) => ({ entity_id: row.entity_id, finished_at: Number(row.finished_at) }))
      .toSorted((a, b) => b.finished_at - a.finished_at)
    const doomed = rows
      .filter(
        (row, index) =>
          (cutoff !== undefined && Number(row.finished_at) < cutoff) ||
          (policy.maxCount !== undefined && index >= policy.maxCount)
      )
      .map((row) => row.entity_id)

    for (let i = 0; i < doomed.length; i += batchSize) {
      const batch = doomed.slice(i, i + batchSize)
      yield* sql.withTransaction(
        Effect.gen(function* () {
          if (options.onPurge !== undefined) yield* options.onPurge(batch)
          if (cluster) {
            yield* sql`DELETE FROM cluster_replies WHERE request_id IN (
              SELECT id FROM cluster_messages WHERE entity_id IN ${sql.in(batch)}
            )`
            yield* sql`DELETE FROM cluster_messages WHERE entity_id IN ${sql.in(batch)}`
          }
          if (journal) {
            for (const table of Object.values(JournalEngine.tables)) {
              yield* sql`DELETE FROM ${sql(table)} WHERE execution_id IN ${sql.in(batch)}`
            }
          }
        })
      )
    }
    if (doomed.length > 0) yield* Effect.logInfo("retention: deleted finished executions", { count: doomed.length })
    return { deletedExecutions: doomed.length }
  }).pipe(Effect.withSpan("Retention.cleanup"))

/**
 * Runs `cleanup` now and then every `every` (default one hour) for the life of
 * the layer. A failed pass is logged and retried at the next one.
 *
 * @category layers
 */
export const layerSchedule = (
  policy: Policy,
  options: { readonly every?: Duration.Duration; readonly onPurge?: OnPurge } = {}
): Layer.Layer<never, never, SqlClient> =>
  Layer.effectDiscard(
    cleanup(policy, options.onPurge !== undefined ? { onPurge: options.onPurge } : {}).pipe(
      Effect.catchCause((cause) => Effect.logWarning("retention: cleanup failed", cause)),
      Effect.repeat(Schedule.spaced(options.every ?? Duration.hours(1))),
      Effect.forkScoped
    )
  )

/**
 * Which of these tables the database has (a database one engine or layer
 * never touched lacks the others' tables).
 *
 * @category models
 */
export const presentTables = (names: ReadonlyArray<string>): Effect.Effect<ReadonlySet<string>, SqlError, SqlClient> =>
  Effect.gen(function* () {
    const sql = yield* SqlClient
    const rows = yield* sql.onDialectOrElse({
      pg: () => sql<{ readonly name: string }>`SELECT table_name AS name FROM information_schema.tables
        WHERE table_schema = current_schema() AND table_name IN ${sql.in(names)}`,
      orElse: () => sql<{ readonly name: string }>`SELECT name FROM sqlite_master
        WHERE type = 'table' AND name IN ${sql.in(names)}`
    })
    return new Set(rows.map((row) => row.name))
  })
