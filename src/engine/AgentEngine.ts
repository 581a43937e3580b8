/**
 * The workflow engines behind one switch.
 *
 * - `memory`: `WorkflowEngine.layerMemory`, for tests and development.
 * - `sqlite:<path>`: the embedded default. `effect/cluster`'s
 *   `ClusterWorkflowEngine` on a `SingleRunner`, with message and runner
 *   storage in one SQLite file; survives `kill -9`.
 * - `postgres://…`: the same engine on Postgres, for several runner processes
 *   sharing one database.
 * - `sqlite+journal:<path>`, `postgres+journal://…`: our `JournalEngine`, one
 *   process per database, one write per completed step (not the default).
 *
 * The cluster's defaults are tuned for services that exchange messages all
 * day; agents wait on people and want to resume at once. What we change, and
 * why, is in `agentSharding`.
 *
 * @since 0.1.0
 */
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { NodeClusterSocket } from "@effect/platform-node"
import { PgClient } from "@effect/sql-pg"
import { Config, Duration, Effect, Layer, Option, Redacted, Schema } from "effect"
import * as ClusterWorkflowEngine from "effect/cluster/ClusterWorkflowEngine"
import type * as MessageStorage from "effect/cluster/MessageStorage"
import * as RunnerAddress from "effect/cluster/RunnerAddress"
import type * as Sharding from "effect/cluster/Sharding"
import type * as ShardingConfig from "effect/cluster/ShardingConfig"
import * as SingleRunner from "effect/cluster/SingleRunner"
import * as Digest from "effect/crypto/Digest"
import { SqlClient } from "effect/sql/SqlClient"
import * as WorkflowEngine from "effect/workflow/WorkflowEngine"
import * as JournalEngine from "./JournalEngine.ts"
import * as SqliteClient from "./SqliteClient.ts"

/**
 * The database URL is not one of the accepted forms.
 *
 * @category errors
 */
export class InvalidDatabaseUrl extends Schema.TaggedError<InvalidDatabaseUrl>()("InvalidDatabaseUrl", {
  url: Schema.String
}) {
  override get message(): string {
    return (
      `AGENT_DATABASE_URL "${this.url}" is not valid. Accepted forms: "memory", "sqlite:<path>" ` +
      `(e.g. sqlite:./data/agent.db), "postgres://user@host:port/database", and the journal engine's ` +
      `"sqlite+journal:<path>" and "postgres+journal://user@host:port/database"`
    )
  }
}

/**
 * Another live process already runs an engine on this SQLite file. Two
 * single runners on one file would both claim every shard and run the same
 * workflows twice.
 *
 * @category errors
 */
export class DatabaseLocked extends Schema.TaggedError<DatabaseLocked>()("DatabaseLocked", {
  filename: Schema.String,
  lockFile: Schema.String,
  holder: Schema.String
}) {
  override get message(): string {
    return (
      `The SQLite database ${this.filename} is in use by ${this.holder}. ` +
      `Stop that process, or point AGENT_DATABASE_URL at another file. ` +
      `If no such process exists, delete ${this.lockFile}.`
    )
  }
}

/**
 * Another process already holds the journal engine's lock on this Postgres
 * database. The journal engine keeps its runs' state in one process; two of
 * them on one database would run the same workflows twice.
 *
 * @category errors
 */
export class DatabaseInUse extends Schema.TaggedError<DatabaseInUse>()("DatabaseInUse", {
  database: Schema.String,
  holder: Schema.String
}) {
  override get message(): string {
    return (
      `The journal engine on Postgres database ${this.database} is already running in ${this.holder}. ` +
      `It serves one process per database: stop that process, or use AgentEngine.layerPostgresCluster ` +
      `for several runners.`
    )
  }
}

/**
 * Which engine runs on a database: `effect/cluster`'s `ClusterWorkflowEngine`
 * (the default) or our single-process `JournalEngine`.
 *
 * @category models
 */
export type EngineKind = "cluster" | "journal"

/**
 * Where the engine keeps its state, and (for SQL databases) which engine.
 *
 * @category models
 */
export type Database =
  | { readonly _tag: "Memory" }
  | { readonly _tag: "Sqlite"; readonly filename: string; readonly engine?: EngineKind | undefined }
  | { readonly _tag: "Postgres"; readonly url: Redacted.Redacted<string>; readonly engine?: EngineKind | undefined }

