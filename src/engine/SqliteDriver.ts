/**
 * The seam between `SqliteClient` and the runtime's built-in SQLite driver:
 * `node:sqlite` on Node, `bun:sqlite` on Bun.
 *
 * Both are synchronous and nearly alike; this module irons out the
 * differences (parameter binding, big integers, row shapes, how to ask for
 * arrays) so the client above it is written once and behaves the same on
 * both runtimes. Each driver is loaded with a dynamic import, so Node never
 * resolves `bun:sqlite` and Bun never resolves `node:sqlite`.
 *
 * @since 0.1.0
 */
import type { DatabaseSync, StatementSync } from "node:sqlite"

/**
 * A row as a plain object (never `node:sqlite`'s null-prototype ones, so rows
 * look the same on both runtimes and behave like ordinary objects).
 *
 * @category models
 */
export type Row = Record<string, unknown>

/**
 * What a write reports. Both fields are bigints when big integers were asked for.
 *
 * @category models
 */
export interface RunResult {
  readonly changes: number | bigint
  readonly lastInsertRowid: number | bigint
}

/**
 * A prepared statement. `bigints` reads INTEGER columns as `bigint`, for
 * values beyond `Number.MAX_SAFE_INTEGER` (cluster snowflake ids).
 *
 * @category models
 */
export interface Statement {
  /** A query, or a write with `RETURNING`: it yields rows. */
  readonly returnsRows: boolean
  readonly all: (params: ReadonlyArray<unknown>, bigints: boolean) => Array<Row>
  readonly values: (params: ReadonlyArray<unknown>, bigints: boolean) => Array<Array<unknown>>
  readonly run: (params: ReadonlyArray<unknown>, bigints: boolean) => RunResult
  readonly iterate: (params: ReadonlyArray<unknown>, bigints: boolean) => Iterator<Row>
}

/**
 * An open database connection.
 *
 * @category models
 */
export interface Database {
  /** `SqlClient.driver`, named as Effect names its drivers. */
  readonly driver: "sqlite-node" | "sqlite-bun"
  readonly prepare: (sql: string) => Statement
  /** Runs SQL without parameters or results (PRAGMAs). */
  readonly exec: (sql: string) => void
  readonly isTransaction: () => boolean
  readonly close: () => void
}

/**
 * Whether this process runs on Bun.
 *
 * @category runtime
 */
export const isBun: boolean = typeof (globalThis as { readonly Bun?: unknown }).Bun !== "undefined"

/**
 * Opens `filename` (or `":memory:"`) with the runtime's driver. Throws the
 * driver's error when the file cannot be opened.
 *
 * @category constructors
 */
export const open = (options: { readonly filename: string; readonly readonly: boolean }): Promise<Database> =>
  isBun ? openBun(options) : openNode(options)

// ----------------------------------------------------------------------------
// parameters
// ----------------------------------------------------------------------------

const minInt64 = -(2n ** 63n)
const maxInt64 = 2n ** 63n - 1n

// Both drivers read an object argument as named parameters: a Date would
// silently bind NULL and a JSON object would fail with a confusing message.
// Convert what has an obvious SQLite form and refuse the rest by name.
const bindable = (value: unknown, index: number): unknown => {
  switch (typeof value) {
    case "string":
    case "number":
      return value
    case "bigint":
      // bun:sqlite would wrap such a value around instead of refusing it.
      if (value < minInt64 || value > maxInt64) {
        throw new RangeError(
          `Cannot bind ${value} to SQLite parameter ${index + 1}: it is outside the 64-bit integer range`
        )
      }
      return value
    case "boolean":
      return value ? 1 : 0
    case "undefined":
      return null
    case "object":
      if (value === null || ArrayBuffer.isView(value)) return value
      if (value instanceof Date) return value.toISOString()
  }
  const kind = value === null ? "null" : Array.isArray(value) ? "an array" : `a ${typeof value}`
  throw new TypeError(
    `Cannot bind ${kind} to SQLite parameter ${index + 1}: use a string, number, bigint, boolean, null, ` +
      `Date or Uint8Array (JSON.stringify objects and arrays)`
  )
}

const bind = (params: ReadonlyArray<unknown>): Array<any> => params.map(bindable)

// ----------------------------------------------------------------------------
// rows
// ----------------------------------------------------------------------------

// The driver's row iterator with each row converted; `return` still reaches
// the driver, which resets the statement when a consumer stops early.
const mapRows = (rows: Iterator<Row>, f: (row: Row) => Row): Iterator<Row> => ({
  next: () => {
    const next = rows.next()
    return next.done ? next : { done: false, value: f(next.value) }
  },
  return: (value?: unknown) => rows.return?.(value) ?? { done: true, value: undefined }
})

// ----------------------------------------------------------------------------
// node:sqlite
// ----------------------------------------------------------------------------

const plainRow = (row: Row): Row => ({ ...row })

