/**
 * Model faults, one kind at a time: each case is one agent step whose
 * requests get a fixed plan of answers (429 with retry-after, 529, 500, a
 * stream cut mid-message, a hung connection, then success or not). The step
 * must be retried with its durable backoff within its budget and succeed, or
 * end with the typed error the fault calls for, after exactly its budget.
 *
 * The runners' CLI is told not to retry (`CLAUDE_CODE_MAX_RETRIES=0`), so each
 * fault reaches the durable layer, except where a case gives the CLI a budget
 * of its own. Two things the CLI does whatever it is told: it retries a cut
 * stream once, without streaming, and a hung one once, after its watchdog
 * (10 s here, from `CLAUDE_BYTE_STREAM_IDLE_TIMEOUT_MS`).
 *
 * All cases run at once, in this process, on an SQLite engine.
 */
import * as Fs from "node:fs"
import * as Path from "node:path"
import { Cause, Effect, Exit, Layer, Option, Redacted, References } from "effect"
import { AgentSdk } from "../../src/sdk/AgentSdk.ts"
import { AgentSdkError } from "../../src/sdk/AgentSdkError.ts"
import { PermissionPolicy } from "../../src/sdk/PermissionPolicy.ts"
import * as SqliteClient from "../../src/engine/SqliteClient.ts"
import * as ScriptedModel from "../../src/testing/ScriptedModel.ts"
import * as AgentRuntime from "../../src/workflow/AgentRuntime.ts"
import * as ApprovalToken from "../../src/workflow/ApprovalToken.ts"
import { answer, ModelFault, ModelFaultLayer, modelFaultRetry } from "./Campaign.ts"
import * as FaultyModel from "./FaultyModel.ts"
import { checkOutputLog, checkRetries, type Violation } from "./Invariants.ts"
import { count, type ScenarioReport } from "./Report.ts"
import { readRun } from "./RunRecords.ts"

type Plan = ReadonlyArray<FaultyModel.Served | { readonly retryAfterSeconds: number }>

interface Case {
  readonly name: string
  readonly plan: Plan
  /** Retries of the durable layer. */
  readonly times: number
  /** `CLAUDE_CODE_MAX_RETRIES` for this step. */
  readonly cliRetries: number
  /** Attempts of the durable layer. */
  readonly attempts: number
  readonly requests: number
  /** The error reason it must end with; success otherwise. */
  readonly fails?: string
  /** The CLI must have waited this long between its first two requests (retry-after). */
  readonly waitedMs?: number
  readonly slow?: boolean
}

const cases: ReadonlyArray<Case> = [
  { name: "529-then-ok", plan: ["529", "ok"], times: 3, cliRetries: 0, attempts: 2, requests: 2 },
  { name: "429-twice-then-ok", plan: ["429", "429", "ok"], times: 3, cliRetries: 0, attempts: 3, requests: 3 },
  { name: "500-then-ok", plan: ["500", "ok"], times: 3, cliRetries: 0, attempts: 2, requests: 2 },
  // The CLI retries a cut stream itself, once, without streaming.
  { name: "cut-then-ok", plan: ["cut", "ok"], times: 3, cliRetries: 0, attempts: 1, requests: 2 },
  { name: "cut-twice-then-ok", plan: ["cut", "cut", "ok"], times: 3, cliRetries: 0, attempts: 2, requests: 3 },
  // ... and a hung one once, after its watchdog.
  { name: "hang-then-ok", plan: ["hang", "ok"], times: 3, cliRetries: 0, attempts: 1, requests: 2 },
  {
    name: "hang-twice-then-ok",
    plan: ["hang", "hang", "ok"],
    times: 3,
    cliRetries: 0,
    attempts: 2,
    requests: 3,
    slow: true
  },
  // retry-after is honoured by the CLI's own retries (the durable layer never sees the header).
  {
    name: "429-retry-after-2s-cli-retries",
    plan: [{ retryAfterSeconds: 2 }, "ok"],
    times: 3,
    cliRetries: 1,
    attempts: 1,
    requests: 2,
    waitedMs: 2000
  },
  {
    name: "529-cli-then-durable",
    plan: ["529", "529", "529", "ok"],
    times: 3,
    cliRetries: 2,
    attempts: 2,
    requests: 4
  },
  // Beyond the budget: a typed failure after exactly 1 + times attempts.
  { name: "529-always", plan: ["529"], times: 3, cliRetries: 0, attempts: 4, requests: 4, fails: "OverloadedError" },
  { name: "429-always", plan: ["429"], times: 2, cliRetries: 0, attempts: 3, requests: 3, fails: "RateLimitError" },
  { name: "500-always", plan: ["500"], times: 2, cliRetries: 0, attempts: 3, requests: 3, fails: "ApiError" },
  { name: "cut-always", plan: ["cut"], times: 2, cliRetries: 0, attempts: 3, requests: 6, fails: "ApiError" },
  {
    name: "hang-always",
    plan: ["hang"],
    times: 1,
    cliRetries: 0,
    attempts: 2,
    requests: 4,
    fails: "ApiError",
    slow: true
  }
]

