#!/usr/bin/env node
/**
 * The `effect-claude-agent` command.
 *
 * `serve` starts the server; `run`, `list`, `status`, `tail`, `approve`,
 * `input`, `interrupt` and `resume` talk to one by URL and token (`--url`,
 * `--token`, or `AGENT_URL`, `AGENT_API_TOKEN`); `cleanup` works on the
 * engine's database directly. `--json` prints JSON; an error is one line on
 * stderr and exit code 1.
 *
 * @since 0.1.0
 */
import * as Fs from "node:fs"
import { NodeRuntime, NodeServices } from "@effect/platform-node"
import { Cause, Config, Console, Duration, Effect, Exit, Layer, Option, Predicate } from "effect"
import { Argument, Command, Flag } from "effect/cli"
import { PgClient } from "@effect/sql-pg"
import type { RunView } from "../api/AgentApi.ts"
import * as AgentEngine from "../engine/AgentEngine.ts"
import * as Retention from "../engine/Retention.ts"
import * as AgentRuntime from "../workflow/AgentRuntime.ts"
import * as SqliteClient from "../engine/SqliteClient.ts"
import { AgentClient, CliFailure, describeFailure, resolveToken } from "./AgentClient.ts"
import * as Tail from "./Tail.ts"

const databaseUrlFlag = Flag.String("database-url").pipe(
  Flag.withDescription(
    "The engine's database: sqlite+journal:<path>, sqlite:<path>, postgres://… (default: AGENT_DATABASE_URL, then sqlite+journal:./data/agent.db)"
  ),
  Flag.withFallbackConfig(Config.String("AGENT_DATABASE_URL")),
  Flag.withDefault("sqlite+journal:./data/agent.db")
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
    const report = yield* Retention.cleanup(
      { maxAge: Option.getOrUndefined(maxAge), maxCount: Option.getOrUndefined(maxCount) },
      // The runs' output, requests and registry entries go with the engine's state.
      { onPurge: AgentRuntime.purgeRuns }
    ).pipe(Effect.provide(client as Layer.Layer<any, unknown>))
    yield* Console.log(`deleted ${report.deletedExecutions} finished run(s)`)
  })
).pipe(Command.withDescription("Delete finished runs beyond a retention policy"))

// ---------------------------------------------------------------------------
// Talking to a server
// ---------------------------------------------------------------------------

const remote = {
  url: Flag.String("url").pipe(
    Flag.withDescription("The server (default: AGENT_URL, then http://127.0.0.1:8787)"),
    Flag.withFallbackConfig(Config.String("AGENT_URL")),
    Flag.withDefault("http://127.0.0.1:8787")
  ),
  token: Flag.Redacted("token").pipe(
    Flag.withDescription("The API token (default: AGENT_API_TOKEN, then ./data/api-token)"),
    Flag.optional
  ),
  json: Flag.Boolean("json").pipe(Flag.withDescription("Print JSON"), Flag.withDefault(false))
}

type Remote = {
  readonly url: string
  readonly token: Option.Option<import("effect").Redacted.Redacted<string>>
  readonly json: boolean
}

/** Runs `effect` with a client of the server, failures reported in one line. */
const withClient = <A, E, R>(flags: Remote, effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function* () {
    const url = flags.url.replace(/\/+$/, "")
    const token = yield* resolveToken(flags.token)
    return yield* effect.pipe(
      Effect.mapError((error) => describeFailure(url, error)),
      Effect.provide(AgentClient.layer({ url, token }))
    )
  })

const print = (json: boolean, value: unknown, text: string) => Console.log(json ? JSON.stringify(value, null, 2) : text)

const describeRun = (run: RunView) =>
  [
    `run       ${run.runId}`,
    `workflow  ${run.workflow}`,
    `status    ${run.status}`,
    `created   ${run.createdAt}`,
    `updated   ${run.updatedAt}`,
    `input     ${JSON.stringify(run.input)}`,
    ...run.waitingFor.map(
      (w) =>
        `waiting   ${w.kind} "${w.step}": ${JSON.stringify(w.request)}\n          ` +
        (w.kind === "approval"
          ? `effect-claude-agent approve ${w.token}   (or --reject)`
          : `effect-claude-agent input ${w.token} <answer>`)
    ),
    ...(run.result === undefined ? [] : [`result    ${JSON.stringify(run.result)}`]),
    ...(run.error === undefined ? [] : [`error     ${JSON.stringify(run.error)}`])
  ].join("\n")

