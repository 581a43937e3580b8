/**
 * Everything the workflow layer needs, on one database: the engine, the
 * output log, the requests people decide, the run registry, and the agent
 * sessions.
 *
 * Workflows registered on top of this (with `AgentWorkflow.toLayer`) also
 * need an `AgentSdk` (the real API, or the scripted model in tests) and the
 * `ApprovalSecret` their tokens are signed with.
 *
 * @since 0.1.0
 */
import { PgClient } from "@effect/sql-pg"
import * as Fs from "node:fs"
import { Config, Effect, Layer, Schema } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import type { WorkflowEngine } from "effect/workflow/WorkflowEngine"
import * as AgentEngine from "../engine/AgentEngine.ts"
import * as Retention from "../engine/Retention.ts"
import * as SqliteClient from "../engine/SqliteClient.ts"
import { AgentOutput } from "../output/AgentOutput.ts"
import { SessionStore } from "../sdk/SessionStore.ts"
import type { ApprovalSecret } from "./ApprovalToken.ts"
import { Approvals } from "./Approvals.ts"
import { Runs } from "./Runs.ts"

/**
 * The services of the workflow layer.
 *
 * @category models
 */
export type Services = WorkflowEngine | AgentOutput | Approvals | Runs | SessionStore

/**
 * The output log, requests, run registry and sessions in the engine's own database.
 *
 * @category layers
 */
export const layerServices: Layer.Layer<
  AgentOutput | Approvals | Runs | SessionStore,
  unknown,
  SqlClient | WorkflowEngine | ApprovalSecret
> = Runs.layer.pipe(
  Layer.provideMerge(Approvals.layer),
  Layer.provideMerge(AgentOutput.layer()),
  Layer.merge(SessionStore.layer)
)

/**
 * The database holds unfinished runs of the other engine. The cluster engine
 * and the journal engine keep runs in tables of their own, so the engine asked
 * for would never finish them; the process refuses to start rather than
 * leave them stranded without a word.
 *
 * @category errors
 */
export class EngineSwitched extends Schema.TaggedError<EngineSwitched>()("EngineSwitched", {
  engine: Schema.Literals(["cluster", "journal"]),
  other: Schema.Literals(["cluster", "journal"]),
  unfinished: Schema.Number
}) {
  override get message(): string {
    const url =
      this.other === "journal" ? "sqlite+journal:<path> or postgres+journal://…" : "sqlite:<path> or postgres://…"
    return (
      `This database holds ${this.unfinished} unfinished run(s) of the ${this.other} engine, which the ${this.engine} ` +
      `engine cannot see. Start on the ${this.other} engine (AGENT_DATABASE_URL=${url}) until they have ended, or ` +
      `interrupt them there, then switch.`
    )
  }
}

const count = (rows: ReadonlyArray<{ readonly n: number | string }>) => Number(rows[0]?.n ?? 0)

// Unfinished runs of the engine other than `engine`, on a database that exists already. The journal
// engine's are exact (its executions not complete); the cluster engine's are the registry's open runs
// that the journal does not know (runs of workflows registered with `AgentWorkflow.toLayer`).
const unfinishedOfOther = (engine: AgentEngine.EngineKind) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient
    const tables = yield* Retention.presentTables(["agent_runs", "journal_executions", "cluster_messages"])
    if (engine === "cluster") {
      return tables.has("journal_executions")
        ? count(
            yield* sql<{ readonly n: number }>`SELECT count(*) AS n FROM journal_executions WHERE state <> 'complete'`
          )
        : 0
    }
    if (!tables.has("agent_runs") || !tables.has("cluster_messages")) return 0
    return count(
      tables.has("journal_executions")
        ? yield* sql<{ readonly n: number }>`SELECT count(*) AS n FROM agent_runs WHERE status = 'running'
            AND run_id NOT IN (SELECT execution_id FROM journal_executions)`
        : yield* sql<{ readonly n: number }>`SELECT count(*) AS n FROM agent_runs WHERE status = 'running'`
    )
  })