/**
 * Reads `memory`, `sqlite:<path>` or `postgres://…`; `sqlite+journal:<path>`
 * and `postgres+journal://…` select the journal engine on the same databases.
 *
 * @category parsing
 */
export const parseDatabaseUrl = (url: string): Effect.Effect<Database, InvalidDatabaseUrl> => {
  const trimmed = url.trim()
  if (trimmed === "memory") return Effect.succeed({ _tag: "Memory" })
  const sqlite = /^sqlite(\+journal)?:/.exec(trimmed)
  if (sqlite !== null) {
    const filename = trimmed.slice(sqlite[0].length).replace(/^\/\/(?=\/)/, "")
    if (filename.length === 0 || filename === ":memory:") return Effect.fail(new InvalidDatabaseUrl({ url }))
    return Effect.succeed(
      sqlite[1] === undefined ? { _tag: "Sqlite", filename } : { _tag: "Sqlite", filename, engine: "journal" }
    )
  }
  const postgres = /^(postgres(?:ql)?)(\+journal)?(:\/\/[^/]+.*)$/.exec(trimmed)
  if (postgres !== null) {
    const plain = Redacted.make(`${postgres[1]}${postgres[3]}`)
    return Effect.succeed(
      postgres[2] === undefined ? { _tag: "Postgres", url: plain } : { _tag: "Postgres", url: plain, engine: "journal" }
    )
  }
  return Effect.fail(new InvalidDatabaseUrl({ url }))
}

/**
 * Sharding settings for agents, over `effect/cluster`'s defaults:
 *
 * - `entityMessagePollInterval` 10 s → 500 ms: a message stored by another
 *   process (a client-only process completing an approval) is picked up within
 *   half a second instead of ten.
 * - a fixed `runnerAddress`: a single runner that restarts under the same
 *   address re-acquires its shard locks at once; under a new one it would wait
 *   for the old locks to expire (~35 s).
 *
 * @category configuration
 */
export const agentSharding: Partial<ShardingConfig.ShardingConfig["Service"]> = {
  entityMessagePollInterval: Duration.millis(500),
  runnerAddress: Option.some(RunnerAddress.make("localhost", 34431))
}

/**
 * `WorkflowEngine.layerMemory`: nothing survives the process.
 *
 * @category layers
 */
export const layerMemory: Layer.Layer<WorkflowEngine.WorkflowEngine> = WorkflowEngine.layerMemory

const isAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    // EPERM: the process exists but belongs to someone else.
    return (error as NodeJS.ErrnoException).code === "EPERM"
  }
}

/**
 * Takes `<file>.lock` for the life of the scope. The file holds the owner's
 * pid; a lock whose owner is dead (after `kill -9`) is taken over.
 */
const lockFile = (filename: string): Effect.Effect<void, DatabaseLocked, import("effect").Scope.Scope> => {
  const lockPath = `${filename}.lock`
  const owner = `${Os.hostname()}:${process.pid}`
  const tryCreate = () => {
    try {
      Fs.writeFileSync(lockPath, owner, { flag: "wx", mode: 0o600 })
      return true
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "EEXIST") return false
      throw error
    }
  }
  return Effect.acquireRelease(
    Effect.suspend(() => {
      for (let attempt = 0; attempt < 2; attempt++) {
        if (tryCreate()) return Effect.void
        const holder = Fs.readFileSync(lockPath, "utf8").trim()
        const [host, pidText] = holder.split(":")
        const pid = Number(pidText)
        if (host === Os.hostname() && Number.isInteger(pid) && !isAlive(pid)) {
          // Stale: its owner died. Removing it and creating anew with `wx`
          // means only one of two racing starters wins.
          Fs.rmSync(lockPath, { force: true })
          continue
        }
        return Effect.fail(new DatabaseLocked({ filename, lockFile: lockPath, holder }))
      }
      return Effect.fail(
        new DatabaseLocked({ filename, lockFile: lockPath, holder: "a process that keeps retaking it" })
      )
    }),
    () =>
      Effect.sync(() => {
        if (Fs.existsSync(lockPath) && Fs.readFileSync(lockPath, "utf8").trim() === owner) Fs.rmSync(lockPath)
      })
  )
}

