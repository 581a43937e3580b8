import { assert, describe, it } from "@effect/vitest"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { Context, Effect, Exit, Fiber, Layer, Scope, Stream, String as Str } from "effect"
import * as Runner from "effect/cluster/Runner"
import * as RunnerAddress from "effect/cluster/RunnerAddress"
import * as RunnerStorage from "effect/cluster/RunnerStorage"
import * as ShardId from "effect/cluster/ShardId"
import * as ShardingConfig from "effect/cluster/ShardingConfig"
import * as SqlMessageStorage from "effect/cluster/SqlMessageStorage"
import * as SqlRunnerStorage from "effect/cluster/SqlRunnerStorage"
import * as Digest from "effect/crypto/Digest"
import * as Migrator from "effect/sql/Migrator"
import { SafeIntegers, SqlClient } from "effect/sql/SqlClient"
import * as SqliteClient from "../../src/engine/SqliteClient.ts"
import { isBun } from "../../src/engine/SqliteDriver.ts"

/** A fresh directory for database files, removed when the test's scope closes. */
const tempDir = Effect.acquireRelease(
  Effect.sync(() => Fs.mkdtempSync(Path.join(Os.tmpdir(), "sqlite-client-"))),
  (dir) => Effect.sync(() => Fs.rmSync(dir, { recursive: true, force: true }))
)

const memory = SqliteClient.layer({ filename: ":memory:" })

const withTable = Effect.gen(function* () {
  const sql = yield* SqlClient
  yield* sql`CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, done INTEGER NOT NULL DEFAULT 0)`
  return sql
})

const names = (sql: SqlClient) =>
  Effect.map(sql<{ name: string }>`SELECT name FROM items ORDER BY id`, (rows) => rows.map((row) => row.name))