// Checked on a connection of its own before the engine starts (and replays what it finds).
const refuseStranding = (database: Exclude<AgentEngine.Database, { readonly _tag: "Memory" }>) => {
  const engine = database.engine ?? "cluster"
  if (database._tag === "Sqlite" && !Fs.existsSync(database.filename)) return Layer.empty
  const client =
    database._tag === "Sqlite"
      ? SqliteClient.layer({ filename: database.filename, readonly: true })
      : PgClient.layer({ url: database.url, maxConnections: 1 })
  return Layer.effectDiscard(
    Effect.gen(function* () {
      const unfinished = yield* unfinishedOfOther(engine)
      if (unfinished > 0) {
        return yield* new EngineSwitched({ engine, other: engine === "cluster" ? "journal" : "cluster", unfinished })
      }
    })
  ).pipe(Layer.provide(client))
}

/**
 * The workflow layer on a database: memory, an SQLite file, or Postgres (one
 * process, or a runner of a cluster when `runner` is given), on the cluster
 * engine or, when the database asks for it, the journal engine.
 *
 * @category layers
 */
export const layer = (
  database: AgentEngine.Database,
  options: { readonly runner?: { readonly host: string; readonly port: number } } = {}
): Layer.Layer<Services, unknown, ApprovalSecret> => {
  switch (database._tag) {
    case "Memory":
      // The memory engine keeps no tables; the services share one in-memory SQLite.
      return layerServices.pipe(
        Layer.provideMerge(AgentEngine.layerMemory),
        Layer.provide(SqliteClient.layer({ filename: ":memory:" }))
      )
    case "Sqlite":
      return layerServices.pipe(
        Layer.provideMerge(
          (database.engine === "journal"
            ? AgentEngine.layerJournalSqlite({ filename: database.filename })
            : AgentEngine.layerSqlite({ filename: database.filename })
          ).pipe(Layer.provide(refuseStranding(database)))
        )
      )
    case "Postgres":
      return layerServices.pipe(
        Layer.provideMerge(
          (database.engine === "journal"
            ? AgentEngine.layerJournalPostgres({ url: database.url })
            : options.runner === undefined
              ? AgentEngine.layerPostgres({ url: database.url })
              : AgentEngine.layerPostgresCluster({ url: database.url, runner: options.runner })
          ).pipe(Layer.provide(refuseStranding(database)))
        )
      )
  }
}

/**
 * Reads `AGENT_DATABASE_URL` (default `sqlite+journal:./data/agent.db`: the
 * journal engine on an SQLite file).
 *
 * @category layers
 */
export const layerConfig: Layer.Layer<Services, unknown, ApprovalSecret> = Layer.unwrap(
  Effect.gen(function* () {
    const url = yield* Config.String("AGENT_DATABASE_URL").pipe(Config.withDefault("sqlite+journal:./data/agent.db"))
    return layer(yield* AgentEngine.parseDatabaseUrl(url))
  })
)

// The workflow layer's tables keyed by run id, children before parents.
const runTables = [
  "agent_output_events",
  "agent_output_blobs",
  "agent_output_runs",
  "agent_waits",
  "agent_run_usage",
  "agent_runs"
] as const

/**
 * Deletes what the workflow layer keeps of these runs (output, requests,
 * usage, the registry), for `Retention.cleanup`'s `onPurge`: retention then
 * removes the engine's state and ours in one transaction. Tables a database
 * never had are skipped.
 *
 * @category retention
 */
export const purgeRuns = (runIds: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient
    const present = yield* Retention.presentTables(runTables)
    for (const table of runTables) {
      if (present.has(table)) yield* sql`DELETE FROM ${sql(table)} WHERE run_id IN ${sql.in(runIds)}`
    }
  })
