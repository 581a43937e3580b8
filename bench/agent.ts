/**
 * The agent path: what our wrapper costs over the raw SDK, and what
 * prewarming saves on time to first token. Every variant runs the real CLI
 * against the scripted model, interleaved in one run so that the machine's
 * noise falls on all of them alike.
 */
import * as Sdk from "@anthropic-ai/claude-agent-sdk"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { Effect, Layer, Stream } from "effect"
import * as AgentMessage from "../src/sdk/AgentMessage.ts"
import { AgentSdk } from "../src/sdk/AgentSdk.ts"
import { PermissionPolicy } from "../src/sdk/PermissionPolicy.ts"
import * as ScriptedModel from "../src/testing/ScriptedModel.ts"
import type { Measurement } from "./Measurement.ts"

const answer = () => ScriptedModel.text("The quick brown fox jumps over the lazy dog.", { chunkSize: 4 })

const timed = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function* () {
    const start = performance.now()
    yield* effect
    return performance.now() - start
  })

/** Milliseconds from handing over the prompt to the first text delta. */
const firstToken = (handle: { readonly stream: Stream.Stream<AgentMessage.AgentMessage, unknown> }, start: number) =>
  handle.stream.pipe(
    Stream.filter((m) => AgentMessage.textDelta(m) !== undefined),
    Stream.take(1),
    Stream.runDrain,
    Effect.map(() => performance.now() - start)
  )

export const run = (iterations: number) =>
  Effect.gen(function* () {
    const model = yield* ScriptedModel.ScriptedModel
    const sdk = yield* AgentSdk
    const home = Fs.mkdtempSync(Path.join(Os.tmpdir(), "bench-agent-"))
    const env = ScriptedModel.sdkEnv(model.url, { home, maxRetries: 0 })
    yield* model.setScript(ScriptedModel.perSession(() => [answer()]))

    const rawQuery = Effect.promise(async () => {
      const q = Sdk.query({ prompt: "bench", options: { env } })
      for await (const _ of q) {
        /* drain */
      }
    })
    const oursQuery = sdk.run("bench")
    const coldTtft = Effect.scoped(
      Effect.gen(function* () {
        const start = performance.now()
        const handle = yield* sdk.query("bench", { includePartialMessages: true })
        return yield* firstToken(handle, start)
      })
    )
    const warmTtft = Effect.scoped(
      Effect.gen(function* () {
        const spare = yield* sdk.prewarm({ includePartialMessages: true })
        const start = performance.now()
        const handle = yield* spare.query("bench")
        return yield* firstToken(handle, start)
      })
    )

    const samples = {
      raw: [] as Array<number>,
      ours: [] as Array<number>,
      cold: [] as Array<number>,
      warm: [] as Array<number>
    }
    // One warm-up of each, not counted: the first spawn pays for disk caches.
    yield* rawQuery
    yield* oursQuery
    for (let i = 0; i < iterations; i++) {
      samples.raw.push(yield* timed(rawQuery))
      samples.ours.push(yield* timed(oursQuery))
      samples.cold.push(yield* coldTtft)
      samples.warm.push(yield* warmTtft)
    }
    Fs.rmSync(home, { recursive: true, force: true })
    const measurements: Array<Measurement> = [
      { group: "Agent path", name: "raw SDK query(), wall time per query", unit: "ms", samples: samples.raw },
      {
        group: "Agent path",
        name: "AgentSdk.run, wall time per query",
        unit: "ms",
        samples: samples.ours,
        baseline: "raw SDK query(), wall time per query",
        target: { ratio: 1.05, text: "≤ 5 % over the raw SDK" }
      },
      { group: "Agent path", name: "time to first token, cold query", unit: "ms", samples: samples.cold },
      {
        group: "Agent path",
        name: "time to first token, prewarmed query",
        unit: "ms",
        samples: samples.warm,
        baseline: "time to first token, cold query"
      }
    ]
    return measurements
  }).pipe(
    Effect.provide(
      ScriptedModel.layerAgentSdk({ maxRetries: 0 }).pipe(
        Layer.provideMerge(ScriptedModel.ScriptedModel.layer()),
        Layer.provide(PermissionPolicy.layerDenyAll)
      )
    )
  )
