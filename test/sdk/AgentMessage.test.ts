import { assert, describe, it } from "@effect/vitest"
import { Effect, Option } from "effect"
import * as AgentMessage from "../../src/sdk/AgentMessage.ts"

const usage = { input_tokens: 10, output_tokens: 5, cache_read_input_tokens: 2, cache_creation_input_tokens: null }

const result = (overrides: Record<string, unknown>) =>
  ({
    type: "result",
    subtype: "success",
    session_id: "s-1",
    is_error: false,
    num_turns: 2,
    duration_ms: 120,
    total_cost_usd: 0.25,
    stop_reason: "end_turn",
    usage,
    result: "done",
    errors: [],
    ...overrides
  }) as unknown as AgentMessage.ResultMessage

const assistantWithError = (error: string) =>
  Option.some({ type: "assistant", error, message: { content: [] } } as unknown as AgentMessage.AssistantMessage)

const reasonOf = (
  message: AgentMessage.ResultMessage,
  lastAssistant: Option.Option<AgentMessage.AssistantMessage> = Option.none(),
  interrupted = false
) =>
  AgentMessage.toResult(message, { lastAssistant, interrupted }).pipe(
    Effect.flip,
    Effect.map((error) => error.reason)
  )

describe("AgentMessage.decode", () => {
  it.effect("passes a modelled message through unchanged", () =>
    Effect.gen(function* () {
      const raw = { ...result({}), extra_field_from_a_newer_cli: { kept: true } }
      const decoded = yield* AgentMessage.decode(raw)
      assert.strictEqual(decoded, raw)
    })
  )

  it.effect("passes kinds it does not model through", () =>
    Effect.gen(function* () {
      const raw = { type: "system", subtype: "some_future_notice", anything: 1 }
      assert.strictEqual<unknown>(yield* AgentMessage.decode(raw), raw)
    })
  )

  it.effect("rejects a modelled message missing what we rely on", () =>
    Effect.gen(function* () {
      const error = yield* Effect.flip(AgentMessage.decode({ type: "result", subtype: "success", session_id: "s" }))
      assert.strictEqual(error.reason._tag, "MalformedMessageError")
      assert.isFalse(error.isRetryable)
    })
  )

  it.effect("rejects something that is not a message", () =>
    Effect.gen(function* () {
      const error = yield* Effect.flip(AgentMessage.decode("not json"))
      assert.strictEqual(error.reason._tag, "MalformedMessageError")
    })
  )
})

describe("AgentMessage.toResult", () => {
  it.effect("summarises a successful turn", () =>
    Effect.gen(function* () {
      const summary = yield* AgentMessage.toResult(result({}), { lastAssistant: Option.none(), interrupted: false })
      assert.deepStrictEqual(
        { ...summary },
        {
          text: "done",
          sessionId: "s-1",
          turns: 2,
          usage: { inputTokens: 10, outputTokens: 5, cacheReadInputTokens: 2, cacheCreationInputTokens: 0 },
          costUsd: 0.25,
          stopReason: "end_turn",
          durationMs: 120
        }
      )
    })
  )

  it.effect.each([
    { status: 429, kind: "rate_limit", tag: "RateLimitError", retryable: true },
    { status: 529, kind: "overloaded", tag: "OverloadedError", retryable: true },
    { status: 401, kind: "authentication_failed", tag: "AuthenticationError", retryable: false },
    { status: 500, kind: "server_error", tag: "ApiError", retryable: true },
    { status: 400, kind: "invalid_request", tag: "ApiError", retryable: false },
    { status: null, kind: "unknown", tag: "ApiError", retryable: true }
  ])("classifies an API failure $status as $tag", ({ status, kind, tag, retryable }) =>
    Effect.gen(function* () {
      const reason = yield* reasonOf(
        result({ is_error: true, api_error_status: status, result: "API Error" }),
        assistantWithError(kind)
      )
      assert.strictEqual(reason._tag, tag)
      assert.strictEqual(reason.isRetryable, retryable)
    })
  )

  it.effect("reports limits with the turns and cost spent", () =>
    Effect.gen(function* () {
      const reason = yield* reasonOf(result({ subtype: "error_max_turns", is_error: true }))
      assert.strictEqual(reason._tag, "LimitExceededError")
      if (reason._tag === "LimitExceededError") {
        assert.strictEqual(reason.limit, "max_turns")
        assert.strictEqual(reason.turns, 2)
      }
    })
  )

  it.effect("tells our own interrupt apart from an execution error", () =>
    Effect.gen(function* () {
      const failed = result({ subtype: "error_during_execution", is_error: true, errors: ["boom"] })
      assert.strictEqual((yield* reasonOf(failed, Option.none(), true))._tag, "InterruptedError")
      const reason = yield* reasonOf(failed, Option.none(), false)
      assert.strictEqual(reason._tag, "ExecutionError")
      assert.include(reason.message, "boom")
    })
  )
})
