import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { Effect, Layer, Redacted } from "effect"
import * as AgentEngine from "../../src/engine/AgentEngine.ts"
import { conformance } from "./Conformance.ts"
import { createDatabase, dropDatabase } from "./TestDatabase.ts"

const tempDir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "agent-engine-"))
let sqliteCounter = 0

conformance("memory", () => AgentEngine.layerMemory)
conformance("sqlite", () => AgentEngine.layerSqlite({ filename: Path.join(tempDir, `run-${++sqliteCounter}.db`) }))

let postgresUrl = ""
beforeAll(async () => {
  postgresUrl = await createDatabase("conformance")
})
afterAll(() => dropDatabase(postgresUrl))
conformance("postgres", () => AgentEngine.layerPostgres({ url: Redacted.make(postgresUrl) }))

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

  it.effect.each(["", "sqlite:", "sqlite::memory:", "mysql://localhost/db", "./agent.db", "postgres://"])(
    "rejects %j with the accepted forms",
    (url) =>
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

describe("AgentEngine.layerSqlite", () => {
  it.effect("refuses a second engine on the same file", () =>
    Effect.gen(function* () {
      const filename = Path.join(tempDir, "locked.db")
      yield* Layer.build(AgentEngine.layerSqlite({ filename }))
      const error = yield* Effect.flip(Layer.build(AgentEngine.layerSqlite({ filename })))
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