const nodeStatement = (statement: StatementSync): Statement => {
  let bigints = false
  const readBigInts = (enabled: boolean) => {
    if (enabled !== bigints) {
      statement.setReadBigInts(enabled)
      bigints = enabled
    }
  }
  return {
    returnsRows: statement.columns().length > 0,
    all: (params, enabled) => {
      readBigInts(enabled)
      return (statement.all(...bind(params)) as Array<Row>).map(plainRow)
    },
    values: (params, enabled) => {
      readBigInts(enabled)
      // Synchronous, so nobody else can see the statement while it returns arrays.
      statement.setReturnArrays(true)
      try {
        return statement.all(...bind(params)) as unknown as Array<Array<unknown>>
      } finally {
        statement.setReturnArrays(false)
      }
    },
    run: (params, enabled) => {
      readBigInts(enabled)
      const { changes, lastInsertRowid } = statement.run(...bind(params))
      return { changes, lastInsertRowid }
    },
    iterate: (params, enabled) => {
      readBigInts(enabled)
      return mapRows(statement.iterate(...bind(params)) as Iterator<Row>, plainRow)
    }
  }
}

const openNode = async (options: { readonly filename: string; readonly readonly: boolean }): Promise<Database> => {
  const sqlite = await import("node:sqlite")
  const db: DatabaseSync = new sqlite.DatabaseSync(options.filename, { readOnly: options.readonly })
  return {
    driver: "sqlite-node",
    prepare: (sql) => nodeStatement(db.prepare(sql)),
    exec: (sql) => db.exec(sql),
    isTransaction: () => db.isTransaction,
    close: () => {
      if (db.isOpen) db.close()
    }
  }
}

// ----------------------------------------------------------------------------
// bun:sqlite
// ----------------------------------------------------------------------------

// The part of bun:sqlite we use (tested with Bun 1.4.5); the project does not depend on bun-types.
interface BunStatement {
  readonly columnNames: ReadonlyArray<string>
  readonly paramsCount: number
  all(...params: Array<unknown>): Array<Row>
  values(...params: Array<unknown>): Array<Array<unknown>> | null
  run(...params: Array<unknown>): RunResult
  iterate(...params: Array<unknown>): Iterator<Row>
}

interface BunDatabase {
  readonly inTransaction: boolean
  prepare(sql: string): BunStatement
  exec(sql: string): unknown
  close(): void
}

// The database is opened with safe integers, so INTEGER values arrive as
// bigints whatever the caller asked for. Without them, bun:sqlite would round
// a value beyond Number.MAX_SAFE_INTEGER where node:sqlite refuses to read
// it; converting here gives the same numbers and the same refusal.
const toNumber = (value: bigint): number => {
  if (value > Number.MAX_SAFE_INTEGER || value < Number.MIN_SAFE_INTEGER) {
    throw new RangeError(`Value is too large to be represented as a JavaScript number: ${value}`)
  }
  return Number(value)
}

const withNumbers = <A extends Row | Array<unknown>>(row: A, bigints: boolean): A => {
  if (bigints) return row
  const fields = row as Record<string, unknown>
  for (const key in fields) {
    const value = fields[key]
    if (typeof value === "bigint") fields[key] = toNumber(value)
  }
  return row
}

const bunStatement = (statement: BunStatement): Statement => {
  // bun:sqlite refuses fewer values than placeholders; node:sqlite, like
  // SQLite itself, leaves the rest NULL.
  const bound = (params: ReadonlyArray<unknown>) => {
    const values = bind(params)
    while (values.length < statement.paramsCount) values.push(null)
    return values
  }
  return {
    returnsRows: statement.columnNames.length > 0,
    all: (params, bigints) => statement.all(...bound(params)).map((row) => withNumbers(row, bigints)),
    values: (params, bigints) => (statement.values(...bound(params)) ?? []).map((row) => withNumbers(row, bigints)),
    run: (params, bigints) => {
      // With safe integers, bun:sqlite reports changes as a number and lastInsertRowid as a bigint.
      const { changes, lastInsertRowid } = statement.run(...bound(params))
      return bigints
        ? { changes: BigInt(changes), lastInsertRowid: BigInt(lastInsertRowid) }
        : { changes: Number(changes), lastInsertRowid: Number(lastInsertRowid) }
    },
    iterate: (params, bigints) => mapRows(statement.iterate(...bound(params)), (row) => withNumbers(row, bigints))
  }
}

const openBun = async (options: { readonly filename: string; readonly readonly: boolean }): Promise<Database> => {
  // A specifier in a variable keeps Node, TypeScript and Vite from resolving bun:sqlite.
  const specifier = "bun:sqlite"
  const sqlite = (await import(/* @vite-ignore */ specifier)) as {
    readonly Database: new (filename: string, options: object) => BunDatabase
  }
  const db = new sqlite.Database(
    options.filename,
    options.readonly ? { readonly: true, safeIntegers: true } : { readwrite: true, create: true, safeIntegers: true }
  )
  return {
    driver: "sqlite-bun",
    prepare: (sql) => bunStatement(db.prepare(sql)),
    exec: (sql) => void db.exec(sql),
    isTransaction: () => db.inTransaction,
    close: () => db.close()
  }
}