export const run = (options: { readonly seed: number; readonly quick: boolean; readonly dir: string }) =>
  Effect.scoped(
    Effect.gen(function* () {
      const began = Date.now()
      const selected = cases.filter((c) => !options.quick || c.slow !== true)
      const key = (c: Case) => `s${options.seed}-model-${c.name}`
      const model = yield* FaultyModel.make({
        seed: options.seed,
        faultRate: 0,
        maxFaultsPerStep: 0,
        hangs: true,
        plans: new Map(selected.map((c) => [key(c), c.plan]))
      })
      const filename = Path.join(options.dir, "agent.db")
      const home = Path.join(options.dir, "home")
      Fs.mkdirSync(home, { recursive: true })
      const env = {
        ...ScriptedModel.sdkEnv(model.url, { home, maxRetries: 0 }),
        CLAUDE_ENABLE_BYTE_WATCHDOG: "1",
        CLAUDE_BYTE_STREAM_IDLE_TIMEOUT_MS: "10000"
      }
      const layer = ModelFaultLayer.pipe(
        Layer.provideMerge(AgentRuntime.layer({ _tag: "Sqlite", filename })),
        Layer.provideMerge(ApprovalToken.ApprovalSecret.layer(Redacted.make("a-secret-for-the-model-fault-cases"))),
        Layer.provideMerge(AgentSdk.layer({ env })),
        Layer.provide(PermissionPolicy.layerDenyAll)
      )
      const outcomes = yield* Effect.forEach(
        selected,
        (c) =>
          Effect.gen(function* () {
            const exit = yield* Effect.exit(
              ModelFault.execute({ key: key(c), times: c.times, cliRetries: c.cliRetries })
            )
            return {
              c,
              exit,
              runId: yield* ModelFault.executionId({ key: key(c), times: c.times, cliRetries: c.cliRetries })
            }
          }),
        { concurrency: "unbounded" }
      ).pipe(
        Effect.provide(layer),
        Effect.orDie,
        // The step's retries are logged at INFO; the checks below say what matters.
        Effect.provideService(References.MinimumLogLevel, "Error")
      )

      const violations: Array<Violation> = []
      const faults: Record<string, number> = {}
      let asExpected = 0
      const reader = SqliteClient.layer({ filename, readonly: true })
      for (const { c, exit, runId } of outcomes) {
        const k = key(c)
        const found: Array<Violation> = []
        const error = Exit.isFailure(exit) ? Cause.findErrorOption(exit.cause) : Option.none()
        const reason =
          Option.isSome(error) && error.value instanceof AgentSdkError ? error.value.reason._tag : undefined
        if (c.fails === undefined ? !(Exit.isSuccess(exit) && exit.value === answer(k, "ask")) : reason !== c.fails) {
          found.push({
            key: k,
            invariant: "model fault: expected end",
            detail: `expected ${c.fails ?? "success"}, got ${Exit.isSuccess(exit) ? JSON.stringify(exit.value) : (reason ?? Cause.pretty(exit.cause).slice(0, 300))}`
          })
        }
        const record = yield* readRun(runId).pipe(Effect.provide(reader), Effect.orDie)
        found.push(...checkOutputLog(k, record.events))
        found.push(...checkRetries(k, runId, "ask", record.events, modelFaultRetry(c.times)))
        const attempts = new Set(
          record.events
            .filter((e) => e.kind === "status" && e.payload?.state === "attempt_started")
            .map((e) => e.payload.attempt)
        ).size
        const requests = model.requestsOf(k)
        if (attempts !== c.attempts || requests.length !== c.requests) {
          found.push({
            key: k,
            invariant: "model fault: retried within budget",
            detail: `${attempts} attempts and ${requests.length} requests; expected ${c.attempts} and ${c.requests}`
          })
        }
        if (c.waitedMs !== undefined && requests.length >= 2 && requests[1]!.at - requests[0]!.at < c.waitedMs - 50) {
          found.push({
            key: k,
            invariant: "model fault: retry-after honoured",
            detail: `the CLI asked again after ${requests[1]!.at - requests[0]!.at} ms`
          })
        }
        for (const request of requests) if (request.served !== "ok") count(faults, `model ${request.served}`)
        if (found.length === 0) asExpected++
        violations.push(...found)
      }
      return {
        scenario: "model faults",
        engine: "SQLite, in process",
        runs: selected.length,
        kills: 0,
        faults,
        asExpected,
        violations,
        seconds: (Date.now() - began) / 1000,
        killPoints: {},
        notes: []
      } satisfies ScenarioReport
    })
  )