const clusterEngine = (sharding: Partial<ShardingConfig.ShardingConfig["Service"]> | undefined) =>
  ClusterWorkflowEngine.layer.pipe(
    Layer.provideMerge(SingleRunner.layer({ shardingConfig: { ...agentSharding, ...sharding }, runnerStorage: "sql" })),
    Layer.provide(Digest.layerWebCrypto)
  )

/** The SQLite file for one engine process: its directory created, its lock taken, then the client. */
const sqliteFile = (filename: string): Layer.Layer<SqlClient | SqliteClient.SqliteClient, unknown> =>
  Layer.unwrap(
    Effect.gen(function* () {
      yield* Effect.sync(() => Fs.mkdirSync(Path.dirname(Path.resolve(filename)), { recursive: true }))
      yield* lockFile(filename)
      return SqliteClient.layer({ filename })
    })
  )

/**
 * The embedded engine: one process, one SQLite file.
 *
 * @category layers
 */
export const layerSqlite = (options: {
  readonly filename: string
  readonly sharding?: Partial<ShardingConfig.ShardingConfig["Service"]>
}): Layer.Layer<WorkflowEngine.WorkflowEngine | SqlClient | SqliteClient.SqliteClient, unknown> =>
  clusterEngine(options.sharding).pipe(Layer.provideMerge(sqliteFile(options.filename)))

/**
 * The journal engine on one SQLite file: one write per completed step. Same
 * `<file>.lock` guard as `layerSqlite`.
 *
 * @category layers
 */
export const layerJournalSqlite = (options: {
  readonly filename: string
}): Layer.Layer<WorkflowEngine.WorkflowEngine | SqlClient | SqliteClient.SqliteClient, unknown> =>
  JournalEngine.layer.pipe(Layer.provideMerge(sqliteFile(options.filename)))

// The advisory lock that keeps a second journal engine off a Postgres database
// (two int4 keys: "effect-claude-agent", "JournalEngine").
const journalLockKeys = [0x45434147, 0x4a4e4c] as const

/**
 * Holds a session-level advisory lock on a connection of its own for the life
 * of the scope. Postgres drops it when the connection ends, so the lock of a
 * process killed with SIGKILL is free again as soon as its connections close.
 */
const postgresJournalLock = Effect.gen(function* () {
  const sql = yield* SqlClient
  const connection = yield* sql.reserve
  const [classId, objId] = journalLockKeys
  const [taken] = yield* connection.executeUnprepared(
    `SELECT pg_try_advisory_lock(${classId}, ${objId}) AS locked, current_database() AS database`,
    [],
    undefined
  )
  if (taken?.locked !== true) {
    const holders = yield* connection.executeUnprepared(
      `SELECT a.pid, a.client_addr::text AS addr FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
       WHERE l.locktype = 'advisory' AND l.granted AND l.classid = ${classId} AND l.objid = ${objId} AND l.objsubid = 2`,
      [],
      undefined
    )
    const holder = holders[0]
    return yield* new DatabaseInUse({
      database: String(taken?.database ?? "?"),
      holder:
        holder === undefined
          ? "another process"
          : `Postgres backend ${holder.pid} (client ${holder.addr ?? "local socket"})`
    })
  }
  yield* Effect.addFinalizer(() =>
    Effect.ignore(connection.executeUnprepared(`SELECT pg_advisory_unlock(${classId}, ${objId})`, [], undefined))
  )
})

/**
 * The journal engine on Postgres, for one process: one write per completed
 * step. A second process on the same database fails with `DatabaseInUse`; for
 * several runners use `layerPostgresCluster`.
 *
 * @category layers
 */
export const layerJournalPostgres = (options: {
  readonly url: Redacted.Redacted<string>
}): Layer.Layer<WorkflowEngine.WorkflowEngine | SqlClient, unknown> =>
  JournalEngine.layer.pipe(
    Layer.provide(Layer.effectDiscard(postgresJournalLock)),
    Layer.provideMerge(PgClient.layer({ url: options.url }))
  )

/**
 * The engine on Postgres. Several processes may run it against one database:
 * `effect/cluster` spreads the shards among them.
 *
 * @category layers
 */
