/**
 * The service as a user meets it: how fast a run resumes after a person
 * approves (through `Approvals.decide`, which records the decision and then
 * delivers it), how long the server takes to start, how soon the first
 * token of an agent's answer reaches an SSE client through the whole stack
 * (server → engine → SDK → CLI → output log → SSE), next to the same token
 * read straight from the SDK (the agent path's cold query), and how late a
 * run's events reach an SSE client on the server that runs it and on another
 * server of the same Postgres database.
 */
import { spawn } from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { Effect, Fiber, Layer, Redacted, Schema } from "effect"
import * as Workflow from "effect/workflow/Workflow"
import type * as AgentEngine from "../src/engine/AgentEngine.ts"
import * as AgentRuntime from "../src/workflow/AgentRuntime.ts"
import * as AgentWorkflow from "../src/workflow/AgentWorkflow.ts"
import * as ApprovalToken from "../src/workflow/ApprovalToken.ts"
import { Approvals } from "../src/workflow/Approvals.ts"
import { createDatabase, dropDatabase } from "../test/engine/TestDatabase.ts"
import { type Measurement, percentile } from "./Measurement.ts"

const group = "Service"

const Gate = Workflow.make("Bench/Gate", {
  payload: { id: Schema.String },
  success: Schema.Boolean,
  idempotencyKey: ({ id }) => id
})

const GateLayer = AgentWorkflow.toLayer(Gate, () =>
  Effect.map(AgentWorkflow.awaitApproval("review", { request: "go?" }), (decision) => decision.approved)
)

let ids = 0

/** From `Approvals.decide` to the joined `execute` returning the run's result. */
const approvalResume = (database: AgentEngine.Database, trials: number) =>
  Effect.gen(function* () {
    const approvals = yield* Approvals
    const samples: Array<number> = []
    for (let t = 0; t < trials + 3; t++) {
      const id = `gate-${++ids}`
      const runId = yield* Gate.execute({ id }, { discard: true })
      let token = ""
      while (token === "") {
        const wait = (yield* approvals.list({ runId, state: "pending" }))[0]
        if (wait !== undefined) token = yield* approvals.tokenFor(wait)
        else yield* Effect.sleep("2 millis")
      }
      const joined = yield* Effect.forkChild(Gate.execute({ id }))
      yield* Effect.yieldNow
      const start = performance.now()
      yield* approvals.decide(token, { approved: true })
      yield* Fiber.join(joined)
      // The first three warm the path up.
      if (t >= 3) samples.push(performance.now() - start)
    }
    return samples
  }).pipe(
    Effect.provide(
      GateLayer.pipe(
        Layer.provideMerge(AgentRuntime.layer(database)),
        Layer.provideMerge(ApprovalToken.ApprovalSecret.layer(Redacted.make("a-benchmark-secret-long-enough-to-sign")))
      )
    )
  )

const serverMain = Path.resolve(import.meta.dirname, "../src/server/main.ts")

interface Server {
  readonly url: string
  readonly token: string
  readonly startupMs: number
  readonly stop: () => void
}

/**
 * Starts `npm start`'s server on a free port with a fresh data directory and
 * the scripted model (no delay unless `env` sets one); `env` is added last.
 */
const startServer = (env: Record<string, string> = {}) =>
  Effect.callback<Server, Error>((resume) => {
    const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "bench-server-"))
    const childEnv: NodeJS.ProcessEnv = {
      ...process.env,
      AGENT_PORT: "0",
      AGENT_DATA_DIR: dir,
      AGENT_SCRIPTED_DELAY_MS: "0"
    }
    for (const name of ["ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "AGENT_API_TOKEN", "AGENT_DATABASE_URL"]) {
      delete childEnv[name]
    }
    Object.assign(childEnv, env)
    const started = performance.now()
    const child = spawn(process.execPath, [serverMain], { env: childEnv, stdio: ["ignore", "pipe", "pipe"] })
    let out = ""
    child.stdout.on("data", (chunk: Buffer) => {
      out += chunk.toString()
      const line = out.split("\n").find((l) => l.startsWith("effect-claude-agent server listening on "))
      if (line === undefined) return
      child.stdout.removeAllListeners("data")
      resume(
        Effect.succeed({
          url: line.slice("effect-claude-agent server listening on ".length).trim(),
          token: env.AGENT_API_TOKEN ?? Fs.readFileSync(Path.join(dir, "api-token"), "utf8").trim(),
          startupMs: performance.now() - started,
          stop: () => {
            child.kill("SIGKILL")
            Fs.rmSync(dir, { recursive: true, force: true })
          }
        })
      )
    })
    // Drained, so that a chatty server never blocks on a full pipe.
    child.stderr.resume()
    child.on("exit", (code) => resume(Effect.fail(new Error(`the server exited (${code}) before listening`))))
  })

