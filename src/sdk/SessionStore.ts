/**
 * Agent sessions kept in the database, so that any runner can resume them.
 *
 * The Claude Code CLI writes a session's transcript to the local disk of the
 * process that ran it. A later step that resumes the session on another
 * runner, or after that disk is gone, would find nothing. The SDK's
 * `sessionStore` option mirrors every transcript entry to an adapter as the
 * CLI writes it, and on `resume` loads the entries back from the adapter into
 * a temporary file before the CLI starts. This module is that adapter, over
 * `effect/sql`, in the engine's database: the journal keeps only the session
 * id, the transcript lives here.
 *
 * Sessions are keyed by session id alone. The SDK also passes a project key
 * derived from the working directory, which differs between machines that
 * check the project out in different places; a session id is a UUID, unique
 * on its own.
 *
 * @since 0.1.0
 */
import type * as Sdk from "@anthropic-ai/claude-agent-sdk"
import { Context, Effect, Layer } from "effect"
import * as Migrator from "effect/sql/Migrator"
import { SqlClient } from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"
import * as Durably from "../engine/Durably.ts"
import * as SqliteClient from "../engine/SqliteClient.ts"

/**
 * @category services
 */
export class SessionStore extends Context.Service<
  SessionStore,
  {
    /** Appends transcript entries; an entry whose `uuid` is stored already is skipped. */
    readonly append: (
      key: Sdk.SessionKey,
      entries: ReadonlyArray<Sdk.SessionStoreEntry>
    ) => Effect.Effect<void, SqlError>
    /** The session's entries in order, or `null` if none was ever stored. */
    readonly load: (key: Sdk.SessionKey) => Effect.Effect<ReadonlyArray<Sdk.SessionStoreEntry> | null, SqlError>
    /** Sub-transcripts (a subagent's, say) stored under the session. */
    readonly listSubkeys: (key: { readonly sessionId: string }) => Effect.Effect<ReadonlyArray<string>, SqlError>
    /** Deletes the session and its sub-transcripts. */
    readonly delete: (key: Sdk.SessionKey) => Effect.Effect<void, SqlError>
    /** The adapter the SDK calls, running the methods above. */
    readonly adapter: Sdk.SessionStore
  }
>()("effect-claude-agent/sdk/SessionStore") {
  /**
   * Sessions in the engine's database (SQLite or Postgres).
   *
   * @category layers
   */
  static readonly layer: Layer.Layer<SessionStore, SqlError | Migrator.MigrationError, SqlClient> = Layer.effect(
    SessionStore
  )(Effect.suspend(() => make))

  /**
   * Sessions in an in-memory SQLite database, for the memory engine and tests.
   *
   * @category layers
   */
  static readonly layerMemory: Layer.Layer<SessionStore, SqlError | Migrator.MigrationError> = Layer.suspend(() =>
    SessionStore.layer.pipe(Layer.provide(SqliteClient.layer({ filename: ":memory:" })))
  )
}

const migrations = (sql: SqlClient) =>
  Migrator.fromRecord({
    "1_sessions": Effect.gen(function* () {
      yield* sql`CREATE TABLE IF NOT EXISTS agent_session_entries (
        session_id TEXT NOT NULL,
        subpath TEXT NOT NULL,
        position BIGINT NOT NULL,
        uuid TEXT,
        entry TEXT NOT NULL,
        PRIMARY KEY (session_id, subpath, position)
      )`
      // Only entries with a uuid are deduplicated: titles and tags have none.
      yield* sql`CREATE UNIQUE INDEX IF NOT EXISTS agent_session_entries_uuid
        ON agent_session_entries (session_id, subpath, uuid) WHERE uuid IS NOT NULL`
    })
  })

/**
 * @category constructors
 */
export const make = Effect.gen(function* () {
  const sql = yield* SqlClient
  yield* Migrator.make({})({ loader: migrations(sql), table: "agent_session_migrations" })

  const append = (key: Sdk.SessionKey, entries: ReadonlyArray<Sdk.SessionStoreEntry>) =>
    entries.length === 0
      ? Effect.void
      : sql.withTransaction(
          Effect.gen(function* () {
            const subpath = key.subpath ?? ""
            const [last] = yield* sql<{ readonly position: number | string | null }>`
              SELECT MAX(position) AS position FROM agent_session_entries
              WHERE session_id = ${key.sessionId} AND subpath = ${subpath}`
            let position = Number(last?.position ?? 0)
            for (const entry of entries) {
              const uuid = typeof entry.uuid === "string" ? entry.uuid : null
              const stored = yield* sql`INSERT INTO agent_session_entries (session_id, subpath, position, uuid, entry)
                VALUES (${key.sessionId}, ${subpath}, ${position + 1}, ${uuid}, ${JSON.stringify(entry)})
                ON CONFLICT DO NOTHING RETURNING position`
              if (stored.length > 0) position++
            }
          })
        )

  const load = (key: Sdk.SessionKey) =>
    Effect.map(
      sql<{ readonly entry: string }>`SELECT entry FROM agent_session_entries
        WHERE session_id = ${key.sessionId} AND subpath = ${key.subpath ?? ""} ORDER BY position`,
      (rows) => (rows.length === 0 ? null : rows.map((row) => JSON.parse(row.entry) as Sdk.SessionStoreEntry))
    )

  const listSubkeys = (key: { readonly sessionId: string }) =>
    Effect.map(
      sql<{ readonly subpath: string }>`SELECT DISTINCT subpath FROM agent_session_entries
        WHERE session_id = ${key.sessionId} AND subpath <> ''`,
      (rows) => rows.map((row) => row.subpath)
    )

  const delete_ = (key: Sdk.SessionKey) =>
    Effect.asVoid(sql`DELETE FROM agent_session_entries WHERE session_id = ${key.sessionId}`)

  const context = yield* Effect.context<never>()
  const run = <A>(effect: Effect.Effect<A, SqlError>): Promise<A> => Effect.runPromiseWith(context)(effect)

  return SessionStore.of({
    append,
    load,
    listSubkeys,
    delete: delete_,
    adapter: {
      // The SDK reports a refused batch as `mirror_error`, which fails the step: wait out the database instead.
      append: (key, entries) => run(Durably.durably(append(key, entries))),
      load: (key) => run(Effect.map(load(key), (entries) => (entries === null ? null : [...entries]))),
      listSubkeys: (key) => run(Effect.map(listSubkeys(key), (keys) => [...keys])),
      delete: (key) => run(delete_(key))
    }
  })
})
