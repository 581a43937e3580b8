/**
 * The ready-made agent server (`npm start`, `effect-claude-agent serve`): the
 * HTTP API with the example workflow `PlanAndAct`, on the embedded SQLite
 * engine under `./data/` unless told otherwise. `main.ts` runs it.
 *
 * Settings (all optional):
 * - `AGENT_PORT` (8787; 0 picks a free one), `AGENT_HOST` (127.0.0.1)
 * - `AGENT_DATA_DIR` (./data): the default database and the generated secrets
 * - `AGENT_DATABASE_URL`: `sqlite+journal:<path>` (the default, in the data
 *   directory), `sqlite:<path>`, `postgres://…`, `postgres+journal://…` or `memory`
 * - `AGENT_API_TOKEN`, `AGENT_APPROVAL_SECRET`: otherwise generated on first
 *   start and stored under the data directory, owner-only
 * - `ANTHROPIC_API_KEY` / `ANTHROPIC_BASE_URL`: passed to the SDK unchanged;
 *   with neither, the built-in scripted model answers (`AGENT_SCRIPTED_DELAY_MS`
 *   slows its streaming, to watch it live)
 * - `AGENT_MAX_BODY_BYTES` (1 MiB)
 * - `AGENT_CORS_ORIGINS`: comma-separated browser origins whose pages may call
 *   the API; unset, the server sends no CORS headers and browsers refuse every
 *   cross-origin call
 * - `OTEL_EXPORTER_OTLP_ENDPOINT` and the other `OTEL_*` variables: telemetry
 *
 * SIGTERM (or Ctrl-C) drains: new requests get 503, event streams end with a
 * retry hint, runs stop at a durable point or are interrupted to resume from
 * their journal on the next start, and the process exits 0.
 *
 * @since 0.1.0
 */
import * as Path from "node:path"
import { Cause, Config, Console, Context, Effect, Exit, Layer, Option, Redacted } from "effect"
import type * as Runtime from "effect/Runtime"
import { HttpServer } from "effect/http"
import { PlanAndAct, PlanAndActLayer } from "../../examples/PlanAndAct.ts"
import * as AgentEngine from "../engine/AgentEngine.ts"
import { AgentSdk } from "../sdk/AgentSdk.ts"
import { PermissionPolicy } from "../sdk/PermissionPolicy.ts"
import * as ScriptedModel from "../testing/ScriptedModel.ts"
import * as AgentRuntime from "../workflow/AgentRuntime.ts"
import * as ApprovalToken from "../workflow/ApprovalToken.ts"
import * as AgentServer from "./AgentServer.ts"
import * as Credentials from "./Credentials.ts"
import { Shutdown } from "./Shutdown.ts"
import * as Telemetry from "./Telemetry.ts"

/**
 * The scripted model's answers for PlanAndAct, forever: a plan for any task,
 * and a report for the act step.
 */
const planAndActScript = (delayMs: number): ScriptedModel.Script => {
  const options = { chunkSize: 6, chunkDelayMs: delayMs, inputTokens: 40, outputTokens: 30 }
  return (request) => {
    const task = /Task: ([\s\S]*)$/.exec(ScriptedModel.lastUserText(request))?.[1]?.trim()
    return task === undefined
      ? ScriptedModel.text(
          "Done. I followed the approved plan step by step and checked the result. " +
            "(This is the built-in scripted model; set ANTHROPIC_API_KEY for a real agent.)",
          options
        )
      : ScriptedModel.text(
          `1. Read what "${task}" asks for.\n2. Make the change in small steps.\n3. Check the result.`,
          options
        )
  }
}

const engineName = (engine: AgentEngine.EngineKind | undefined) =>
  engine === "journal" ? "journal engine" : "cluster engine (effect/cluster)"

const describeDatabase = (database: AgentEngine.Database): string => {
  switch (database._tag) {
    case "Memory":
      return "memory (nothing survives a restart)"
    case "Sqlite":
      return `SQLite ${database.filename}, ${engineName(database.engine)}`
    case "Postgres": {
      const url = new URL(Redacted.value(database.url))
      return `Postgres ${url.host}${url.pathname}, ${engineName(database.engine)}`
    }
  }
}

/**
 * Reads the settings, starts the server, prints how to reach it, and runs
 * until interrupted (SIGTERM, Ctrl-C), then drains.
 *
 * @category running
 */