/** From `POST /v1/runs` to the first `text_delta` arriving on the run's SSE stream. */
const firstTokenOverSse = (server: Server) =>
  Effect.promise(async () => {
    const headers = { Authorization: `Bearer ${server.token}`, "content-type": "application/json" }
    const start = performance.now()
    const created = await fetch(`${server.url}/v1/runs`, {
      method: "POST",
      headers,
      body: JSON.stringify({ workflow: "PlanAndAct", input: { task: "Benchmark the stack" } })
    })
    const { runId } = (await created.json()) as { runId: string }
    const controller = new AbortController()
    const response = await fetch(`${server.url}/v1/runs/${runId}/events`, {
      headers: { ...headers, Accept: "text/event-stream" },
      signal: controller.signal
    })
    const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader()
    let buffer = ""
    for (;;) {
      const { value, done } = await reader.read()
      if (done) throw new Error("the event stream ended before a text delta")
      buffer += value
      if (/^event: text_delta$/m.test(buffer)) {
        const took = performance.now() - start
        controller.abort()
        return took
      }
    }
  })

/** A request to the server's API with its token; the JSON answer. */
const api = (server: Server, path: string, body?: unknown) =>
  Effect.promise(async () => {
    const response = await fetch(`${server.url}${path}`, {
      method: body === undefined ? "GET" : "POST",
      headers: { Authorization: `Bearer ${server.token}`, "content-type": "application/json" },
      ...(body === undefined ? {} : { body: JSON.stringify(body) })
    })
    if (!response.ok) throw new Error(`${path}: ${response.status} ${await response.text()}`)
    return (await response.json()) as any
  })

/**
 * Follows a run's events over SSE until the `end` event. For each event stored
 * after the stream was open (not replayed), the time it arrived minus its
 * `timestamp`, both wall clock (the event's is whole milliseconds).
 */
const followOverSse = (server: Server, runId: string) =>
  Effect.promise(async () => {
    const response = await fetch(`${server.url}/v1/runs/${runId}/events`, {
      headers: { Authorization: `Bearer ${server.token}`, Accept: "text/event-stream" }
    })
    const openedAt = Date.now()
    const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader()
    const latencies: Array<number> = []
    let buffer = ""
    for (;;) {
      const { value, done } = await reader.read()
      const receivedAt = performance.timeOrigin + performance.now()
      if (done) throw new Error(`the event stream of ${runId} ended without an end event`)
      buffer += value
      for (let cut = buffer.indexOf("\n\n"); cut >= 0; cut = buffer.indexOf("\n\n")) {
        const frame = buffer.slice(0, cut)
        buffer = buffer.slice(cut + 2)
        if (/^event: end$/m.test(frame)) {
          await reader.cancel()
          return latencies
        }
        const data = /^data: (.*)$/m.exec(frame)?.[1]
        if (data === undefined) continue
        const { timestamp } = JSON.parse(data) as { readonly timestamp: number }
        if (timestamp >= openedAt) latencies.push(receivedAt - timestamp)
      }
    }
  })

/** All the samples, then their p50 and p99 (judged against the target). */
const latencyRows = (label: string, samples: ReadonlyArray<number>): ReadonlyArray<Measurement> => [
  { group, name: `${label}, all ${samples.length} events`, unit: "ms", samples },
  { group, name: `${label}, p50`, unit: "ms", samples: [percentile(samples, 50)] },
  {
    group,
    name: `${label}, p99`,
    unit: "ms",
    samples: [percentile(samples, 99)],
    target: { below: 10, text: "p99 < 10 ms" }
  }
]

/**
 * Publish → SSE client latency through the server, one node and across
 * servers: two servers on one fresh Postgres database (`AGENT_DATABASE_URL`),
 * PlanAndAct runs started on A with the scripted model streaming a chunk every
 * 20 ms, each run followed over SSE from A and from B at once, and approved on
 * A, until both clients have seen at least 200 events (one run in a quick
 * run). The run executes on A (B holds no shards), so B's client sees A's
 * appends through LISTEN/NOTIFY and its own read of the log.
 */
