/**
 * The real SDK and its real CLI binary against the scripted model server.
 */
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Layer, Option, Ref, Schema, Stream } from "effect"
import { AgentSdk } from "../../src/sdk/AgentSdk.ts"
import * as AgentToolkit from "../../src/sdk/AgentToolkit.ts"
import { PermissionPolicy } from "../../src/sdk/PermissionPolicy.ts"
import * as ScriptedModel from "../../src/testing/ScriptedModel.ts"
import { isAlive } from "./ProcessProbe.ts"

const setup = (script: ScriptedModel.Script, policy: Layer.Layer<PermissionPolicy> = PermissionPolicy.layerDenyAll) =>
  ScriptedModel.layerAgentSdk({ maxRetries: 0 }).pipe(
    Layer.provideMerge(ScriptedModel.ScriptedModel.layer(script)),
    Layer.provide(policy)
  )

class Ledger extends Context.Service<Ledger, Ref.Ref<ReadonlyArray<number>>>()("test/Ledger") {}

const math = AgentToolkit.make("math", [
  AgentToolkit.tool("add", {
    description: "Adds two numbers",
    parameters: Schema.Struct({ a: Schema.Number, b: Schema.Number }),
    handler: ({ a, b }) =>
      Effect.gen(function* () {
        const ledger = yield* Ledger
        yield* Ref.update(ledger, (sums) => [...sums, a + b])
        return String(a + b)
      })
  })
])