export const serve = Effect.gen(function* () {
  const host = yield* Config.String("AGENT_HOST").pipe(Config.withDefault("127.0.0.1"))
  const port = yield* Config.Int("AGENT_PORT").pipe(Config.withDefault(8787))
  const dataDir = yield* Config.String("AGENT_DATA_DIR").pipe(Config.withDefault("./data"))
  const databaseUrl = yield* Config.String("AGENT_DATABASE_URL").pipe(
    Config.withDefault(`sqlite+journal:${Path.join(dataDir, "agent.db")}`)
  )
  const maxBodyBytes = yield* Config.Int("AGENT_MAX_BODY_BYTES").pipe(Config.withDefault(1024 * 1024))
  const corsOrigins = yield* Config.Array(AgentServer.CorsOrigin, "AGENT_CORS_ORIGINS").pipe(Config.withDefault([]))
  const scriptedDelayMs = yield* Config.Int("AGENT_SCRIPTED_DELAY_MS").pipe(Config.withDefault(15))
  const apiKey = yield* Config.option(Config.String("ANTHROPIC_API_KEY"))
  const baseUrl = yield* Config.option(Config.String("ANTHROPIC_BASE_URL"))
  const realApi = Option.isSome(apiKey) || Option.isSome(baseUrl)
  const database = yield* AgentEngine.parseDatabaseUrl(databaseUrl)
  const telemetry = yield* Telemetry.destination

  const apiToken = yield* Credentials.load({ variable: "AGENT_API_TOKEN", dataDir, file: "api-token" })
  const approvalSecret = yield* Credentials.load({
    variable: "AGENT_APPROVAL_SECRET",
    dataDir,
    file: "approval-secret"
  })

  const sdk = realApi
    ? AgentSdk.layerConfig
    : ScriptedModel.layerAgentSdk().pipe(
        Layer.provide(ScriptedModel.ScriptedModel.layer(planAndActScript(scriptedDelayMs)))
      )

  const server = AgentServer.layer({ workflows: [PlanAndAct], host, port, maxBodyBytes, corsOrigins }).pipe(
    Layer.provide(PlanAndActLayer),
    Layer.provide(AgentRuntime.layer(database)),
    Layer.provide(ApprovalToken.ApprovalSecret.layer(approvalSecret.value)),
    Layer.provide(sdk),
    Layer.provide(PermissionPolicy.layerDenyAll),
    Layer.provide(Layer.succeed(Credentials.ApiToken)({ token: apiToken.value, source: apiToken.source })),
    Layer.provideMerge(Shutdown.layer),
    // Outermost, so that every fiber the server starts traces to it.
    Layer.provide(Telemetry.layer)
  )
  const context = yield* Layer.build(server)
  const shutdown = Context.get(context, Shutdown)
  // Added last, so it runs first: streams and new requests stop before the server closes.
  yield* Effect.addFinalizer(() =>
    Effect.andThen(shutdown.begin, Console.log("effect-claude-agent: shutting down (draining requests)"))
  )

  const url = HttpServer.formatAddress(Context.get(context, HttpServer.HttpServer).address)
  const tokenFile = apiToken.source._tag === "File" ? Path.relative(process.cwd(), apiToken.source.path) : undefined
  const tokenHint =
    tokenFile === undefined
      ? "$AGENT_API_TOKEN"
      : `$(cat ${tokenFile.startsWith("..") ? (apiToken.source as { path: string }).path : tokenFile})`
  yield* Console.log(
    [
      `effect-claude-agent server listening on ${url}`,
      `  engine:    ${describeDatabase(database)}`,
      `  model:     ${
        realApi
          ? "the Anthropic API (ANTHROPIC_API_KEY / ANTHROPIC_BASE_URL passed to the SDK)"
          : "the built-in scripted model (no ANTHROPIC_API_KEY set)"
      }`,
      `  workflows: ${PlanAndAct._tag}`,
      `  auth:      every /v1 request needs Authorization: Bearer <token>; the token is ${Credentials.describe(apiToken.source)}`,
      `             e.g. curl -H "Authorization: Bearer ${tokenHint}" ${url}/v1/runs`,
      `  approval secret ${Credentials.describe(approvalSecret.source)}`,
      `  cors:      ${
        corsOrigins.length === 0
          ? "closed: browsers refuse cross-origin calls (AGENT_CORS_ORIGINS allows origins)"
          : `pages on ${corsOrigins.join(", ")} may call the API`
      }`,
      `  telemetry: ${Option.match(telemetry, {
        onNone: () => "off (set OTEL_EXPORTER_OTLP_ENDPOINT to export traces and metrics)",
        onSome: (endpoint) => `OTLP to ${endpoint}`
      })}`,
      `  docs:      ${url}/openapi.json, health: ${url}/health`
    ].join("\n")
  )
  return yield* Effect.never
}).pipe(Effect.scoped)

/**
 * The process exit code: a drain after SIGTERM is a clean exit.
 *
 * @category running
 */
export const teardown: Runtime.Teardown = (exit, onExit) =>
  onExit(Exit.isSuccess(exit) || Cause.hasInterruptsOnly(exit.cause) ? 0 : 1)
