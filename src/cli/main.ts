#!/usr/bin/env node
/**
 * The `effect-claude-agent` command.
 *
 * `cleanup` works on the engine's database directly (no server needed); the
 * commands that talk to a running server arrive with the service.
 *
 * @since 0.1.0
 */
import { NodeRuntime, NodeServices } from "@effect/platform-node"
import { Config, Console, Duration, Effect, Layer, Option, Predicate } from "effect"
import { Command, Flag } from "effect/cli"
import { PgClient } from "@effect/sql-pg"
import * as AgentEngine from "../engine/AgentEngine.ts"
import * as Retention from "../engine/Retention.ts"
import * as SqliteClient from "../engine/SqliteClient.ts"

const databaseUrlFlag = Flag.String("database-url").pipe(
  Flag.withDescription(
    "The engine's database: sqlite:<path> or postgres://… (default: AGENT_DATABASE_URL, then sqlite:./data/agent.db)"
  ),
  Flag.withFallbackConfig(Config.String("AGENT_DATABASE_URL")),
  Flag.withDefault("sqlite:./data/agent.db")
)

const maxAgeFlag = Flag.String("max-age").pipe(
  Flag.withDescription('Delete runs that finished longer ago than this, e.g. "30 days" or "12 hours"'),
  Flag.mapTryCatch(
    (input) => Duration.fromInputUnsafe(input as Duration.Input),
    () => 'max-age must be a duration such as "30 days", "12 hours" or "90 minutes"'
  ),
  Flag.optional
)

const maxCountFlag = Flag.Int("max-count").pipe(
  Flag.withDescription("Keep at most this many finished runs, the most recent"),
  Flag.filter(
    (n) => n >= 0,
    () => "max-count must be 0 or more"
  ),
  Flag.optional
)

const cleanup = Command.make(
  "cleanup",
  { databaseUrl: databaseUrlFlag, maxAge: maxAgeFlag, maxCount: maxCountFlag },
  Effect.fn(function* ({ databaseUrl, maxAge, maxCount }) {
    if (Option.isNone(maxAge) && Option.isNone(maxCount)) {
      return yield* Effect.fail(new Error("cleanup needs --max-age, --max-count or both"))
    }
    const database = yield* AgentEngine.parseDatabaseUrl(databaseUrl)
    // Only the SQL client: the cleanup must not start a runner that would take the shards.
    const client =
      database._tag === "Sqlite"
        ? SqliteClient.layer({ filename: database.filename })
        : database._tag === "Postgres"
          ? PgClient.layer({ url: database.url })
          : undefined
    if (client === undefined) return yield* Effect.fail(new Error("the memory engine keeps nothing to clean up"))
    const report = yield* Retention.cleanup({
      maxAge: Option.getOrUndefined(maxAge),
      maxCount: Option.getOrUndefined(maxCount)
    }).pipe(Effect.provide(client as Layer.Layer<any, unknown>))
    yield* Console.log(`deleted ${report.deletedExecutions} finished run(s)`)
  })
).pipe(Command.withDescription("Delete finished runs beyond a retention policy"))

const root = Command.make("effect-claude-agent").pipe(
  Command.withDescription("Durable Claude agents on Effect"),
  Command.withSubcommands([cleanup])
)

root.pipe(
  Command.run({ version: "0.1.0" }),
  // A user wants the reason on one line, not a stack trace.
  Effect.catch((error) =>
    Effect.andThen(
      // effect/cli has already printed the help and the parse errors for ShowHelp.
      Predicate.isTagged(error, "ShowHelp")
        ? Effect.void
        : Console.error(`effect-claude-agent: ${error instanceof Error ? error.message : String(error)}`),
      Effect.sync(() => {
        process.exitCode = 1
      })
    )
  ),
  Effect.provide(NodeServices.layer),
  NodeRuntime.runMain
)
