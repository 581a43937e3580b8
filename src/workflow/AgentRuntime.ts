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
import { Config, Effect, Layer } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import type { WorkflowEngine } from "effect/workflow/WorkflowEngine"
import * as AgentEngine from "../engine/AgentEngine.ts"
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
          database.engine === "journal"
            ? AgentEngine.layerJournalSqlite({ filename: database.filename })
            : AgentEngine.layerSqlite({ filename: database.filename })
        )
      )
    case "Postgres":
      return layerServices.pipe(
        Layer.provideMerge(
          database.engine === "journal"
            ? AgentEngine.layerJournalPostgres({ url: database.url })
            : options.runner === undefined
              ? AgentEngine.layerPostgres({ url: database.url })
              : AgentEngine.layerPostgresCluster({ url: database.url, runner: options.runner })
        )
      )
  }
}

/**
 * Reads `AGENT_DATABASE_URL` (default `sqlite:./data/agent.db`).
 *
 * @category layers
 */
export const layerConfig: Layer.Layer<Services, unknown, ApprovalSecret> = Layer.unwrap(
  Effect.gen(function* () {
    const url = yield* Config.String("AGENT_DATABASE_URL").pipe(Config.withDefault("sqlite:./data/agent.db"))
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
    const present = new Set(
      (yield* sql.onDialectOrElse({
        pg: () => sql<{ readonly name: string }>`SELECT table_name AS name FROM information_schema.tables
          WHERE table_schema = current_schema() AND table_name IN ${sql.in(runTables)}`,
        orElse: () => sql<{ readonly name: string }>`SELECT name FROM sqlite_master
          WHERE type = 'table' AND name IN ${sql.in(runTables)}`
      })).map((row) => row.name)
    )
    for (const table of runTables) {
      if (present.has(table)) yield* sql`DELETE FROM ${sql(table)} WHERE run_id IN ${sql.in(runIds)}`
    }
  })
