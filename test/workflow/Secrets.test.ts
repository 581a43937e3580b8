/**
 * Secrets stay secret: the API key, the approval secret and the approval
 * tokens of a PlanAndAct run appear in none of its logs, spans, errors,
 * output events or database files.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { Effect, Layer, Logger, Option, Redacted, Tracer } from "effect"
import { PlanAndAct, PlanAndActLayer } from "../../examples/PlanAndAct.ts"
import { AgentOutput } from "../../src/output/AgentOutput.ts"
import { AgentSdk } from "../../src/sdk/AgentSdk.ts"
import { PermissionPolicy } from "../../src/sdk/PermissionPolicy.ts"
import * as ScriptedModel from "../../src/testing/ScriptedModel.ts"
import * as AgentRuntime from "../../src/workflow/AgentRuntime.ts"
import * as ApprovalToken from "../../src/workflow/ApprovalToken.ts"
import { Approvals } from "../../src/workflow/Approvals.ts"

const apiKey = "sk-ant-api03-secret-key-that-must-never-leak"
const approvalSecret = "approval-secret-that-must-never-leak-0123456789"

describe("secrets", () => {
  it.live("never reach logs, spans, errors, output events or the database", () => {
    const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "agent-secrets-"))
    const filename = Path.join(dir, "agent.db")
    const logs: Array<string> = []
    const spans: Array<Tracer.NativeSpan> = []
    const tracer = Tracer.make({
      span(options) {
        const span = new Tracer.NativeSpan(options)
        spans.push(span)
        return span
      }
    })
    const capture = Logger.layer([
      Logger.make((options) => {
        logs.push(String(Logger.formatJson.log(options)))
      })
    ])
    const sdk = Layer.unwrap(
      Effect.map(ScriptedModel.ScriptedModel, (model) => {
        const { ANTHROPIC_API_KEY: _, ...env } = ScriptedModel.sdkEnv(model.url, { home: dir, maxRetries: 0 })
        return AgentSdk.layer({ env, apiKey: Redacted.make(apiKey) })
      })
    )
    const layer = PlanAndActLayer.pipe(
      Layer.provideMerge(AgentRuntime.layer({ _tag: "Sqlite", filename })),
      Layer.provideMerge(ApprovalToken.ApprovalSecret.layer(Redacted.make(approvalSecret))),
      Layer.provideMerge(sdk),
      Layer.provideMerge(ScriptedModel.ScriptedModel.layer([ScriptedModel.text("1. Plan."), ScriptedModel.error(401)])),
      Layer.provide(PermissionPolicy.layerDenyAll),
      Layer.provide(Layer.succeed(Tracer.Tracer)(tracer))
    )
    return Effect.gen(function* () {
      const approvals = yield* Approvals
      const output = yield* AgentOutput
      const model = yield* ScriptedModel.ScriptedModel
      const runId = yield* PlanAndAct.execute({ task: "Keep a secret" }, { discard: true })
      let token = ""
      while (token === "") {
        const wait = (yield* approvals.list({ runId, state: "pending" }))[0]
        if (wait !== undefined) token = yield* approvals.tokenFor(wait)
        else yield* Effect.sleep("20 millis")
      }
      // A forged token's error must not echo the token either.
      const forged = yield* Effect.flip(approvals.decide(`${token}x`, { approved: true }))
      yield* approvals.decide(token, { approved: true, comment: "fine" })
      // The act step fails (401): its error travels through events and the result.
      let result = Option.none<unknown>()
      while (Option.isNone(result)) {
        const polled = yield* PlanAndAct.poll(runId)
        result = Option.filter(polled, (r) => r._tag === "Complete")
        if (Option.isNone(result)) yield* Effect.sleep("20 millis")
      }
      const requests = yield* model.modelRequests
      assert.isAtLeast(requests.length, 2, "the key was used: the model was called")

      const haystacks: Record<string, string> = {
        logs: logs.join("\n"),
        spans: JSON.stringify(spans.map((s) => ({ name: s.name, attributes: [...s.attributes] }))),
        error: `${String(forged)} ${JSON.stringify(forged)}`,
        result: JSON.stringify(result.value, (_, v) => (typeof v === "bigint" ? String(v) : v)) + String(result.value),
        events: JSON.stringify(yield* output.read(runId, { limit: 10_000 })),
        requestLog: JSON.stringify(requests.map((r) => r.headers)),
        database: Fs.readdirSync(dir)
          .filter((f) => f.startsWith("agent.db"))
          .map((f) => Fs.readFileSync(Path.join(dir, f)).toString("latin1"))
          .join("")
      }
      assert.isAbove(haystacks.database!.length, 0)
      assert.isAbove(logs.length, 0)
      assert.isAbove(spans.length, 0)
      for (const [where, text] of Object.entries(haystacks)) {
        for (const [what, secret] of [
          ["API key", apiKey],
          ["approval secret", approvalSecret],
          ["approval token", token],
          ["token signature", token.split(".")[2]!]
        ] as const) {
          assert.notInclude(text, secret, `the ${what} leaked into ${where}`)
        }
      }
    }).pipe(Effect.provide(layer), Effect.provide(capture), Effect.provideService(Tracer.Tracer, tracer))
  })
})