/** `--input`: JSON, or `@file` holding JSON. */
const parseInput = (input: string) =>
  Effect.try({
    try: () => JSON.parse(input.startsWith("@") ? Fs.readFileSync(input.slice(1), "utf8") : input) as unknown,
    catch: (error) =>
      new CliFailure(
        `--input must be JSON or @file with JSON: ${error instanceof Error ? error.message : String(error)}`
      )
  })

/** Ends with exit code 1 unless the run completed. */
const exitFor = (end: Tail.End) =>
  end.status === "completed" ? Effect.void : Effect.fail(new CliFailure(`run ${end.runId} ${end.status}`))

// Imported when used: the server's modules (engine, SDK, workflows) would slow every other command's start.
const serve = Command.make("serve", {}, () =>
  Effect.flatMap(
    Effect.promise(() => import("../server/Serve.ts")),
    (Serve) => Serve.serve
  )
).pipe(
  Command.withDescription(
    "Start the server (settings from AGENT_PORT, AGENT_DATA_DIR, AGENT_DATABASE_URL, ANTHROPIC_API_KEY, …)"
  )
)

const run = Command.make(
  "run",
  {
    ...remote,
    workflow: Argument.String("workflow").pipe(Argument.withDescription("The workflow, e.g. PlanAndAct")),
    input: Flag.String("input").pipe(
      Flag.withDescription('The input as JSON, or @file: --input \'{"task":"Tidy the README"}\''),
      Flag.withDefault("{}")
    ),
    follow: Flag.Boolean("follow").pipe(
      Flag.withAlias("f"),
      Flag.withDescription("Follow the run's output until it ends"),
      Flag.withDefault(false)
    ),
    idempotencyKey: Flag.String("idempotency-key").pipe(
      Flag.withDescription("The same key starts the same run at most once"),
      Flag.optional
    )
  },
  Effect.fn(function* (flags) {
    const input = yield* parseInput(flags.input)
    yield* withClient(
      flags,
      Effect.gen(function* () {
        const { api } = yield* AgentClient
        const { runId } = yield* api.runs.create({
          payload: {
            workflow: flags.workflow,
            input,
            ...(Option.isSome(flags.idempotencyKey) ? { idempotencyKey: flags.idempotencyKey.value } : {})
          }
        })
        if (!flags.follow) return yield* print(flags.json, { runId }, runId)
        if (!flags.json) yield* Console.log(`run ${runId} started`)
        yield* Effect.flatMap(Tail.follow(runId, { json: flags.json }, Tail.processTerminal()), exitFor)
      })
    )
  })
).pipe(Command.withDescription("Start a run of a workflow"))

const list = Command.make(
  "list",
  {
    ...remote,
    status: Flag.Literals("status", ["running", "waiting", "completed", "failed", "interrupted"]).pipe(
      Flag.withDescription("Only runs in this state"),
      Flag.optional
    ),
    workflow: Flag.String("workflow").pipe(Flag.withDescription("Only runs of this workflow"), Flag.optional),
    limit: Flag.Int("limit").pipe(Flag.withDescription("At most this many (1-100)"), Flag.withDefault(20))
  },
  Effect.fn(function* (flags) {
    yield* withClient(
      flags,
      Effect.gen(function* () {
        const { api } = yield* AgentClient
        const page = yield* api.runs.list({
          query: {
            limit: flags.limit,
            ...(Option.isSome(flags.status) ? { status: flags.status.value } : {}),
            ...(Option.isSome(flags.workflow) ? { workflow: flags.workflow.value } : {})
          }
        })
        yield* print(
          flags.json,
          page,
          page.runs.length === 0
            ? "no runs"
            : page.runs
                .map((r) => `${r.runId}  ${r.workflow.padEnd(12)}  ${r.status.padEnd(11)}  ${r.createdAt}`)
                .join("\n")
        )
      })
    )
  })
).pipe(Command.withDescription("List runs, newest first"))