describe("AgentSdk with the real CLI", () => {
  it.live("answers a plain prompt with a typed summary", () =>
    Effect.gen(function* () {
      const sdk = yield* AgentSdk
      const model = yield* ScriptedModel.ScriptedModel
      const result = yield* sdk.run("What is the capital of France?")
      assert.strictEqual(result.text, "Paris.")
      assert.strictEqual(result.turns, 1)
      assert.strictEqual(result.usage.inputTokens, 42)
      assert.strictEqual(result.usage.outputTokens, 7)
      assert.strictEqual(result.stopReason, "end_turn")
      assert.match(result.sessionId, /^[0-9a-f-]{36}$/)
      const requests = yield* model.modelRequests
      assert.strictEqual(requests.length, 1)
      assert.strictEqual(ScriptedModel.lastUserText(requests[0]!), "What is the capital of France?")
      assert.strictEqual(requests[0]!.sessionId, result.sessionId)
      // Credentials never reach the request log.
      assert.strictEqual(requests[0]!.headers["x-api-key"], "<redacted>")
    }).pipe(Effect.provide(setup([ScriptedModel.text("Paris.", { inputTokens: 42, outputTokens: 7 })])))
  )

  it.live("streams partial messages in wire order", () =>
    Effect.gen(function* () {
      const sdk = yield* AgentSdk
      const handle = yield* sdk.query("Count", { includePartialMessages: true })
      const messages = yield* Stream.runCollect(handle.stream)
      const events = messages.flatMap((m) => (m.type === "stream_event" ? [m.event] : []))
      assert.deepStrictEqual(
        events.map((e) => e.type).filter((t, i, all) => t !== all[i - 1]),
        [
          "message_start",
          "content_block_start",
          "content_block_delta",
          "content_block_stop",
          "message_delta",
          "message_stop"
        ]
      )
      const deltas = events.flatMap((e) =>
        e.type === "content_block_delta" && e.delta.type === "text_delta" ? [e.delta.text] : []
      )
      assert.isAbove(deltas.length, 3)
      assert.strictEqual(deltas.join(""), "one, two, three, four, five")
      assert.strictEqual(messages[0]!.type, "system")
      assert.strictEqual(messages.at(-1)!.type, "result")
      const result = yield* handle.result
      assert.strictEqual(result.text, "one, two, three, four, five")
    }).pipe(Effect.scoped, Effect.provide(setup([ScriptedModel.text("one, two, three, four, five", { chunkSize: 5 })])))
  )

  it.live("runs an Effect tool the policy allows, in the caller's context", () =>
    Effect.gen(function* () {
      const sdk = yield* AgentSdk
      const model = yield* ScriptedModel.ScriptedModel
      const ledger = yield* Ref.make<ReadonlyArray<number>>([])
      const result = yield* sdk.run("Add 2 and 3", { toolkits: [math] }).pipe(Effect.provideService(Ledger, ledger))
      assert.strictEqual(result.text, "The sum is 5.")
      assert.deepStrictEqual(yield* Ref.get(ledger), [5])
      const requests = yield* model.modelRequests
      assert.strictEqual(requests.length, 2)
      const [toolResult] = ScriptedModel.toolResults(requests[1]!)
      assert.strictEqual(toolResult?.tool_use_id, "toolu_add")
      assert.include(JSON.stringify(toolResult?.content), "5")
      assert.notStrictEqual(toolResult?.is_error, true)
    }).pipe(
      Effect.provide(
        setup(
          [
            ScriptedModel.toolUse("mcp__math__add", { a: 2, b: 3 }, { id: "toolu_add" }),
            ScriptedModel.text("The sum is 5.")
          ],
          PermissionPolicy.layerAllow(["mcp__math__*"])
        )
      )
    )
  )

  it.live("refuses a tool the policy denies, and the tool never runs", () =>
    Effect.gen(function* () {
      const sdk = yield* AgentSdk
      const model = yield* ScriptedModel.ScriptedModel
      const ledger = yield* Ref.make<ReadonlyArray<number>>([])
      const result = yield* sdk.run("Add 2 and 3", { toolkits: [math] }).pipe(Effect.provideService(Ledger, ledger))
      assert.strictEqual(result.text, "I was not allowed to add.")
      assert.deepStrictEqual(yield* Ref.get(ledger), [])
      const [toolResult] = ScriptedModel.toolResults((yield* model.modelRequests)[1]!)
      assert.strictEqual(toolResult?.is_error, true)
      assert.include(JSON.stringify(toolResult?.content), "No permission policy allows the tool mcp__math__add")
    }).pipe(
      Effect.provide(
        setup([
          ScriptedModel.toolUse("mcp__math__add", { a: 2, b: 3 }),
          ScriptedModel.text("I was not allowed to add.")
        ])
      )
    )
  )

  it.live("resumes a session with the earlier conversation", () =>
    Effect.gen(function* () {
      const sdk = yield* AgentSdk
      const model = yield* ScriptedModel.ScriptedModel
      const first = yield* sdk.run("Remember the word: pelican")
      const second = yield* sdk.run("Which word did I ask you to remember?", { resume: first.sessionId })
      assert.strictEqual(second.text, "pelican")
      const requests = yield* model.modelRequests
      const resumed = ScriptedModel.conversationText(requests.at(-1)!)
      assert.isTrue(resumed.some((t) => t.includes("Remember the word: pelican")))
      assert.isTrue(resumed.some((t) => t.includes("Noted.")))
    }).pipe(Effect.provide(setup([ScriptedModel.text("Noted."), ScriptedModel.text("pelican")])))
  )

  it.live("interrupts mid-stream, fails with InterruptedError and leaves no process", () =>
    Effect.gen(function* () {
      const sdk = yield* AgentSdk
      const pid = yield* Effect.scoped(
        Effect.gen(function* () {
          const handle = yield* sdk.query("Write a long essay", { includePartialMessages: true })
          const seen = yield* handle.stream.pipe(
            Stream.tap((m) =>
              m.type === "stream_event" && m.event.type === "content_block_delta" ? handle.interrupt : Effect.void
            ),
            Stream.runCollect
          )
          const error = yield* Effect.flip(handle.result)
          assert.strictEqual(error.reason._tag, "InterruptedError")
          assert.isFalse(error.isRetryable)
          // The essay was cut short: far fewer deltas than the 200 scripted.
          const deltas = seen.filter((m) => m.type === "stream_event" && m.event.type === "content_block_delta")
          assert.isBelow(deltas.length, 200)
          return Option.getOrThrow(yield* handle.pid)
        })
      )
      assert.isFalse(isAlive(pid))
    }).pipe(Effect.provide(setup([ScriptedModel.text("word ".repeat(200), { chunkSize: 5, chunkDelayMs: 20 })])))
  )

  it.live("kills the process when the scope closes while the model hangs", () =>
    Effect.gen(function* () {
      const sdk = yield* AgentSdk
      const pid = yield* Effect.scoped(
        Effect.gen(function* () {
          const handle = yield* sdk.query("Hello")
          yield* Effect.forkScoped(Stream.runDrain(handle.stream))
          yield* handle.sessionId
          const running = Option.getOrThrow(yield* handle.pid)
          assert.isTrue(isAlive(running))
          return running
        })
      )
      assert.isFalse(isAlive(pid))
      assert.strictEqual(yield* sdk.active, 0)
    }).pipe(Effect.provide(setup([ScriptedModel.hang])))
  )

  it.live("surfaces an overloaded model as a retryable OverloadedError", () =>
    Effect.gen(function* () {
      const sdk = yield* AgentSdk
      const error = yield* Effect.flip(sdk.run("Hello"))
      assert.strictEqual(error.reason._tag, "OverloadedError")
      assert.isTrue(error.isRetryable)
    }).pipe(Effect.provide(setup([ScriptedModel.error(529)])))
  )

  it.live("surfaces a rate limit as a retryable RateLimitError", () =>
    Effect.gen(function* () {
      const sdk = yield* AgentSdk
      const error = yield* Effect.flip(sdk.run("Hello"))
      assert.strictEqual(error.reason._tag, "RateLimitError")
      assert.isTrue(error.isRetryable)
    }).pipe(Effect.provide(setup([ScriptedModel.error(429, { retryAfterSeconds: 1 })])))
  )

  it.live("takes more user messages in a multi-turn query", () =>
    Effect.gen(function* () {
      const sdk = yield* AgentSdk
      const model = yield* ScriptedModel.ScriptedModel
      const handle = yield* sdk.query("First question", { multiTurn: true })
      const results = yield* handle.stream.pipe(
        Stream.filter((m) => m.type === "result"),
        Stream.zipWithIndex,
        Stream.tap(([, index]) => (index === 0 ? handle.send("Second question") : handle.endInput)),
        Stream.runCollect
      )
      assert.strictEqual(results.length, 2)
      const requests = yield* model.modelRequests
      assert.deepStrictEqual(requests.map(ScriptedModel.lastUserText), ["First question", "Second question"])
      assert.strictEqual((yield* handle.result).text, "Second answer")
    }).pipe(
      Effect.scoped,
      Effect.provide(setup([ScriptedModel.text("First answer"), ScriptedModel.text("Second answer")]))
    )
  )

  it.live("prewarms a process before the prompt is known", () =>
    Effect.gen(function* () {
      const sdk = yield* AgentSdk
      const model = yield* ScriptedModel.ScriptedModel
      const pid = yield* Effect.scoped(
        Effect.gen(function* () {
          const spare = yield* sdk.prewarm({ includePartialMessages: true })
          // Started and initialised, and the model has not been asked anything yet.
          assert.strictEqual(yield* sdk.active, 1)
          assert.strictEqual((yield* model.modelRequests).length, 0)
          const handle = yield* spare.query("Warm hello")
          const result = yield* handle.result
          assert.strictEqual(result.text, "warm answer")
          const claimedTwice = yield* Effect.exit(spare.query("again"))
          assert.isTrue(claimedTwice._tag === "Failure")
          return Option.getOrThrow(yield* handle.pid)
        })
      )
      assert.isFalse(isAlive(pid))
      assert.strictEqual(ScriptedModel.lastUserText((yield* model.modelRequests)[0]!), "Warm hello")
    }).pipe(Effect.provide(setup([ScriptedModel.text("warm answer")])))
  )
})
