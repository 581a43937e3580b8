/**
 * An `effect/sql` client for SQLite over the runtime's built-in driver:
 * `node:sqlite` on Node, `bun:sqlite` on Bun (see `SqliteDriver`).
 *
 * No published SQLite client loads with effect 4.1 yet (the 4.0 betas of
 * `@effect/sql-sqlite-node` import `effect/unstable/*` paths that 4.1
 * removed), and the embedded engine needs one. This one provides the standard
 * `SqlClient` with the `sqlite` dialect and follows the official client's
 * options and behaviour, so it can be swapped for that package when a 4.1
 * release ships; `effect/cluster`'s SQL storages and `effect/sql`'s Migrator
 * run on it unchanged.
 *
 * One connection serves every fiber. Effect's `makeSqliteAcquirers` lends it
 * to one fiber at a time, and a transaction keeps it from `BEGIN` to
 * `COMMIT`, so another fiber's statements never land inside it. Writable
 * connections begin transactions with `BEGIN IMMEDIATE`: a transaction that
 * reads and then writes would otherwise fail at once with `SQLITE_BUSY` when
 * another process holds the write lock, instead of waiting for it.
 *
 * Gotchas:
 * - The drivers are synchronous: a statement, and a wait for another
 *   process's lock (up to `busyTimeout`), block the event loop.
 * - A `.stream` holds the connection until it ends, so a consumer that queries
 *   the same client while it runs waits forever; collect first, or run the
 *   stream inside `withTransaction`, where both share the transaction.
 * - One statement per call: SQLite ignores whatever follows the first `;`.
 * - `updateValues` is not supported by the SQLite dialect.
 *
 * @since 0.1.0
 */
import { Cause, Config, Context, Duration, Effect, Layer, Predicate, Scope, Semaphore, Stream } from "effect"
import * as Reactivity from "effect/reactivity/Reactivity"
import * as SqlClient from "effect/sql/SqlClient"
import type * as SqlConnection from "effect/sql/SqlConnection"
import { classifySqliteError, ConnectionError, SqlError } from "effect/sql/SqlError"
import * as Statement from "effect/sql/Statement"
import * as SqliteDriver from "./SqliteDriver.ts"

/**
 * Options of `make` and `layer`; the names follow `@effect/sql-sqlite-node`.
 *
 * @category models
 */
export interface SqliteClientConfig {
  /** A path, or `":memory:"`. */
  readonly filename: string
  /** Opens the file read-only; writes fail with "attempt to write a readonly database". */
  readonly readonly?: boolean | undefined
  /**
   * Keeps the file's journal mode. By default a writable file database is
   * switched to WAL: readers do not block the writer, and commits are cheap.
   */
  readonly disableWAL?: boolean | undefined
  /**
   * `PRAGMA synchronous`. Default `"normal"` in WAL mode, which loses nothing
   * committed when the process dies (kill -9), only on power loss; SQLite's
   * default (`"full"`) otherwise.
   */
  readonly synchronous?: "off" | "normal" | "full" | "extra" | undefined
  /** How long a statement waits for another connection's lock before failing. Default 5 seconds. */
  readonly busyTimeout?: Duration.Input | undefined
  /** Enforces `REFERENCES` constraints. Default `true`. */
  readonly foreignKeys?: boolean | undefined
  /** Prepared statements kept for reuse, least recently used dropped first. Default 200; 0 disables the cache. */
  readonly prepareCacheSize?: number | undefined
  /** Added to every statement's and transaction's span. */
  readonly spanAttributes?: Record<string, unknown> | undefined
  /** Renames result columns, e.g. `String.snakeToCamel`. */
  readonly transformResultNames?: ((name: string) => string) | undefined
  /** Renames identifiers and insert/update keys in queries, e.g. `String.camelToSnake`. */
  readonly transformQueryNames?: ((name: string) => string) | undefined
}

/**
 * The client: a `SqlClient` that also tells how it was opened.
 *
 * @category models
 */
export interface Service extends SqlClient.SqlClient {
  readonly config: SqliteClientConfig
  /** Not supported in SQLite (its compiler renders nothing for it). */
  readonly updateValues: never
}

/**
 * The SQLite client, for code that needs to know it talks to SQLite.
 *
 * @category services
 */
export class SqliteClient extends Context.Service<SqliteClient, Service>()("effect-claude-agent/engine/SqliteClient") {}

// SQLite's own cap on the busy timeout (a C int of milliseconds).
const maxBusyTimeout = 2_147_483_647

