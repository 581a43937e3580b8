/**
 * The service as a user meets it: how fast a run resumes after a person
 * approves (through `Approvals.decide`, which records the decision and then
 * delivers it), how long the server takes to start, and how soon the first
 * token of an agent's answer reaches an SSE client through the whole stack
 * (server → engine → SDK → CLI → output log → SSE), next to the same token
 * read straight from the SDK (the agent path's cold query).
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

/** Starts `npm start`'s server on a free port with a fresh data directory and the scripted model. */
const startServer = () =>
  Effect.callback<Server, Error>((resume) => {
    const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "bench-server-"))
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      AGENT_PORT: "0",
      AGENT_DATA_DIR: dir,
      AGENT_SCRIPTED_DELAY_MS: "0"
    }
    for (const name of ["ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "AGENT_API_TOKEN", "AGENT_DATABASE_URL"]) {
      delete env[name]
    }
    const started = performance.now()
    const child = spawn(process.execPath, [serverMain], { env, stdio: ["ignore", "pipe", "pipe"] })
    let out = ""
    child.stdout.on("data", (chunk: Buffer) => {
      out += chunk.toString()
      const line = out.split("\n").find((l) => l.startsWith("effect-claude-agent server listening on "))
      if (line === undefined) return
      child.stdout.removeAllListeners("data")
      resume(
        Effect.succeed({
          url: line.slice("effect-claude-agent server listening on ".length).trim(),
          token: Fs.readFileSync(Path.join(dir, "api-token"), "utf8").trim(),
          startupMs: performance.now() - started,
          stop: () => {
            child.kill("SIGKILL")
            Fs.rmSync(dir, { recursive: true, force: true })
          }
        })
      )
    })
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
    Fs.rmSync(dir, { recursive: true, force: true })
    return measurements
  })
