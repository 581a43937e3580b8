/**
 * A small `effect/sql` client for SQLite over the runtime's built-in driver:
 * `node:sqlite` on Node 22.5+, `bun:sqlite` on Bun.
 *
 * No published SQLite client loads with effect 4.1 yet (the 4.0 betas of
 * `@effect/sql-sqlite-node` import `effect/unstable/*` paths that 4.1
 * removed), and the embedded engine needs one. This provides the standard
 * `SqlClient`, so it can be swapped for the official package when a 4.1
 * release ships: nothing else in the project names it but the engine layer.
 *
 * One connection serves every fiber; a semaphore gives it to one at a time,
 * so a transaction's statements never interleave with another fiber's.
 *
 * @since 0.1.0
 */
import { Config, Context, Effect, Layer, Predicate, Scope, Semaphore, Stream } from "effect"
import * as Reactivity from "effect/reactivity/Reactivity"
import * as SqlClient from "effect/sql/SqlClient"
import type * as SqlConnection from "effect/sql/SqlConnection"
import { classifySqliteError, SqlError } from "effect/sql/SqlError"
import * as Statement from "effect/sql/Statement"

/**
 * @category models
 */
export interface Options {
  /** A path, or `":memory:"`. */
  readonly filename: string
  readonly readonly?: boolean | undefined
  /** Default `"wal"` for files: readers do not block the writer, and a crash loses nothing committed. */
  readonly journalMode?: "wal" | "delete" | "truncate" | "memory" | undefined
  /** How long a statement waits for another process's lock. Default 5000 ms. */
  readonly busyTimeoutMs?: number | undefined
  readonly foreignKeys?: boolean | undefined
  /** Prepared statements kept for reuse. Default 200. */
  readonly statementCacheSize?: number | undefined
  readonly transformResultNames?: ((name: string) => string) | undefined
  readonly transformQueryNames?: ((name: string) => string) | undefined
}

// ----------------------------------------------------------------------------
// the driver seam: the little we need from node:sqlite and bun:sqlite
// ----------------------------------------------------------------------------

interface DriverStatement {
  readonly isReader: boolean
  readonly all: (params: ReadonlyArray<unknown>) => ReadonlyArray<Record<string, unknown>>
  readonly values: (params: ReadonlyArray<unknown>) => ReadonlyArray<ReadonlyArray<unknown>>
  readonly run: (params: ReadonlyArray<unknown>) => void
}

interface Driver {
  readonly prepare: (sql: string) => DriverStatement
  readonly exec: (sql: string) => void
  readonly close: () => void
}

const isBun = typeof process !== "undefined" && process.versions.bun !== undefined

// node:sqlite binds no booleans, undefined or Dates; SQLite stores them as 0/1, NULL and ISO text.
const bindable = (value: unknown): unknown =>
  value === undefined
    ? null
    : typeof value === "boolean"
      ? value
        ? 1
        : 0
      : value instanceof Date
        ? value.toISOString()
        : value

const bind = (params: ReadonlyArray<unknown>) => params.map(bindable) as Array<any>

const openNode = async (options: Options): Promise<Driver> => {
  const { DatabaseSync } = await import("node:sqlite")
  const db = new DatabaseSync(options.filename, { readOnly: options.readonly ?? false })
  return {
    prepare: (sql) => {
      const statement = db.prepare(sql)
      const isReader = statement.columns().length > 0
      // A second statement returns rows as arrays; prepared only when `.values` asks.
      let arrays: ReturnType<typeof db.prepare> | undefined
      return {
        isReader,
        all: (params) => statement.all(...bind(params)) as any,
        values: (params) => {
          if (!isReader) {
            statement.run(...bind(params))
            return []
          }
          if (arrays === undefined) {
            arrays = db.prepare(sql)
            arrays.setReturnArrays(true)
          }
          return arrays.all(...bind(params)) as any
        },
        run: (params) => void statement.run(...bind(params))
      }
    },
    exec: (sql) => db.exec(sql),
    close: () => db.close()
  }
}

const openBun = async (options: Options): Promise<Driver> => {
  // A variable specifier keeps Node's resolver (and TypeScript) away from bun:sqlite.
  const specifier = "bun:sqlite"
  const { Database } = await import(specifier)
  const db = new Database(options.filename, options.readonly ? { readonly: true } : { create: true, readwrite: true })
  return {
    prepare: (sql) => {
      const statement = db.prepare(sql)
      return {
        isReader: statement.columnNames.length > 0,
        all: (params) => statement.all(...bind(params)),
        values: (params) => statement.values(...bind(params)),
        run: (params) => void statement.run(...bind(params))
      }
    },
    exec: (sql) => db.exec(sql),
    close: () => db.close()
  }
}

// ----------------------------------------------------------------------------
// the client
// ----------------------------------------------------------------------------

/**
 * The SQLite client, for code that needs to know it talks to SQLite.
 *
 * @category services
 */
export class SqliteClient extends Context.Service<
  SqliteClient,
  SqlClient.SqlClient & {
    readonly filename: string
  }
>()("effect-claude-agent/engine/SqliteClient") {}

/**
 * node:sqlite reports the SQLite result code as `errcode` under the generic
 * `code: "ERR_SQLITE_ERROR"`; Effect's classifier reads `errno`.
 */