const runIdArgument = Argument.String("runId").pipe(Argument.withDescription("The run's id"))

const status = Command.make(
  "status",
  { ...remote, runId: runIdArgument },
  Effect.fn(function* (flags) {
    yield* withClient(
      flags,
      Effect.gen(function* () {
        const { api } = yield* AgentClient
        const view = yield* api.runs.get({ params: { runId: flags.runId } })
        yield* print(flags.json, view, describeRun(view))
      })
    )
  })
).pipe(Command.withDescription("Show a run: status, what it waits for (with the token), result"))

const tail = Command.make(
  "tail",
  {
    ...remote,
    runId: runIdArgument,
    from: Flag.Int("from").pipe(Flag.withDescription("Start at this event (default 1)"), Flag.withDefault(1))
  },
  Effect.fn(function* (flags) {
    yield* withClient(
      flags,
      Effect.flatMap(Tail.follow(flags.runId, { from: flags.from, json: flags.json }, Tail.processTerminal()), exitFor)
    )
  })
).pipe(Command.withDescription("Follow a run's output live until it ends"))

const tokenArgument = Argument.String("token").pipe(Argument.withDescription("The token from the run's status"))

const approve = Command.make(
  "approve",
  {
    ...remote,
    token: tokenArgument,
    apiToken: remote.token,
    reject: Flag.Boolean("reject").pipe(Flag.withDescription("Reject instead of approving"), Flag.withDefault(false)),
    comment: Flag.String("comment").pipe(Flag.withDescription("A comment for the agent"), Flag.optional)
  },
  Effect.fn(function* (flags) {
    yield* withClient(
      { ...flags, token: flags.apiToken },
      Effect.gen(function* () {
        const { api } = yield* AgentClient
        const decided = yield* api.decisions.approve({
          params: { token: flags.token },
          payload: {
            approved: !flags.reject,
            ...(Option.isSome(flags.comment) ? { comment: flags.comment.value } : {})
          }
        })
        yield* print(
          flags.json,
          decided,
          `${flags.reject ? "rejected" : "approved"} "${decided.step}" of run ${decided.runId}`
        )
      })
    )
  })
).pipe(Command.withDescription("Approve (or --reject) what a run waits for"))

const input = Command.make(
  "input",
  {
    ...remote,
    token: tokenArgument,
    apiToken: remote.token,
    value: Argument.String("value").pipe(Argument.withDescription("The answer"))
  },
  Effect.fn(function* (flags) {
    yield* withClient(
      { ...flags, token: flags.apiToken },
      Effect.gen(function* () {
        const { api } = yield* AgentClient
        const decided = yield* api.decisions.answer({ params: { token: flags.token }, payload: { value: flags.value } })
        yield* print(flags.json, decided, `answered "${decided.step}" of run ${decided.runId}`)
      })
    )
  })
).pipe(Command.withDescription("Answer a question a run waits for"))

/** `interrupt` and `resume`: one request about a run, accepted by the server. */
const runAction = (name: "interrupt" | "resume", doing: string, description: string) =>
  Command.make(
    name,
    { ...remote, runId: runIdArgument },
    Effect.fn(function* (flags) {
      yield* withClient(
        flags,
        Effect.gen(function* () {
          const { api } = yield* AgentClient
          const accepted = yield* api.runs[name]({ params: { runId: flags.runId } })
          yield* print(flags.json, accepted, `${doing} run ${accepted.runId}`)
        })
      )
    })
  ).pipe(Command.withDescription(description))

const interrupt = runAction("interrupt", "interrupting", "Interrupt a run")

const resume = runAction("resume", "resuming", "Resume a suspended run")

const root = Command.make("effect-claude-agent").pipe(
  Command.withDescription("Durable Claude agents on Effect"),
  Command.withSubcommands([serve, run, list, status, tail, approve, input, interrupt, resume, cleanup])
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
  // `serve` ends by interruption (SIGTERM, Ctrl-C): that is a clean exit.
  (program) =>
    NodeRuntime.runMain(program, {
      teardown: (exit, onExit) =>
        onExit(Exit.isSuccess(exit) || Cause.hasInterruptsOnly(exit.cause) ? Number(process.exitCode ?? 0) : 1)
    })
)
