/**
 * One agent query, streamed live: the first thing to run.
 *
 * Without ANTHROPIC_API_KEY it starts the built-in scripted model on 127.0.0.1
 * and the real Claude Code CLI talks to that; with a key it talks to the real
 * API. Run it with `npm run example:query` (or `node examples/query.ts "your prompt"`).
 */
import { NodeRuntime } from "@effect/platform-node"
import { Console, Effect, Layer, Stream } from "effect"
import * as AgentMessage from "../src/sdk/AgentMessage.ts"
import { AgentSdk } from "../src/sdk/AgentSdk.ts"
import { PermissionPolicy } from "../src/sdk/PermissionPolicy.ts"
import * as ScriptedModel from "../src/testing/ScriptedModel.ts"

const prompt = process.argv[2] ?? "In two sentences: why do durable workflows suit long-running agents?"

const scripted = ScriptedModel.layerAgentSdk().pipe(
  Layer.provide(
    ScriptedModel.ScriptedModel.layer([
      ScriptedModel.text(
        "Agents run for minutes and wait days for people, so their progress has to outlive processes. " +
          "A durable workflow records each step once and resumes where it stopped instead of starting over.",
        { chunkSize: 6, chunkDelayMs: 15, inputTokens: 24, outputTokens: 38 }
      )
    ])
  )
)

const useRealApi = (process.env.ANTHROPIC_API_KEY ?? "") !== ""

const program = Effect.gen(function* () {
  yield* Console.log(
    useRealApi
      ? "Using the Anthropic API (ANTHROPIC_API_KEY is set)."
      : "No ANTHROPIC_API_KEY: using the built-in scripted model."
  )
  yield* Console.log(`> ${prompt}\n`)
  const sdk = yield* AgentSdk
  const handle = yield* sdk.query(prompt, { includePartialMessages: true, maxTurns: 1 })
  yield* handle.stream.pipe(
    Stream.map(AgentMessage.textDelta),
    Stream.runForEach((text) => (text === undefined ? Effect.void : Effect.sync(() => process.stdout.write(text))))
  )
  const result = yield* handle.result
  yield* Console.log(
    `\n\nsession ${result.sessionId} · ${result.turns} turn(s) · ` +
      `${result.usage.inputTokens} in / ${result.usage.outputTokens} out tokens · $${result.costUsd.toFixed(5)}`
  )
}).pipe(
  Effect.scoped,
  Effect.provide(useRealApi ? AgentSdk.layerConfig : scripted),
  Effect.provide(PermissionPolicy.layerDenyAll)
)

NodeRuntime.runMain(program)