export const sseLatency = (quick: boolean) =>
  Effect.gen(function* () {
    const url = yield* Effect.promise(() => createDatabase("bench_sse"))
    const env = {
      AGENT_DATABASE_URL: url,
      AGENT_SCRIPTED_DELAY_MS: "20",
      AGENT_API_TOKEN: "bench-sse-token",
      AGENT_APPROVAL_SECRET: "bench-sse-approval-secret-long-enough-to-sign"
    }
    // One after the other: the first creates the tables.
    const a = yield* startServer(env)
    const b = yield* startServer(env).pipe(Effect.onError(() => Effect.sync(a.stop)))
    const local: Array<number> = []
    const remote: Array<number> = []
    const wanted = quick ? 1 : 200
    yield* Effect.gen(function* () {
      // The first run of a full run warms the servers up (its first events wait for JIT and connections).
      const warmUp = quick ? 0 : 1
      for (let run = 0; run < 20 + warmUp && Math.min(local.length, remote.length) < wanted; run++) {
        yield* Effect.logInfo(`service: SSE latency, run ${run + 1} (${local.length} and ${remote.length} events)`)
        const { runId } = yield* api(a, "/v1/runs", { workflow: "PlanAndAct", input: { task: `SSE latency ${run}` } })
        const followers = yield* Effect.forkChild(
          Effect.all([followOverSse(a, runId), followOverSse(b, runId)], { concurrency: 2 })
        )
        let token: string | undefined
        while (token === undefined) {
          yield* Effect.sleep("50 millis")
          const view = yield* api(a, `/v1/runs/${runId}`)
          if (view.status === "waiting") token = view.waitingFor[0].token
          else if (view.status !== "running") return yield* Effect.die(new Error(`run ${runId} is ${view.status}`))
        }
        yield* api(a, `/v1/approvals/${token}`, { approved: true })
        const [onA, onB] = yield* Fiber.join(followers)
        if (run < warmUp) continue
        local.push(...onA)
        remote.push(...onB)
      }
    }).pipe(
      Effect.ensuring(
        Effect.promise(async () => {
          a.stop()
          b.stop()
          await dropDatabase(url)
        })
      )
    )
    return [
      ...latencyRows(
        "postgres, one server: publish → SSE client on the same server (wall clock, 1 ms resolution)",
        local
      ),
      ...latencyRows("postgres, two servers: publish on A → SSE client on B (wall clock, 1 ms resolution)", remote)
    ]
  })

export const run = (quick: boolean) =>
  Effect.gen(function* () {
    const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "bench-service-"))
    const trials = quick ? 20 : 200
    const measurements: Array<Measurement> = []
    const databases: ReadonlyArray<readonly [string, AgentEngine.Database]> = [
      ["sqlite", { _tag: "Sqlite", filename: Path.join(dir, "cluster.db") }],
      ["sqlite journal", { _tag: "Sqlite", filename: Path.join(dir, "journal.db"), engine: "journal" }]
    ]
    for (const [name, database] of databases) {
      yield* Effect.logInfo(`service: resume after an approval on ${name}`)
      const samples = yield* approvalResume(database, trials)
      measurements.push(
        {
          group,
          name: `${name}: resume after an approval (decide → run done), all ${samples.length} trials`,
          unit: "ms",
          samples
        },
        {
          group,
          name: `${name}: resume after an approval, p50`,
          unit: "ms",
          samples: [percentile(samples, 50)],
          target: { below: 20, text: "p50 < 20 ms" }
        },
        { group, name: `${name}: resume after an approval, p99`, unit: "ms", samples: [percentile(samples, 99)] }
      )
    }

    const startups: Array<number> = []
    const firstTokens: Array<number> = []
    for (let t = 0; t < (quick ? 1 : 5); t++) {
      yield* Effect.logInfo(`service: server start-up and first token over SSE, trial ${t + 1}`)
      const server = yield* startServer()
      startups.push(server.startupMs)
      for (let i = 0; i < (quick ? 2 : 4); i++) firstTokens.push(yield* firstTokenOverSse(server))
      server.stop()
    }
    measurements.push(
      {
        group,
        name: "server start-up (npm start's server, fresh SQLite data directory)",
        unit: "ms",
        samples: startups
      },
      {
        group,
        name: "time to first token through the whole stack (POST /v1/runs → first text_delta over SSE)",
        unit: "ms",
        samples: firstTokens,
        baseline: "time to first token, cold query"
      }
    )
    yield* Effect.logInfo("service: publish → SSE client latency, one server and two")
    measurements.push(...(yield* sseLatency(quick)))
    Fs.rmSync(dir, { recursive: true, force: true })
    return measurements
  })