describe("SqliteClient", () => {
  it.effect("reports the sqlite dialect, which effect/sql and effect/cluster branch on", () =>
    Effect.gen(function* () {
      const sql = yield* SqlClient
      assert.strictEqual(sql.onDialectOrElse({ sqlite: () => "sqlite", orElse: () => "other" }), "sqlite")
      assert.strictEqual(sql.driver, isBun ? "sqlite-bun" : "sqlite-node")
      assert.strictEqual((yield* SqliteClient.SqliteClient).config.filename, ":memory:")
    }).pipe(Effect.provide(memory))
  )

  it.effect("inserts, selects, updates and deletes with the tagged template", () =>
    Effect.gen(function* () {
      const sql = yield* withTable
      const inserted = yield* sql<{ id: number; name: string }>`INSERT INTO items ${sql.insert([
        { name: "a", done: false },
        { name: "b", done: true }
      ])} RETURNING id, name`
      assert.deepStrictEqual(inserted, [
        { id: 1, name: "a" },
        { id: 2, name: "b" }
      ])
      yield* sql`UPDATE items SET ${sql.update({ done: true })} WHERE name = ${"a"}`
      assert.deepStrictEqual(yield* sql`SELECT name, done FROM items ORDER BY name`, [
        { name: "a", done: 1 },
        { name: "b", done: 1 }
      ])
      const values = yield* sql`SELECT name FROM items WHERE ${sql.in("name", ["a", "b"])} ORDER BY name`.values
      assert.deepStrictEqual(values, [["a"], ["b"]])
      assert.deepStrictEqual(yield* sql.unsafe("SELECT count(*) AS n FROM items WHERE done = ?", [1]), [{ n: 2 }])
      assert.deepStrictEqual(yield* sql`INSERT INTO items (name) VALUES (${"c"})`.raw, {
        changes: 1,
        lastInsertRowid: 3
      })
      yield* sql`DELETE FROM items WHERE name = ${"a"}`.unprepared
      assert.deepStrictEqual(yield* names(sql), ["b", "c"])
    }).pipe(Effect.provide(memory))
  )

  it.effect("renames columns both ways with transformQueryNames and transformResultNames", () =>
    Effect.gen(function* () {
      const sql = yield* SqlClient
      yield* sql`CREATE TABLE people (full_name TEXT, birth_year INTEGER)`
      yield* sql`INSERT INTO people ${sql.insert({ fullName: "Ada Lovelace", birthYear: 1815 })}`
      assert.deepStrictEqual(yield* sql`SELECT ${sql("fullName")}, birth_year FROM people`, [
        { fullName: "Ada Lovelace", birthYear: 1815 }
      ])
      assert.deepStrictEqual(yield* sql`SELECT full_name FROM people`.withoutTransform, [{ full_name: "Ada Lovelace" }])
    }).pipe(
      Effect.provide(
        SqliteClient.layer({
          filename: ":memory:",
          transformQueryNames: Str.camelToSnake,
          transformResultNames: Str.snakeToCamel
        })
      )
    )
  )

  it.effect("binds and reads big integers, blobs, booleans and dates", () =>
    Effect.gen(function* () {
      const sql = yield* SqlClient
      yield* sql`CREATE TABLE things (big INTEGER, data BLOB, flag INTEGER, at TEXT)`
      const big = 2n ** 62n + 1n
      const at = new Date("2024-05-06T07:08:09.000Z")
      yield* sql`INSERT INTO things VALUES (${big}, ${new Uint8Array([1, 2, 3])}, ${true}, ${at})`
      const [row] = yield* sql`SELECT * FROM things`.pipe(Effect.provideService(SafeIntegers, true))
      assert.strictEqual(row!.big, big)
      assert.deepStrictEqual(row!.data, new Uint8Array([1, 2, 3]))
      assert.strictEqual(row!.flag, 1n)
      assert.strictEqual(row!.at, at.toISOString())
      // Exact as text without SafeIntegers, as effect/cluster reads its snowflake ids.
      assert.deepStrictEqual(yield* sql`SELECT CAST(big AS TEXT) AS big, flag FROM things`, [
        { big: big.toString(), flag: 1 }
      ])
    }).pipe(Effect.provide(memory))
  )

  it.effect("refuses to round an integer beyond Number.MAX_SAFE_INTEGER, and reads it exactly with SafeIntegers", () =>
    Effect.gen(function* () {
      const sql = yield* SqlClient
      const error = yield* Effect.flip(sql`SELECT 9007199254740993 AS n`)
      assert.include(error.message, "too large to be represented as a JavaScript number: 9007199254740993")
      assert.deepStrictEqual(yield* sql`SELECT 9007199254740993 AS n`.pipe(Effect.provideService(SafeIntegers, true)), [
        { n: 9007199254740993n }
      ])
    }).pipe(Effect.provide(memory))
  )

  it.effect("refuses a bigint outside the 64-bit range instead of wrapping it around", () =>
    Effect.gen(function* () {
      const sql = yield* SqlClient
      yield* sql`CREATE TABLE things (big INTEGER)`
      const error = yield* Effect.flip(sql`INSERT INTO things VALUES (${2n ** 63n})`)
      assert.include(error.message, "Cannot bind 9223372036854775808 to SQLite parameter 1")
      yield* sql`INSERT INTO things VALUES (${2n ** 63n - 1n})`
      assert.deepStrictEqual(yield* sql`SELECT CAST(big AS TEXT) AS big FROM things`, [{ big: "9223372036854775807" }])
    }).pipe(Effect.provide(memory))
  )

  it.effect("reports a write's changes and rowid as bigints with SafeIntegers, numbers without", () =>
    Effect.gen(function* () {
      const sql = yield* withTable
      assert.deepStrictEqual(yield* sql`INSERT INTO items (name) VALUES (${"a"})`.raw, {
        changes: 1,
        lastInsertRowid: 1
      })
      const raw = yield* sql`INSERT INTO items (name) VALUES (${"b"})`.raw.pipe(
        Effect.provideService(SafeIntegers, true)
      )
      assert.deepStrictEqual(raw, { changes: 1n, lastInsertRowid: 2n })
    }).pipe(Effect.provide(memory))
  )

  it.effect("binds NULL to placeholders given no value, as SQLite does", () =>
    Effect.gen(function* () {
      const sql = yield* SqlClient
      assert.deepStrictEqual(yield* sql.unsafe("SELECT ? AS a, ? AS b", [1]), [{ a: 1, b: null }])
    }).pipe(Effect.provide(memory))
  )

  it.effect("refuses a parameter it cannot bind, naming it", () =>
    Effect.gen(function* () {
      const sql = yield* withTable
      const error = yield* Effect.flip(sql`INSERT INTO items (name) VALUES (${{ not: "a string" }})`)
      assert.strictEqual(error._tag, "SqlError")
      assert.include(error.message, "Cannot bind a object to SQLite parameter 1")
      assert.deepStrictEqual(yield* names(sql), [])
    }).pipe(Effect.provide(memory))
  )

  it.effect("streams rows in order, and releases the statement when the consumer stops early", () =>
    Effect.gen(function* () {
      const sql = yield* SqlClient
      yield* sql`CREATE TABLE numbers (n INTEGER)`
      yield* sql`WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < 1000)
        INSERT INTO numbers SELECT n FROM seq`
      const all = yield* Stream.runCollect(sql<{ n: number }>`SELECT n FROM numbers ORDER BY n`.stream)
      assert.strictEqual(all.length, 1000)
      assert.deepStrictEqual(all[999], { n: 1000 })
      const first = yield* Stream.runCollect(
        Stream.take(sql<{ n: number }>`SELECT n FROM numbers ORDER BY n`.stream, 3)
      )
      assert.deepStrictEqual(
        first.map((row) => row.n),
        [1, 2, 3]
      )
      // SQLite refuses to drop a table that an unfinished statement still reads.
      yield* sql`DROP TABLE numbers`
    }).pipe(Effect.provide(memory))
  )

  describe("transactions", () => {
    it.effect("commit together, and roll back together on failure", () =>
      Effect.gen(function* () {
        const sql = yield* withTable
        yield* sql.withTransaction(
          Effect.andThen(sql`INSERT INTO items (name) VALUES ('a')`, sql`INSERT INTO items (name) VALUES ('b')`)
        )
        const failed = yield* Effect.exit(
          sql.withTransaction(
            Effect.gen(function* () {
              yield* sql`INSERT INTO items (name) VALUES ('lost')`
              return yield* Effect.fail("boom")
            })
          )
        )
        assert.isTrue(Exit.isFailure(failed))
        assert.deepStrictEqual(yield* names(sql), ["a", "b"])
      }).pipe(Effect.provide(memory))
    )

    it.effect("nest as savepoints: a failed inner one undoes only its own writes", () =>
      Effect.gen(function* () {
        const sql = yield* withTable
        yield* sql.withTransaction(
          Effect.gen(function* () {
            yield* sql`INSERT INTO items (name) VALUES ('outer')`
            yield* sql.withTransaction(sql`INSERT INTO items (name) VALUES ('kept')`)
            const inner = yield* Effect.exit(
              sql.withTransaction(
                Effect.gen(function* () {
                  yield* sql`INSERT INTO items (name) VALUES ('undone')`
                  return yield* Effect.fail("inner boom")
                })
              )
            )
            assert.isTrue(Exit.isFailure(inner))
          })
        )
        assert.deepStrictEqual(yield* names(sql), ["outer", "kept"])
      }).pipe(Effect.provide(memory))
    )

    it.effect("an error after a committed savepoint leaves nothing stored", () =>
      Effect.gen(function* () {
        const sql = yield* withTable
        const failed = yield* Effect.exit(
          sql.withTransaction(
            Effect.gen(function* () {
              yield* sql`INSERT INTO items (name) VALUES ('outer')`
              yield* sql.withTransaction(sql`INSERT INTO items (name) VALUES ('inner')`)
              // A unique violation: the statement's own error, not a test failure.
              yield* sql`INSERT INTO items (name) VALUES ('outer')`
            })
          )
        )
        assert.isTrue(Exit.isFailure(failed))
        assert.deepStrictEqual(yield* names(sql), [])
      }).pipe(Effect.provide(memory))
    )

    it.effect("keep another fiber's statements out", () =>
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
        assert.isTrue(Exit.isFailure(failed))
        // Had the outsider's insert joined the transaction, the rollback would have taken it too.
        assert.deepStrictEqual(yield* names(sql), ["outsider"])
      }).pipe(Effect.provide(memory))
    )

    it.effect("from concurrent fibers run one after another (no lost updates)", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient
        yield* sql`CREATE TABLE counter (n INTEGER NOT NULL)`
        yield* sql`INSERT INTO counter VALUES (0)`
        const increment = sql.withTransaction(
          Effect.gen(function* () {
            const [row] = yield* sql<{ n: number }>`SELECT n FROM counter`
            // Another fiber would read the same n here if transactions interleaved.
            yield* Effect.yieldNow
            yield* sql`UPDATE counter SET n = ${row!.n + 1}`
          })
        )
        yield* Effect.all(
          Array.from({ length: 20 }, () => increment),
          { concurrency: "unbounded" }
        )
        assert.deepStrictEqual(yield* sql`SELECT n FROM counter`, [{ n: 20 }])
      }).pipe(Effect.provide(memory))
    )
  })

  describe("errors", () => {
    it.effect("come back as SqlError with the reason and SQLite's message", () =>
      Effect.gen(function* () {
        const sql = yield* withTable
        yield* sql`CREATE TABLE tags (item_id INTEGER NOT NULL REFERENCES items (id))`
        yield* sql`INSERT INTO items (name) VALUES ('dup')`
        const duplicate = yield* Effect.flip(sql`INSERT INTO items (name) VALUES ('dup')`)
        assert.strictEqual(duplicate.reason._tag, "UniqueViolation")
        assert.include(duplicate.message, "UNIQUE constraint failed: items.name")
        const orphan = yield* Effect.flip(sql`INSERT INTO tags (item_id) VALUES (42)`)
        assert.strictEqual(orphan.reason._tag, "ConstraintError")
        const syntax = yield* Effect.flip(sql`SELEC nonsense`)
        assert.strictEqual(syntax._tag, "SqlError")
        assert.include(syntax.message, "syntax error")
      }).pipe(Effect.provide(memory))
    )

    it.effect("a file that cannot be opened fails the layer, naming the file", () =>
      Effect.gen(function* () {
        const error = yield* Effect.flip(Layer.build(SqliteClient.layer({ filename: "/nonexistent-dir/x/y.db" })))
        assert.strictEqual(error.reason._tag, "ConnectionError")
        assert.include(error.message, "/nonexistent-dir/x/y.db")
      })
    )

    it.effect("a closed client fails with a clear error", () =>
      Effect.gen(function* () {
        const scope = yield* Scope.make()
        const context = yield* Layer.buildWithScope(memory, scope)
        const sql = Context.get(context, SqlClient)
        assert.deepStrictEqual(yield* sql`SELECT 1 AS one`, [{ one: 1 }])
        yield* Scope.close(scope, Exit.void)
        const error = yield* Effect.flip(sql`SELECT 1 AS one`)
        assert.strictEqual(error.reason._tag, "ConnectionError")
        assert.include(error.message, "is closed")
      })
    )

    it.effect("a read-only database reads, and refuses writes", () =>
      Effect.gen(function* () {
        const filename = Path.join(yield* tempDir, "ro.db")
        yield* Effect.provide(withTable, SqliteClient.layer({ filename }))
        const readonly = SqliteClient.layer({ filename, readonly: true })
        const error = yield* Effect.flip(
          Effect.provide(
            Effect.gen(function* () {
              const sql = yield* SqlClient
              assert.deepStrictEqual(yield* names(sql), [])
              return yield* sql`INSERT INTO items (name) VALUES ('no')`
            }),
            readonly
          )
        )
        assert.include(error.message, "readonly database")
      })
    )

    it.effect("a transaction holds the write lock from its start; a blocked writer fails after the busy timeout", () =>
      Effect.gen(function* () {
        const filename = Path.join(yield* tempDir, "locked.db")
        const other = yield* Layer.build(SqliteClient.layer({ filename, busyTimeout: "50 millis" }))
        const otherInsert = Effect.flatMap(SqlClient, (sql) => sql`INSERT INTO items (name) VALUES ('other')`).pipe(
          Effect.provideContext(other)
        )
        yield* Effect.gen(function* () {
          const sql = yield* withTable
          const blocked = yield* sql.withTransaction(
            Effect.gen(function* () {
              // Only a read so far: a deferred BEGIN would not hold the write lock yet,
              // the other writer would commit, and the insert below would fail.
              yield* names(sql)
              const error = yield* Effect.flip(otherInsert)
              yield* sql`INSERT INTO items (name) VALUES ('mine')`
              return error
            })
          )
          assert.strictEqual(blocked.reason._tag, "LockTimeoutError")
          assert.include(blocked.message, "database is locked")
          assert.deepStrictEqual(yield* names(sql), ["mine"])
        }).pipe(Effect.provide(SqliteClient.layer({ filename })))
      })
    )
  })

  it.effect("uses WAL on a file, and a second client sees committed writes", () =>
    Effect.gen(function* () {
      const filename = Path.join(yield* tempDir, "wal.db")
      yield* Effect.gen(function* () {
        const sql = yield* withTable
        assert.deepStrictEqual(yield* sql`PRAGMA journal_mode`, [{ journal_mode: "wal" }])
        yield* sql.withTransaction(sql`INSERT INTO items (name) VALUES ('shared')`)
        const seen = yield* Effect.provide(Effect.flatMap(SqlClient, names), SqliteClient.layer({ filename }))
        assert.deepStrictEqual(seen, ["shared"])
      }).pipe(Effect.provide(SqliteClient.layer({ filename })))
    })
  )

  it.effect("runs effect/sql migrations once", () =>
    Effect.gen(function* () {
      const sql = yield* SqlClient
      const migrate = Migrator.make({})({
        loader: Migrator.fromRecord({
          "1_create": sql`CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)`.pipe(Effect.asVoid),
          "2_seed": sql`INSERT INTO notes (body) VALUES ('hello')`.pipe(Effect.asVoid)
        })
      })
      const first = yield* migrate
      const second = yield* migrate
      assert.deepStrictEqual(first, [
        [1, "create"],
        [2, "seed"]
      ])
      assert.deepStrictEqual(second, [])
      assert.deepStrictEqual(yield* sql`SELECT body FROM notes`, [{ body: "hello" }])
    }).pipe(Effect.provide(memory))
  )

  describe("effect/cluster storage", () => {
    it.effect("SqlMessageStorage creates its tables, saves a request and its reply, and reads them back", () =>
      Effect.gen(function* () {
        const storage = yield* SqlMessageStorage.makeEncoded()
        // Beyond Number.MAX_SAFE_INTEGER, like the snowflake ids the cluster makes.
        const requestId = "7300000000000000001"
        const envelope = {
          _tag: "Request",
          requestId,
          address: { shardId: { group: "default", id: 1 }, entityType: "Agent", entityId: "a1" },
          tag: "Run",
          payload: { prompt: "hello" },
          headers: {}
        } as const
        const primaryKey = "Agent/a1/Run/1"
        const saved = yield* storage.saveEnvelope({ envelope, primaryKey, deliverAt: null })
        assert.strictEqual(saved._tag, "Success")
        const again = yield* storage.saveEnvelope({
          envelope: { ...envelope, requestId: "7300000000000000002" },
          primaryKey,
          deliverAt: null
        })
        assert.strictEqual(again._tag, "Duplicate")
        assert.strictEqual(again._tag === "Duplicate" && String(again.originalId), requestId)

        const unprocessed = yield* storage.unprocessedMessages([ShardId.toString(envelope.address.shardId)], Date.now())
        assert.strictEqual(unprocessed.length, 1)
        assert.deepStrictEqual(unprocessed[0]!.envelope, envelope)

        yield* storage.saveReply({
          _tag: "WithExit",
          requestId,
          id: "7300000000000000003",
          exit: { _tag: "Success", value: "done" }
        })
        assert.deepStrictEqual(yield* storage.repliesFor([requestId]), [
          { _tag: "WithExit", id: "7300000000000000003", requestId, exit: { _tag: "Success", value: "done" } }
        ])
        assert.deepStrictEqual(yield* storage.unprocessedMessages(["default:1"], Date.now()), [])
      }).pipe(Effect.provide([memory, Digest.layerWebCrypto]))
    )

    it.effect("SqlRunnerStorage registers a runner and takes shard locks", () =>
      Effect.gen(function* () {
        const storage = yield* RunnerStorage.RunnerStorage
        const address = RunnerAddress.make("localhost", 34431)
        yield* storage.register(Runner.make({ address, groups: ["default"], weight: 1 }), true)
        const runners = yield* storage.getRunners
        assert.deepStrictEqual(
          runners.map(([runner, healthy]) => [runner.address.port, healthy]),
          [[34431, true]]
        )
        const shards = [ShardId.make("default", 1), ShardId.make("default", 2)]
        const acquired = yield* storage.acquire(address, shards)
        assert.deepStrictEqual(acquired.map(String).toSorted(), ["default:1", "default:2"])
        const rival = yield* storage.acquire(RunnerAddress.make("elsewhere", 1), shards)
        assert.deepStrictEqual(rival, [])
      }).pipe(Effect.provide(SqlRunnerStorage.layer.pipe(Layer.provide([memory, ShardingConfig.layer()]))))
    )
  })
})
