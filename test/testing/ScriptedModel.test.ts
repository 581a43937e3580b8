import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as ScriptedModel from "../../src/testing/ScriptedModel.ts"

const body = (text: string, options: { readonly stream?: boolean } = {}) =>
  JSON.stringify({
    model: "claude-test",
    max_tokens: 100,
    stream: options.stream ?? true,
    messages: [
      {
        role: "user",
        content: [
          { type: "text", text: "<system-reminder>ignore</system-reminder>" },
          { type: "text", text }
        ]
      }
    ]
  })

const post = (url: string, payload: string, headers: Record<string, string> = {}) =>
  Effect.promise(() =>
    fetch(`${url}/v1/messages?beta=true`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-api-key": "sk-secret", ...headers },
      body: payload
    })
  )

// Test-side JSON of the wire is deliberately untyped: the assertions are the check.
const json = (response: Response): Effect.Effect<any> => Effect.promise(() => response.json())

const sseEvents = (raw: string) =>
  raw
    .split("\n\n")
    .filter((chunk) => chunk.startsWith("event: "))
    .map((chunk) => {
      const [eventLine, dataLine] = chunk.split("\n")
      return { event: eventLine!.slice(7), data: JSON.parse(dataLine!.slice(6)) }
    })

const answer = (url: string, session: string) =>
  post(url, body("q", { stream: false }), { "x-claude-code-session-id": session }).pipe(
    Effect.flatMap(json),
    Effect.map((m) => m.content[0].text as string)
  )

const withModel = <A, E>(
  script: ScriptedModel.Script,
  f: (model: ScriptedModel.ScriptedModel["Service"]) => Effect.Effect<A, E>
) => Effect.scoped(Effect.flatMap(ScriptedModel.make(script), f))

describe("ScriptedModel wire format", () => {
  it.live("streams a text turn as Messages API SSE events", () =>
    withModel([ScriptedModel.text("Hello world", { chunkSize: 4, inputTokens: 3, outputTokens: 2 })], (model) =>
      Effect.gen(function* () {
        const response = yield* post(model.url, body("hi"))
        assert.strictEqual(response.status, 200)
        assert.strictEqual(response.headers.get("content-type"), "text/event-stream")
        const events = sseEvents(yield* Effect.promise(() => response.text()))
        assert.deepStrictEqual(
          events.map((e) => e.event),
          [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
          ]
        )
        assert.strictEqual(events.map((e) => e.data.delta?.text ?? "").join(""), "Hello world")
        assert.strictEqual(events[0]!.data.message.usage.input_tokens, 3)
        assert.strictEqual(events.at(-2)!.data.usage.output_tokens, 2)
        assert.strictEqual(events.at(-2)!.data.delta.stop_reason, "end_turn")
      })
    )
  )

  it.live("streams tool input as JSON deltas and stops for tool_use", () =>
    withModel([ScriptedModel.toolUse("Read", { file_path: "/etc/hostname" }, { id: "toolu_1" })], (model) =>
      Effect.gen(function* () {
        const response = yield* post(model.url, body("read"))
        const events = sseEvents(yield* Effect.promise(() => response.text()))
        assert.strictEqual(events[1]!.data.content_block.type, "tool_use")
        assert.strictEqual(events[1]!.data.content_block.id, "toolu_1")
        const input = events
          .flatMap((e) => (e.data.delta?.type === "input_json_delta" ? [e.data.delta.partial_json] : []))
          .join("")
        assert.deepStrictEqual(JSON.parse(input), { file_path: "/etc/hostname" })
        assert.strictEqual(events.at(-2)!.data.delta.stop_reason, "tool_use")
      })
    )
  )

  it.live("answers a non-streaming request with a Message object", () =>
    withModel([ScriptedModel.text("plain")], (model) =>
      Effect.gen(function* () {
        const response = yield* post(model.url, body("hi", { stream: false }))
        const message = yield* json(response)
        assert.strictEqual(message.type, "message")
        assert.deepStrictEqual(message.content, [{ type: "text", text: "plain" }])
      })
    )
  )

  it.live.each([
    { status: 429, type: "rate_limit_error" },
    { status: 529, type: "overloaded_error" },
    { status: 500, type: "api_error" },
    { status: 401, type: "authentication_error" }
  ])("fails with the API's $status error body", ({ status, type }) =>
    withModel([ScriptedModel.error(status, { retryAfterSeconds: 2 })], (model) =>
      Effect.gen(function* () {
        const response = yield* post(model.url, body("hi"))
        assert.strictEqual(response.status, status)
        assert.strictEqual(response.headers.get("retry-after"), "2")
        assert.isNotNull(response.headers.get("request-id"))
        const payload = yield* json(response)
        assert.strictEqual(payload.type, "error")
        assert.strictEqual(payload.error.type, type)
      })
    )
  )

  it.live("cuts a stream mid-message", () =>
    withModel([ScriptedModel.cut(ScriptedModel.text("never finished"), 2)], (model) =>
      Effect.gen(function* () {
        const response = yield* post(model.url, body("hi"))
        assert.strictEqual(response.status, 200)
        const outcome = yield* Effect.promise(() =>
          response.text().then(
            () => "complete",
            () => "cut"
          )
        )
        assert.strictEqual(outcome, "cut")
      })
    )
  )

  it.live("says clearly when the script is exhausted, and records everything", () =>
    withModel([ScriptedModel.text("only one")], (model) =>
      Effect.gen(function* () {
        yield* post(model.url, body("first"))
        const response = yield* post(model.url, body("second"), { "x-claude-code-session-id": "s-1" })
        assert.strictEqual(response.status, 400)
        const payload = yield* json(response)
        assert.include(payload.error.message, "script is exhausted after 1 turn")
        const requests = yield* model.modelRequests
        assert.deepStrictEqual(requests.map(ScriptedModel.lastUserText), ["first", "second"])
        assert.strictEqual(requests[1]!.sessionId, "s-1")
        assert.strictEqual(requests[0]!.headers["x-api-key"], "<redacted>")
      })
    )
  )

  it.live("gives each session its own script", () =>
    withModel(
      ScriptedModel.perSession(() => [ScriptedModel.text("a"), ScriptedModel.text("b")]),
      (model) =>
        Effect.gen(function* () {
          assert.deepStrictEqual(
            [
              yield* answer(model.url, "one"),
              yield* answer(model.url, "two"),
              yield* answer(model.url, "one"),
              yield* answer(model.url, "two")
            ],
            ["a", "a", "b", "b"]
          )
        })
    )
  )

  it.live("answers token counting and rejects unknown routes with a JSON error", () =>
    withModel([], (model) =>
      Effect.gen(function* () {
        const counted = yield* Effect.promise(() =>
          fetch(`${model.url}/v1/messages/count_tokens`, { method: "POST", body: body("count me") }).then(
            (r): Promise<any> => r.json()
          )
        )
        assert.isAbove(counted.input_tokens, 0)
        const missing = yield* Effect.promise(() => fetch(`${model.url}/v1/nothing`))
        assert.strictEqual(missing.status, 404)
        assert.strictEqual((yield* json(missing)).error.type, "not_found_error")
      })
    )
  )
})