export const layerPostgres = (options: {
  readonly url: Redacted.Redacted<string>
  readonly sharding?: Partial<ShardingConfig.ShardingConfig["Service"]>
}): Layer.Layer<WorkflowEngine.WorkflowEngine | SqlClient, unknown> =>
  clusterEngine(options.sharding).pipe(Layer.provideMerge(PgClient.layer({ url: options.url })))

/**
 * Cluster settings for several runners on one Postgres, over `agentSharding`:
 *
 * - `runnerHealthCheckInterval` 1 min → 1 s: a runner takes over the shards of
 *   a dead one once a health check has found it dead.
 * - `shardLockExpiration` 35 s → 4 s, `shardLockRefreshInterval` 10 s → 1 s:
 *   the health check is a cluster singleton, and when the dead runner was the
 *   one running it, nobody finds it dead; the others see it gone only when
 *   its heartbeat is older than `shardLockExpiration`. With the defaults that
 *   made one failover in five take over 30 s. The price: a runner frozen for
 *   more than 4 s (a long GC pause) loses its shards while it still runs.
 * - `refreshAssignmentsInterval` 3 s → 1 s, for the same reason.
 *
 * @category configuration
 */
export const agentClusterSharding: Partial<ShardingConfig.ShardingConfig["Service"]> = {
  entityMessagePollInterval: Duration.millis(500),
  runnerHealthCheckInterval: Duration.seconds(1),
  shardLockExpiration: Duration.seconds(4),
  shardLockRefreshInterval: Duration.seconds(1),
  refreshAssignmentsInterval: Duration.seconds(1)
}

/**
 * One process of a multi-runner deployment on Postgres. With `runner`, the
 * process hosts workflows and listens on `runner.port` for the other runners;
 * without it, it is a client that starts, polls and resumes runs hosted
 * elsewhere. Every runner needs its own address.
 *
 * @category layers
 */
export const layerPostgresCluster = (options: {
  readonly url: Redacted.Redacted<string>
  readonly runner?: { readonly host: string; readonly port: number } | undefined
  readonly sharding?: Partial<ShardingConfig.ShardingConfig["Service"]>
}): Layer.Layer<WorkflowEngine.WorkflowEngine | SqlClient, unknown> => {
  const shardingConfig = {
    ...agentClusterSharding,
    ...(options.runner !== undefined
      ? {
          runnerAddress: Option.some(RunnerAddress.make(options.runner.host, options.runner.port)),
          // Listen where we advertise: "localhost" stays on loopback unless asked otherwise.
          runnerListenAddress: Option.some(RunnerAddress.make(options.runner.host, options.runner.port))
        }
      : {}),
    ...options.sharding
  }
  const transport =
    options.runner !== undefined
      ? NodeClusterSocket.layer({ storage: "sql", shardingConfig })
      : NodeClusterSocket.layer({ storage: "sql", clientOnly: true, shardingConfig })
  return ClusterWorkflowEngine.layer.pipe(
    Layer.provideMerge(transport as Layer.Layer<Sharding.Sharding | MessageStorage.MessageStorage, unknown, SqlClient>),
    Layer.provideMerge(PgClient.layer({ url: options.url }))
  )
}

/**
 * The engine for a database URL.
 *
 * @category layers
 */
export const layer = (database: Database): Layer.Layer<WorkflowEngine.WorkflowEngine, unknown> => {
  switch (database._tag) {
    case "Memory":
      return layerMemory
    case "Sqlite":
      return database.engine === "journal"
        ? layerJournalSqlite({ filename: database.filename })
        : layerSqlite({ filename: database.filename })
    case "Postgres":
      return database.engine === "journal"
        ? layerJournalPostgres({ url: database.url })
        : layerPostgres({ url: database.url })
  }
}

/**
 * Reads `AGENT_DATABASE_URL`; the default is `sqlite+journal:./data/agent.db`
 * (the journal engine on an SQLite file).
 *
 * @category layers
 */
export const layerConfig: Layer.Layer<WorkflowEngine.WorkflowEngine, unknown> = Layer.unwrap(
  Effect.gen(function* () {
    const url = yield* Config.String("AGENT_DATABASE_URL").pipe(Config.withDefault("sqlite+journal:./data/agent.db"))
    return layer(yield* parseDatabaseUrl(url))
  })
)
