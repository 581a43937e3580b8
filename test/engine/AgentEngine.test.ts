import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { Effect, Layer, Redacted } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import * as AgentEngine from "../../src/engine/AgentEngine.ts"
import * as SqliteClient from "../../src/engine/SqliteClient.ts"
import { conformance } from "./Conformance.ts"
import { createDatabase, dropDatabase } from "./TestDatabase.ts"

const tempDir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "agent-engine-"))
let sqliteCounter = 0

conformance("memory", () => AgentEngine.layerMemory)
conformance("sqlite", () => AgentEngine.layerSqlite({ filename: Path.join(tempDir, `run-${++sqliteCounter}.db`) }))

conformance("sqlite journal", () =>
  AgentEngine.layerJournalSqlite({ filename: Path.join(tempDir, `journal-${++sqliteCounter}.db`) })
)

let postgresUrl = ""
let journalUrl = ""
beforeAll(async () => {
  postgresUrl = await createDatabase("conformance")
  journalUrl = await createDatabase("conformance_journal")
})
afterAll(() => Promise.all([dropDatabase(postgresUrl), dropDatabase(journalUrl)]))
conformance("postgres", () => AgentEngine.layerPostgres({ url: Redacted.make(postgresUrl) }))
conformance("postgres journal", () => AgentEngine.layerJournalPostgres({ url: Redacted.make(journalUrl) }))

describe("AgentEngine.parseDatabaseUrl", () => {
  it.effect.each([
    { url: "memory", tag: "Memory" },
    { url: "sqlite:./data/agent.db", tag: "Sqlite" },
    { url: "sqlite:/var/lib/agent.db", tag: "Sqlite" },
    { url: "postgres://postgres@127.0.0.1:5432/test", tag: "Postgres" },
    { url: "postgresql://u:p@db/agents", tag: "Postgres" }
  ])("accepts $url", ({ url, tag }) =>
    Effect.gen(function* () {
      assert.strictEqual((yield* AgentEngine.parseDatabaseUrl(url))._tag, tag)
    })
  )

  it.effect.each([
    { url: "sqlite+journal:./data/agent.db", tag: "Sqlite", plain: "./data/agent.db" },
    {
      url: "postgres+journal://postgres@127.0.0.1:5432/test",
      tag: "Postgres",
      plain: "postgres://postgres@127.0.0.1:5432/test"
    },
    { url: "postgresql+journal://u:p@db/agents", tag: "Postgres", plain: "postgresql://u:p@db/agents" }
  ])("accepts $url as the journal engine on $plain", ({ url, tag, plain }) =>
    Effect.gen(function* () {
      const database = yield* AgentEngine.parseDatabaseUrl(url)
      assert.strictEqual(database._tag, tag)
      assert.strictEqual(database._tag === "Memory" ? undefined : database.engine, "journal")
      const target =
        database._tag === "Sqlite"
          ? database.filename
          : database._tag === "Postgres"
            ? Redacted.value(database.url)
            : ""
      assert.strictEqual(target, plain)
    })
  )

  it.effect("leaves the engine unset (effect/cluster) for the plain forms", () =>
    Effect.gen(function* () {
      for (const url of ["sqlite:./data/agent.db", "postgres://postgres@127.0.0.1:5432/test"]) {
        const database = yield* AgentEngine.parseDatabaseUrl(url)
        assert.isUndefined(database._tag === "Memory" ? undefined : database.engine)
      }
    })
  )

  it.effect.each([
    "",
    "sqlite:",
    "sqlite::memory:",
    "mysql://localhost/db",
    "./agent.db",
    "postgres://",
    "sqlite+journal:",
    "sqlite+journal::memory:",
    "postgres+journal://",
    "sqlite+cluster:./agent.db"
  ])("rejects %j with the accepted forms", (url) =>
    Effect.gen(function* () {
      const error = yield* Effect.flip(AgentEngine.parseDatabaseUrl(url))
      assert.strictEqual(error._tag, "InvalidDatabaseUrl")
      assert.include(error.message, "sqlite:<path>")
      assert.include(error.message, "postgres://")
    })
  )

  it.effect("keeps the Postgres password redacted", () =>
    Effect.gen(function* () {
      const database = yield* AgentEngine.parseDatabaseUrl("postgres://u:hunter2@db/agents")
      assert.notInclude(String(database._tag === "Postgres" ? database.url : ""), "hunter2")
    })
  )
})

/** Starts the engine the switch picks, stops it, then lists the tables it made in the file. */
const tablesOf = (database: AgentEngine.Database & { readonly _tag: "Sqlite" }) =>
  Effect.andThen(
    Effect.scoped(Layer.build(AgentEngine.layer(database))),
    Effect.flatMap(
      SqlClient,
      (sql) => sql<{ readonly name: string }>`SELECT name FROM sqlite_master WHERE type = 'table'`
    ).pipe(
      Effect.map((rows) => rows.map((row) => row.name)),
      Effect.provide(SqliteClient.layer({ filename: database.filename }))
    )
  )

describe("AgentEngine.layer", () => {
  it.effect("runs the journal engine for a database that asks for it, and effect/cluster otherwise", () =>
    Effect.gen(function* () {
      const journal = yield* tablesOf({
        _tag: "Sqlite",
        filename: Path.join(tempDir, "switch-journal.db"),
        engine: "journal"
      })
      assert.include(journal, "journal_activities")
      assert.notInclude(journal, "cluster_messages")
      const cluster = yield* tablesOf({ _tag: "Sqlite", filename: Path.join(tempDir, "switch-cluster.db") })
      assert.include(cluster, "cluster_messages")
      assert.notInclude(cluster, "journal_activities")
    })
  )
})

describe("AgentEngine.layerSqlite", () => {
  it.effect.each([
    { engine: "cluster", layer: AgentEngine.layerSqlite },
    { engine: "journal", layer: AgentEngine.layerJournalSqlite }
  ])("refuses a second engine on the same file ($engine)", ({ engine, layer }) =>
    Effect.gen(function* () {
      const filename = Path.join(tempDir, `locked-${engine}.db`)
      yield* Layer.build(layer({ filename }))
      const error = yield* Effect.flip(Layer.build(layer({ filename })))
      assert.strictEqual((error as AgentEngine.DatabaseLocked)._tag, "DatabaseLocked")
      assert.include((error as AgentEngine.DatabaseLocked).message, `${process.pid}`)
    }).pipe(Effect.scoped)
  )

  it.effect("takes over the lock of a process that died", () =>
    Effect.gen(function* () {
      const filename = Path.join(tempDir, "stale.db")
      // A pid that cannot be alive: above the kernel's pid_max.
      Fs.writeFileSync(`${filename}.lock`, `${Os.hostname()}:99999999`)
      yield* Layer.build(AgentEngine.layerSqlite({ filename }))
      assert.strictEqual(Fs.readFileSync(`${filename}.lock`, "utf8"), `${Os.hostname()}:${process.pid}`)
    }).pipe(Effect.scoped)
  )

  it.effect("releases the lock when the engine stops", () =>
    Effect.gen(function* () {
      const filename = Path.join(tempDir, "released.db")
      yield* Effect.scoped(Layer.build(AgentEngine.layerSqlite({ filename })))
      assert.isFalse(Fs.existsSync(`${filename}.lock`))
      yield* Layer.build(AgentEngine.layerSqlite({ filename }))
    }).pipe(Effect.scoped)
  )
})