type TransformRows = <A extends object>(rows: ReadonlyArray<A>) => ReadonlyArray<A>

const withRows = (rows: Effect.Effect<ReadonlyArray<any>, SqlError>, transform: TransformRows | undefined) =>
  transform === undefined ? rows : Effect.map(rows, transform)

const causeMessage = (cause: unknown): string =>
  Predicate.hasProperty(cause, "message") && typeof cause.message === "string" ? cause.message : String(cause)

/**
 * Opens the database for the life of the current scope.
 *
 * @category constructors
 */
export const make = (
  config: SqliteClientConfig
): Effect.Effect<Service, SqlError, Scope.Scope | Reactivity.Reactivity> =>
  Effect.gen(function* () {
    const { filename } = config
    const readonly = config.readonly === true
    const compiler = Statement.makeCompilerSqlite(config.transformQueryNames)
    const transformRows = config.transformResultNames
      ? Statement.defaultTransforms(config.transformResultNames).array
      : undefined

    let closed = false
    const cache = new Map<string, SqliteDriver.Statement>()

    const failure = (cause: unknown, operation: string, message: string): SqlError => {
      if (closed) return closedError(operation)
      // node:sqlite reports the SQLite result code as `errcode` (its `code` is
      // the generic ERR_SQLITE_ERROR); Effect's classifier reads `errno`.
      if (
        Predicate.hasProperty(cause, "errcode") &&
        typeof cause.errcode === "number" &&
        !Predicate.hasProperty(cause, "errno")
      ) {
        Object.assign(cause, { errno: cause.errcode })
      }
      return new SqlError({
        reason: classifySqliteError(cause, { message: `${message}: ${causeMessage(cause)}`, operation })
      })
    }
    const closedError = (operation: string) =>
      new SqlError({
        reason: new ConnectionError({
          message: `SQLite database ${filename} is closed`,
          operation,
          cause: new Error(`SQLite database ${filename} is closed`)
        })
      })

    const db = yield* Effect.acquireRelease(
      Effect.tryPromise({
        try: () => SqliteDriver.open({ filename, readonly }),
        catch: (cause) => failure(cause, "open", `Cannot open SQLite database ${filename}`)
      }),
      (opened) =>
        Effect.sync(() => {
          closed = true
          cache.clear()
          opened.close()
        })
    )

    const pragma = (setting: string) =>
      Effect.try({
        try: () => db.exec(`PRAGMA ${setting}`),
        catch: (cause) => failure(cause, "open", `Cannot set PRAGMA ${setting} on ${filename}`)
      })
    const busyTimeout = Math.min(
      maxBusyTimeout,
      Math.max(0, Math.round(Duration.toMillis(config.busyTimeout ?? Duration.seconds(5))))
    )
    // First, so that switching to WAL below waits for other connections too.
    yield* pragma(`busy_timeout = ${busyTimeout}`)
    yield* pragma(`foreign_keys = ${config.foreignKeys === false ? "OFF" : "ON"}`)
    const wal = !readonly && config.disableWAL !== true && filename !== ":memory:" && filename !== ""
    if (wal) yield* pragma("journal_mode = WAL")
    const synchronous = config.synchronous ?? (wal ? "normal" : undefined)
    if (synchronous !== undefined && !readonly) yield* pragma(`synchronous = ${synchronous.toUpperCase()}`)

    const cacheSize = Math.max(0, config.prepareCacheSize ?? 200)
    const prepare = (sql: string): SqliteDriver.Statement => {
      const cached = cache.get(sql)
      if (cached !== undefined) {
        // A Map keeps insertion order: re-inserting makes this the most recent.
        cache.delete(sql)
        cache.set(sql, cached)
        return cached
      }
      const statement = db.prepare(sql)
      if (cacheSize > 0) {
        if (cache.size >= cacheSize) cache.delete(cache.keys().next().value!)
        cache.set(sql, statement)
      }
      return statement
    }

    // Runs one synchronous driver call as an effect, reading big integers as
    // bigints when the caller provided `SqlClient.SafeIntegers`.
    const attempt = <A>(operation: string, f: (bigints: boolean) => A): Effect.Effect<A, SqlError> =>
      Effect.withFiber((fiber) => {
        if (closed) return Effect.fail(closedError(operation))
        try {
          return Effect.succeed(f(fiber.getRef(SqlClient.SafeIntegers)))
        } catch (cause) {
          return Effect.fail(failure(cause, operation, "Failed to execute statement"))
        }
      })

    const execute = (sql: string, params: ReadonlyArray<unknown>, cached: boolean) =>
      attempt("execute", (bigints) => {
        const statement = cached ? prepare(sql) : db.prepare(sql)
        if (statement.returnsRows) return statement.all(params, bigints)
        statement.run(params, bigints)
        return []
      })

    const values = (sql: string, params: ReadonlyArray<unknown>, cached: boolean) =>
      attempt("values", (bigints) => {
        const statement = cached ? prepare(sql) : db.prepare(sql)
        if (statement.returnsRows) return statement.values(params, bigints)
        statement.run(params, bigints)
        return []
      })

    // Rows in chunks as SQLite steps through them. A statement of its own, so
    // a query run from the consumer cannot reset it halfway.
    const stream = (
      sql: string,
      params: ReadonlyArray<unknown>,
      transform: TransformRows | undefined
    ): Stream.Stream<any, SqlError> =>
      Stream.unwrap(
        Effect.map(
          Effect.acquireRelease(
            attempt("stream", (bigints) => db.prepare(sql).iterate(params, bigints)),
            (iterator) => Effect.sync(() => void iterator.return?.())
          ),
          (iterator) => {
            const pull = attempt("stream", () => {
              const rows: Array<SqliteDriver.Row> = []
              for (let next = iterator.next(); !next.done; next = iterator.next()) {
                rows.push(next.value)
                if (rows.length === 256) break
              }
              return rows
            })
            return Stream.fromPull(
              Effect.succeed(
                Effect.flatMap(pull, (chunk) =>
                  chunk.length === 0
                    ? Cause.done()
                    : Effect.succeed((transform === undefined ? chunk : transform(chunk)) as [any, ...Array<any>])
                )
              )
            )
          }
        )
      )

    const connection: SqlConnection.Connection = {
      execute: (sql, params, transform) => withRows(execute(sql, params, true), transform),
      executeUnprepared: (sql, params, transform) => withRows(execute(sql, params, false), transform),
      // A write reports `{ changes, lastInsertRowid }`; a query its rows.
      executeRaw: (sql, params) =>
        attempt("execute", (bigints): unknown => {
          const statement = prepare(sql)
          return statement.returnsRows ? statement.all(params, bigints) : statement.run(params, bigints)
        }),
      executeValues: (sql, params) => values(sql, params, true),
      executeValuesUnprepared: (sql, params) => values(sql, params, false),
      executeStream: stream
    }

    const acquirers = SqlClient.makeSqliteAcquirers({
      connection: Effect.suspend(() => (closed ? Effect.fail(closedError("acquire")) : Effect.succeed(connection))),
      semaphore: yield* Semaphore.make(1),
      isTransaction: () => !closed && db.isTransaction()
    })

    const client = yield* SqlClient.make({
      acquirer: acquirers.acquirer,
      borrower: acquirers.borrower,
      transactionAcquirer: acquirers.transactionAcquirer,
      onCommitFailure: acquirers.onCommitFailure,
      isTransaction: acquirers.isTransaction,
      compiler,
      driver: db.driver,
      spanAttributes: [...Object.entries(config.spanAttributes ?? {}), ["db.system.name", "sqlite"]],
      transformRows,
      prepareTransactionControls: true,
      beginTransaction: readonly ? "BEGIN" : "BEGIN IMMEDIATE",
      releaseSavepoint: (name) => `RELEASE SAVEPOINT ${name}`
    })

    return Object.assign(client, { config }) as Service
  })

const toContext = (client: Service) => Context.make(SqliteClient, client).pipe(Context.add(SqlClient.SqlClient, client))

/**
 * Provides both `SqliteClient` and the generic `SqlClient`; the database is
 * closed when the layer's scope closes.
 *
 * @category layers
 */
export const layer = (config: SqliteClientConfig): Layer.Layer<SqliteClient | SqlClient.SqlClient, SqlError> =>
  Layer.effectContext(Effect.map(make(config), toContext)).pipe(Layer.provide(Reactivity.layer))

/**
 * `layer`, with the options read from `Config`, e.g.
 * `layerConfig({ filename: Config.String("AGENT_SQLITE_FILENAME") })`.
 *
 * @category layers
 */
export const layerConfig = (
  config: Config.Wrap<SqliteClientConfig>
): Layer.Layer<SqliteClient | SqlClient.SqlClient, SqlError | Config.ConfigError> =>
  Layer.effectContext(Config.unwrap(config).pipe(Effect.flatMap(make), Effect.map(toContext))).pipe(
    Layer.provide(Reactivity.layer)
  )
