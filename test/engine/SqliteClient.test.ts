import { assert, describe, it } from "@effect/vitest"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { Effect, Fiber, Layer } from "effect"
import * as SqlMessageStorage from "effect/cluster/SqlMessageStorage"
import * as ShardingConfig from "effect/cluster/ShardingConfig"
import * as Digest from "effect/crypto/Digest"
import * as Migrator from "effect/sql/Migrator"
import { SqlClient } from "effect/sql/SqlClient"
import * as SqliteClient from "../../src/engine/SqliteClient.ts"

const tempFile = () => Path.join(Fs.mkdtempSync(Path.join(Os.tmpdir(), "sqlite-client-")), "test.db")

const withTable = Effect.gen(function* () {
  const sql = yield* SqlClient
  yield* sql`CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, done INTEGER NOT NULL DEFAULT 0)`
  return sql
})

const memory = SqliteClient.layer({ filename: ":memory:" })

describe("SqliteClient", () => {
  it.effect("inserts, selects, updates and deletes with the tagged template", () =>
    Effect.gen(function* () {
      const sql = yield* withTable
      const inserted = yield* sql`INSERT INTO items ${sql.insert([
        { name: "a", done: false },
        { name: "b", done: true }
      ])} RETURNING id, name`
      assert.deepStrictEqual(
        inserted.map((r) => r.name),
        ["a", "b"]
      )
      yield* sql`UPDATE items SET done = ${true} WHERE name = ${"a"}`
      const rows = yield* sql<{ name: string; done: number }>`SELECT name, done FROM items ORDER BY name`
      // Rows come straight from the driver (null-prototype objects on node:sqlite).
      assert.deepStrictEqual(
        rows.map((row) => ({ ...row })),
        [
          { name: "a", done: 1 },
          { name: "b", done: 1 }
        ]
      )
      const values = yield* sql`SELECT name FROM items WHERE name IN ${sql.in(["a", "b"])} ORDER BY name`.values
      assert.deepStrictEqual(values, [["a"], ["b"]])
      yield* sql`DELETE FROM items WHERE name = ${"a"}`
      assert.strictEqual((yield* sql`SELECT count(*) AS n FROM items`)[0]!.n, 1)
    }).pipe(Effect.provide(memory))
  )

  it.effect("rolls back a failed transaction, and a failed savepoint alone", () =>
    Effect.gen(function* () {
      const sql = yield* withTable
      const failed = yield* Effect.exit(
        sql.withTransaction(
          Effect.gen(function* () {
            yield* sql`INSERT INTO items (name) VALUES ('lost')`
            return yield* Effect.fail("boom")
          })
        )
      )
      assert.strictEqual(failed._tag, "Failure")
      assert.strictEqual((yield* sql`SELECT count(*) AS n FROM items`)[0]!.n, 0)

      yield* sql.withTransaction(
        Effect.gen(function* () {
          yield* sql`INSERT INTO items (name) VALUES ('outer')`
          yield* Effect.exit(
            sql.withTransaction(
              Effect.gen(function* () {
                yield* sql`INSERT INTO items (name) VALUES ('inner')`
                return yield* Effect.fail("inner boom")
              })
            )
          )
        })
      )
      assert.deepStrictEqual(
        (yield* sql`SELECT name FROM items`).map((r) => r.name),
        ["outer"]
      )
    }).pipe(Effect.provide(memory))
  )

  it.effect("keeps another fiber's statements out of a running transaction", () =>
    Effect.gen(function* () {
      const sql = yield* withTable
      const outsider = yield* Effect.forkChild(
        Effect.andThen(Effect.yieldNow, sql`INSERT INTO items (name) VALUES ('outsider')`)
      )
      const failed = yield* Effect.exit(
        sql.withTransaction(
          Effect.gen(function* () {
            yield* sql`INSERT INTO items (name) VALUES ('inside')`
            // Give the outsider every chance to run while the transaction is open.
            for (let i = 0; i < 10; i++) yield* Effect.yieldNow
            return yield* Effect.fail("rollback")
          })
        )
      )
      yield* Fiber.join(outsider)
      assert.strictEqual(failed._tag, "Failure")
      // Had the outsider's insert joined the transaction, the rollback would have taken it too.
      assert.deepStrictEqual(
        (yield* sql`SELECT name FROM items`).map((r) => r.name),
        ["outsider"]
      )
    }).pipe(Effect.provide(memory))
  )

  it.effect("reports failures as SqlError with the reason", () =>
    Effect.gen(function* () {
      const sql = yield* withTable
      yield* sql`INSERT INTO items (name) VALUES ('dup')`
      const duplicate = yield* Effect.flip(sql`INSERT INTO items (name) VALUES ('dup')`)
      assert.strictEqual(duplicate._tag, "SqlError")
      assert.strictEqual(duplicate.reason._tag, "UniqueViolation")
      const syntax = yield* Effect.flip(sql`SELEC nonsense`)
      assert.strictEqual(syntax._tag, "SqlError")
    }).pipe(Effect.provide(memory))
  )

  it.effect("uses WAL on a file, and a second client sees committed writes", () => {
    const filename = tempFile()
    return Effect.gen(function* () {
      const sql = yield* withTable
      assert.strictEqual((yield* sql`PRAGMA journal_mode`)[0]!.journal_mode, "wal")
      yield* sql`INSERT INTO items (name) VALUES ('shared')`
      const seen = yield* Effect.provide(
        Effect.flatMap(SqlClient, (other) => other`SELECT name FROM items`),
        SqliteClient.layer({ filename })
      )
      assert.deepStrictEqual(
        seen.map((r) => r.name),
        ["shared"]
      )
    }).pipe(Effect.provide(SqliteClient.layer({ filename })))
  })

  it.effect("fails to open a database it cannot create, with a clear error", () =>
    Effect.gen(function* () {
      const error = yield* Effect.flip(Layer.build(SqliteClient.layer({ filename: "/nonexistent-dir/x/y.db" })))
      assert.strictEqual(error._tag, "SqlError")
      assert.include(error.message, "/nonexistent-dir/x/y.db")
    }).pipe(Effect.scoped)
  )

  it.effect("runs migrations once", () =>
    Effect.gen(function* () {
      const sql = yield* SqlClient
      const run = Migrator.make({})({
        loader: Migrator.fromRecord({
          "1_create": sql`CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)`.pipe(Effect.asVoid),
          "2_seed": sql`INSERT INTO notes (body) VALUES ('hello')`.pipe(Effect.asVoid)
        })
      })
      const first = yield* run
      const second = yield* run
      assert.deepStrictEqual(
        first.map(([id, name]) => `${id}_${name}`),
        ["1_create", "2_seed"]
      )
      assert.deepStrictEqual(second, [])
      assert.strictEqual((yield* sql`SELECT count(*) AS n FROM notes`)[0]!.n, 1)
    }).pipe(Effect.provide(memory))
  )

  it.effect("carries effect/cluster's SQL message storage", () =>
    Effect.gen(function* () {
      const sql = yield* SqlClient
      const tables = yield* sql<{ name: string }>`SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name`
      assert.includeMembers(
        tables.map((t) => t.name),
        ["cluster_messages", "cluster_replies"]
      )
    }).pipe(
      Effect.provide(
        SqlMessageStorage.layer.pipe(
          Layer.provideMerge(memory),
          Layer.provide([ShardingConfig.layer(), Digest.layerWebCrypto])
        )
      )
    )
  )
})