const normalize = (cause: unknown): unknown =>
  Predicate.hasProperty(cause, "errcode") && typeof cause.errcode === "number"
    ? Object.assign(new Error(cause instanceof Error ? cause.message : String(cause), { cause }), {
        errno: cause.errcode
      })
    : cause

const fail = (operation: string, message: string) => (cause: unknown) =>
  new SqlError({ reason: classifySqliteError(normalize(cause), { message, operation }) })

const withRows = <A>(
  rows: Effect.Effect<ReadonlyArray<A>, SqlError>,
  transform: ((rows: ReadonlyArray<any>) => ReadonlyArray<any>) | undefined
) => (transform === undefined ? rows : Effect.map(rows, transform))

/**
 * Opens the database for the life of the current scope.
 *
 * @category constructors
 */
export const make = (
  options: Options
): Effect.Effect<SqliteClient["Service"], SqlError, Scope.Scope | Reactivity.Reactivity> =>
  Effect.gen(function* () {
    const compiler = Statement.makeCompilerSqlite(options.transformQueryNames)
    const transformRows = options.transformResultNames
      ? Statement.defaultTransforms(options.transformResultNames).array
      : undefined

    const driver = yield* Effect.acquireRelease(
      Effect.tryPromise({
        try: () => (isBun ? openBun(options) : openNode(options)),
        catch: fail("open", `Cannot open SQLite database ${options.filename}`)
      }),
      (db) => Effect.sync(() => db.close())
    )

    const pragma = (sql: string) => Effect.try({ try: () => driver.exec(sql), catch: fail("pragma", `Failed: ${sql}`) })
    yield* pragma(`PRAGMA busy_timeout = ${options.busyTimeoutMs ?? 5000}`)
    if (options.filename !== ":memory:" && !options.readonly) {
      yield* pragma(`PRAGMA journal_mode = ${options.journalMode ?? "wal"}`)
      // WAL with NORMAL sync is durable against process crashes (kill -9), which is the failure we design for.
      yield* pragma("PRAGMA synchronous = NORMAL")
    }
    if (options.foreignKeys ?? true) yield* pragma("PRAGMA foreign_keys = ON")

    const cacheSize = options.statementCacheSize ?? 200
    const cache = new Map<string, DriverStatement>()
    const prepare = (sql: string): DriverStatement => {
      let statement = cache.get(sql)
      if (statement !== undefined) {
        // Map keeps insertion order: re-inserting makes this the most recent.
        cache.delete(sql)
      } else {
        statement = driver.prepare(sql)
        if (cache.size >= cacheSize) cache.delete(cache.keys().next().value!)
      }
      cache.set(sql, statement)
      return statement
    }

    const run = (sql: string, params: ReadonlyArray<unknown>, cached: boolean) =>
      Effect.try({
        try: () => {
          const statement = cached ? prepare(sql) : driver.prepare(sql)
          if (statement.isReader) return statement.all(params)
          statement.run(params)
          return []
        },
        catch: fail("execute", "Failed to execute statement")
      })

    const values = (sql: string, params: ReadonlyArray<unknown>, cached: boolean) =>
      Effect.try({
        try: () => (cached ? prepare(sql) : driver.prepare(sql)).values(params),
        catch: fail("execute", "Failed to execute statement")
      })

    const connection: SqlConnection.Connection = {
      execute: (sql, params, transform) => withRows(run(sql, params, true), transform),
      executeRaw: (sql, params) => run(sql, params, true),
      executeStream: (sql, params, transform) => Stream.fromIterableEffect(withRows(run(sql, params, true), transform)),
      executeValues: (sql, params) => values(sql, params, true),
      executeValuesUnprepared: (sql, params) => values(sql, params, false),
      executeUnprepared: (sql, params, transform) => withRows(run(sql, params, false), transform)
    }

    const semaphore = yield* Semaphore.make(1)
    // Held until the borrower's scope closes: a transaction keeps the
    // connection to itself from BEGIN to COMMIT.
    const acquirer = Effect.as(
      Effect.acquireRelease(semaphore.take(1), () => semaphore.release(1)),
      connection
    )

    const client = yield* SqlClient.make({
      acquirer,
      compiler,
      spanAttributes: [
        ["db.system.name", "sqlite"],
        ["db.namespace", options.filename]
      ],
      transformRows,
      driver: "sqlite"
    } as SqlClient.SqlClient.MakeOptions)

    return Object.assign(client, { filename: options.filename }) as SqliteClient["Service"]
  })

/**
 * Provides both `SqliteClient` and the generic `SqlClient`.
 *
 * @category layers
 */
export const layer = (options: Options): Layer.Layer<SqliteClient | SqlClient.SqlClient, SqlError> =>
  Layer.effectContext(
    Effect.map(make(options), (client) =>
      Context.make(SqliteClient, client).pipe(Context.add(SqlClient.SqlClient, client))
    )
  ).pipe(Layer.provide(Reactivity.layer))

/**
 * Reads the file name from `AGENT_SQLITE_FILENAME`.
 *
 * @category layers
 */
export const layerConfig: Layer.Layer<SqliteClient | SqlClient.SqlClient, SqlError | Config.ConfigError> = Layer.unwrap(
  Effect.map(Config.String("AGENT_SQLITE_FILENAME"), (filename) => layer({ filename }))
)
