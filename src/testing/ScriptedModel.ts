/**
 * A scripted Anthropic Messages API server on 127.0.0.1, for testing agents
 * offline with the real Claude Agent SDK and its real CLI.
 *
 * Point the CLI at it with `ANTHROPIC_BASE_URL` (see `sdkEnv`, or
 * `layerAgentSdk`), say what the model answers turn by turn, and assert on the
 * requests the agent sent. It speaks the streaming wire format the CLI uses
 * (SSE `message_start` … `message_stop`), the non-streaming one, and the API's
 * error bodies, and it can misbehave on purpose: slow streams, 429/529/5xx,
 * streams cut mid-message and connections that hang.
 *
 * @since 0.1.0
 */
import * as Http from "node:http"
import type { AddressInfo } from "node:net"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { Context, Effect, Layer, Option, Predicate, Schema } from "effect"
import { AgentSdk } from "../sdk/AgentSdk.ts"
import type { PermissionPolicy } from "../sdk/PermissionPolicy.ts"

/**
 * A content block the scripted model answers with.
 *
 * @category models
 */
export type Block =
  | { readonly type: "text"; readonly text: string }
  | { readonly type: "thinking"; readonly thinking: string }
  | {
      readonly type: "tool_use"
      readonly id: string
      readonly name: string
      readonly input: Readonly<Record<string, unknown>>
    }

/**
 * One answer of the model to one request.
 *
 * @category models
 */
export type Turn =
  | {
      readonly _tag: "Message"
      readonly blocks: ReadonlyArray<Block>
      readonly stopReason: "end_turn" | "tool_use" | "max_tokens"
      readonly usage: { readonly inputTokens: number; readonly outputTokens: number }
      /** Pause before each streamed event: a slow model. */
      readonly chunkDelayMs: number
      /** Characters per `text_delta`. */
      readonly chunkSize: number
    }
  | {
      readonly _tag: "Error"
      readonly status: number
      readonly errorType: string
      readonly message: string
      readonly retryAfterSeconds?: number | undefined
    }
  | { readonly _tag: "Cut"; readonly turn: Turn & { readonly _tag: "Message" }; readonly afterEvents: number }
  | { readonly _tag: "Hang" }

/**
 * A request as the server received it.
 *
 * @category models
 */
export interface RecordedRequest {
  readonly method: string
  readonly path: string
  /** Headers, with credentials replaced by `<redacted>`. */
  readonly headers: Readonly<Record<string, string>>
  readonly body: MessagesRequest | undefined
  /** `x-claude-code-session-id`: which agent session sent it. */
  readonly sessionId: string | undefined
}

/**
 * Decides the answer to a model request. A plain list is consumed in order by
 * all sessions together; `perSession` gives each session its own list.
 *
 * @category models
 */
export type Script = ReadonlyArray<Turn> | ((request: RecordedRequest & { readonly body: MessagesRequest }) => Turn)

const Message = Schema.Struct({
  role: Schema.String,
  content: Schema.Union([Schema.String, Schema.Array(Schema.Struct({ type: Schema.String }))])
})

/**
 * The part of a Messages API request body the server reads.
 *
 * @category schemas
 */
export const MessagesRequest = Schema.Struct({
  model: Schema.String,
  messages: Schema.Array(Message),
  stream: Schema.optional(Schema.Boolean),
  max_tokens: Schema.optional(Schema.Number),
  tools: Schema.optional(Schema.Array(Schema.Struct({ name: Schema.String })))
})

/** @category models */
export type MessagesRequest = typeof MessagesRequest.Type

const isMessagesRequest = Schema.is(MessagesRequest)

// ----------------------------------------------------------------------------
// turns
// ----------------------------------------------------------------------------

let toolUseCounter = 0

const message = (
  blocks: ReadonlyArray<Block>,
  options: {
    readonly stopReason?: "end_turn" | "tool_use" | "max_tokens"
    readonly inputTokens?: number
    readonly outputTokens?: number
    readonly chunkDelayMs?: number
    readonly chunkSize?: number
  } = {}
): Turn & { readonly _tag: "Message" } => ({
  _tag: "Message",
  blocks,
  stopReason: options.stopReason ?? (blocks.some((b) => b.type === "tool_use") ? "tool_use" : "end_turn"),
  usage: { inputTokens: options.inputTokens ?? 10, outputTokens: options.outputTokens ?? 5 },
  chunkDelayMs: options.chunkDelayMs ?? 0,
  chunkSize: options.chunkSize ?? 8
})

/**
 * Answers with text, streamed in several deltas.
 *
 * @category turns
 */
export const text = (content: string, options?: Parameters<typeof message>[1]): Turn & { readonly _tag: "Message" } =>
  message([{ type: "text", text: content }], options)

/**
 * Asks to call a tool. Built-in tools use their own names (`Read`), tools of
 * an in-process toolkit `mcp__<toolkit>__<tool>`.
 *
 * @category turns
 */
export const toolUse = (
  name: string,
  input: Readonly<Record<string, unknown>>,
  options?: Parameters<typeof message>[1] & { readonly id?: string; readonly text?: string }
): Turn & { readonly _tag: "Message" } =>
  message(
    [
      ...(options?.text !== undefined ? [{ type: "text" as const, text: options.text }] : []),
      { type: "tool_use", id: options?.id ?? `toolu_scripted_${++toolUseCounter}`, name, input }
    ],
    options
  )

/**
 * Answers with any blocks.
 *
 * @category turns
 */
export const blocks: typeof message = message

const errorTypes: Readonly<Record<number, string>> = {
  400: "invalid_request_error",
  401: "authentication_error",
  403: "permission_error",
  404: "not_found_error",
  413: "request_too_large",
  429: "rate_limit_error",
  500: "api_error",
  529: "overloaded_error"
}

/**
 * Fails the request with the API's error body for `status`.
 *
 * @category turns
 */
export const error = (
  status: number,
  options: { readonly message?: string; readonly retryAfterSeconds?: number } = {}
): Turn => ({
  _tag: "Error",
  status,
  errorType: errorTypes[status] ?? "api_error",
  message: options.message ?? `Scripted ${status}`,
  retryAfterSeconds: options.retryAfterSeconds
})

/**
 * Starts streaming `turn` and destroys the connection after `afterEvents` events.
 *
 * @category turns
 */
export const cut = (turn: Turn & { readonly _tag: "Message" }, afterEvents: number): Turn => ({
  _tag: "Cut",
  turn,
  afterEvents
})

/**
 * Sends the response headers, then nothing, until the client gives up.
 *
 * @category turns
 */
export const hang: Turn = { _tag: "Hang" }

/**
 * Gives every agent session its own copy of a list of turns.
 *
 * @category scripts
 */
export const perSession = (turns: () => ReadonlyArray<Turn>): Script => {
  const cursors = new Map<string, { readonly turns: ReadonlyArray<Turn>; index: number }>()
  return (request) => {
    const key = request.sessionId ?? "<no session>"
    let cursor = cursors.get(key)
    if (cursor === undefined) {
      cursor = { turns: turns(), index: 0 }
      cursors.set(key, cursor)
    }
    return cursor.turns[cursor.index++] ?? exhausted(cursor.turns.length)
  }
}

const exhausted = (count: number): Turn =>
  error(400, { message: `ScriptedModel: the script is exhausted after ${count} turn(s)` })

// ----------------------------------------------------------------------------
// reading requests
// ----------------------------------------------------------------------------

const textOf = (content: MessagesRequest["messages"][number]["content"]): ReadonlyArray<string> =>
  typeof content === "string"
    ? [content]
    : content.flatMap((block) =>
        block.type === "text" && Predicate.hasProperty(block, "text") && Predicate.isString(block.text)
          ? [block.text]
          : []
      )

/**
 * The text the user wrote last in a request, without the `<system-reminder>`
 * blocks the CLI adds to user messages.
 *
 * @category accessors
 */
export const lastUserText = (request: Pick<RecordedRequest, "body">): string => {
  const messages = request.body?.messages ?? []
  for (let i = messages.length - 1; i >= 0; i--) {
    const entry = messages[i]!
    if (entry.role !== "user") continue
    const parts = textOf(entry.content).filter((t) => !t.trimStart().startsWith("<system-reminder>"))
    if (parts.length > 0) return parts.join("\n")
  }
  return ""
}

/**
 * The `tool_result` blocks of a request's last user message.
 *
 * @category accessors
 */
export const toolResults = (
  request: Pick<RecordedRequest, "body">
): ReadonlyArray<{ readonly tool_use_id: string; readonly content: unknown; readonly is_error?: boolean }> => {
  const last = request.body?.messages.findLast((m) => m.role === "user")
  if (last === undefined || typeof last.content === "string") return []
  return last.content.filter((block) => block.type === "tool_result") as any
}

/**
 * Every text in a request's conversation, user and assistant alike: what a
 * resumed session must carry.
 *
 * @category accessors
 */
export const conversationText = (request: Pick<RecordedRequest, "body">): ReadonlyArray<string> =>
  (request.body?.messages ?? []).flatMap((m) => textOf(m.content))

// ----------------------------------------------------------------------------
// the wire
// ----------------------------------------------------------------------------

const sse = (event: { readonly type: string }) => `event: ${event.type}\ndata: ${JSON.stringify(event)}\n\n`

const chunks = (value: string, size: number): ReadonlyArray<string> => {
  const out: Array<string> = []
  for (let i = 0; i < value.length; i += size) out.push(value.slice(i, i + size))
  return out.length === 0 ? [""] : out
}

/**
 * The SSE events of a streamed message, in wire order.
 *
 * @category wire
 */
export const streamEvents = (
  turn: Turn & { readonly _tag: "Message" },
  model: string,
  messageId: string
): ReadonlyArray<{ readonly type: string }> => {
  const events: Array<{ readonly type: string }> = [
    {
      type: "message_start",
      message: {
        id: messageId,
        type: "message",
        role: "assistant",
        model,
        content: [],
        stop_reason: null,
        stop_sequence: null,
        usage: { input_tokens: turn.usage.inputTokens, output_tokens: 1 }
      }
    } as { readonly type: string }
  ]
  turn.blocks.forEach((block, index) => {
    switch (block.type) {
      case "text":
        events.push({ type: "content_block_start", index, content_block: { type: "text", text: "" } } as never)
        for (const piece of chunks(block.text, turn.chunkSize)) {
          events.push({ type: "content_block_delta", index, delta: { type: "text_delta", text: piece } } as never)
        }
        break
      case "thinking":
        events.push({
          type: "content_block_start",
          index,
          content_block: { type: "thinking", thinking: "", signature: "" }
        } as never)
        events.push({
          type: "content_block_delta",
          index,
          delta: { type: "thinking_delta", thinking: block.thinking }
        } as never)
        events.push({
          type: "content_block_delta",
          index,
          delta: { type: "signature_delta", signature: "scripted" }
        } as never)
        break
      case "tool_use":
        events.push({
          type: "content_block_start",
          index,
          content_block: { type: "tool_use", id: block.id, name: block.name, input: {} }
        } as never)
        for (const piece of chunks(JSON.stringify(block.input), 16)) {
          events.push({
            type: "content_block_delta",
            index,
            delta: { type: "input_json_delta", partial_json: piece }
          } as never)
        }
        break
    }
    events.push({ type: "content_block_stop", index } as never)
  })
  events.push(
    {
      type: "message_delta",
      delta: { stop_reason: turn.stopReason, stop_sequence: null },
      usage: { output_tokens: turn.usage.outputTokens }
    } as never,
    { type: "message_stop" }
  )
  return events
}

const messageBody = (turn: Turn & { readonly _tag: "Message" }, model: string, messageId: string) => ({
  id: messageId,
  type: "message",
  role: "assistant",
  model,
  content: turn.blocks.map((block) => (block.type === "thinking" ? { ...block, signature: "scripted" } : block)),
  stop_reason: turn.stopReason,
  stop_sequence: null,
  usage: { input_tokens: turn.usage.inputTokens, output_tokens: turn.usage.outputTokens }
})

const secretHeaders = new Set(["x-api-key", "authorization", "proxy-authorization", "cookie"])

// ----------------------------------------------------------------------------
// the server
// ----------------------------------------------------------------------------

/**
 * @category services
 */
export class ScriptedModel extends Context.Service<
  ScriptedModel,
  {
    /** Base URL for `ANTHROPIC_BASE_URL`, e.g. `http://127.0.0.1:41234`. */
    readonly url: string
    /** Every request received so far, in arrival order. */
    readonly requests: Effect.Effect<ReadonlyArray<RecordedRequest>>
    /** The model requests only (`POST /v1/messages`). */
    readonly modelRequests: Effect.Effect<ReadonlyArray<RecordedRequest & { readonly body: MessagesRequest }>>
    /** Replaces the script; turns not yet answered are dropped. */
    readonly setScript: (script: Script) => Effect.Effect<void>
    /** Forgets the recorded requests. */
    readonly clearRequests: Effect.Effect<void>
  }
>()("effect-claude-agent/testing/ScriptedModel") {
  /**
   * Starts the server for the life of the layer.
   *
   * @category layers
   */
  static readonly layer = (script: Script = []): Layer.Layer<ScriptedModel> => Layer.effect(ScriptedModel)(make(script))
}

/**
 * Starts a server in the current scope.
 *
 * @category constructors
 */
export const make = (
  initial: Script = []
): Effect.Effect<ScriptedModel["Service"], never, import("effect").Scope.Scope> =>
  Effect.gen(function* () {
    let script: Script = initial
    let listIndex = 0
    let messageCounter = 0
    const recorded: Array<RecordedRequest> = []
    const sockets = new Set<import("node:net").Socket>()

    const nextTurn = (request: RecordedRequest & { readonly body: MessagesRequest }): Turn => {
      if (typeof script === "function") return script(request)
      const turn = script[listIndex]
      if (turn === undefined) return exhausted(script.length)
      listIndex++
      return turn
    }

    const sendError = (res: Http.ServerResponse, turn: Turn & { readonly _tag: "Error" }) => {
      res.writeHead(turn.status, {
        "content-type": "application/json",
        "request-id": `req_scripted_${messageCounter}`,
        ...(turn.retryAfterSeconds !== undefined ? { "retry-after": String(turn.retryAfterSeconds) } : {}),
        // The CLI would otherwise retry some errors on its own before we see the next request.
        ...(turn.status >= 400 && turn.status < 500 && turn.status !== 429 ? { "x-should-retry": "false" } : {})
      })
      res.end(JSON.stringify({ type: "error", error: { type: turn.errorType, message: turn.message } }))
    }

    const stream = async (
      res: Http.ServerResponse,
      turn: Turn & { readonly _tag: "Message" },
      model: string,
      cutAfter: number | undefined
    ) => {
      const id = `msg_scripted_${++messageCounter}`
      res.writeHead(200, {
        "content-type": "text/event-stream",
        "cache-control": "no-cache",
        "request-id": `req_scripted_${messageCounter}`
      })
      const events = streamEvents(turn, model, id)
      for (let i = 0; i < events.length; i++) {
        if (cutAfter !== undefined && i >= cutAfter) {
          res.socket?.destroy()
          return
        }
        if (turn.chunkDelayMs > 0) await new Promise((resolve) => setTimeout(resolve, turn.chunkDelayMs))
        if (res.destroyed) return
        // Wait for the flush, so that a cut after N events really delivers N events.
        await new Promise((resolve) => res.write(sse(events[i]!), resolve))
      }
      res.end()
    }

    const handle = async (req: Http.IncomingMessage, res: Http.ServerResponse, raw: string) => {
      const url = new URL(req.url ?? "/", "http://127.0.0.1")
      const headers: Record<string, string> = {}
      for (const [name, value] of Object.entries(req.headers)) {
        if (value === undefined) continue
        headers[name] = secretHeaders.has(name) ? "<redacted>" : Array.isArray(value) ? value.join(", ") : value
      }
      // Validated with the Schema but kept whole: decoding would drop the
      // fields tests assert on (tool_use_id, system prompts, tools).
      const parsed =
        raw.length === 0 ? Option.none() : Option.liftThrowable(JSON.parse)(raw).pipe(Option.filter(isMessagesRequest))
      const entry: RecordedRequest = {
        method: req.method ?? "GET",
        path: url.pathname,
        headers,
        body: Option.getOrUndefined(parsed),
        sessionId: headers["x-claude-code-session-id"]
      }
      recorded.push(entry)

      if (req.method === "POST" && url.pathname === "/v1/messages/count_tokens") {
        res.writeHead(200, { "content-type": "application/json" })
        res.end(JSON.stringify({ input_tokens: Math.ceil(raw.length / 4) }))
        return
      }
      if (req.method !== "POST" || url.pathname !== "/v1/messages") {
        return sendError(res, {
          ...error(404),
          message: `ScriptedModel: no route for ${req.method} ${url.pathname}`
        } as never)
      }
      if (entry.body === undefined) {
        return sendError(res, error(400, { message: "ScriptedModel: the body is not a Messages API request" }) as never)
      }
      const turn = nextTurn(entry as RecordedRequest & { readonly body: MessagesRequest })
      const model = entry.body.model
      switch (turn._tag) {
        case "Error":
          return sendError(res, turn)
        case "Hang":
          res.writeHead(200, { "content-type": "text/event-stream" })
          res.flushHeaders()
          return
        case "Cut":
          return stream(res, turn.turn, model, turn.afterEvents)
        case "Message":
          if (entry.body.stream === true) return stream(res, turn, model, undefined)
          res.writeHead(200, { "content-type": "application/json", "request-id": `req_scripted_${++messageCounter}` })
          res.end(JSON.stringify(messageBody(turn, model, `msg_scripted_${messageCounter}`)))
      }
    }

    const server = Http.createServer((req, res) => {
      const parts: Array<Buffer> = []
      req.on("data", (chunk: Buffer) => parts.push(chunk))
      req.on("end", () => {
        handle(req, res, Buffer.concat(parts).toString("utf8")).catch(() => res.destroy())
      })
    })
    server.on("connection", (socket) => {
      sockets.add(socket)
      socket.on("close", () => sockets.delete(socket))
    })

    const port = yield* Effect.acquireRelease(
      Effect.callback<number>((resume) => {
        server.listen(0, "127.0.0.1", () => resume(Effect.succeed((server.address() as AddressInfo).port)))
      }),
      () =>
        Effect.callback<void>((resume) => {
          // Hung and streaming connections would keep close() waiting forever.
          for (const socket of sockets) socket.destroy()
          server.close(() => resume(Effect.void))
        })
    )

    const modelRequests = Effect.sync(() =>
      recorded.filter(
        (r): r is RecordedRequest & { readonly body: MessagesRequest } =>
          r.path === "/v1/messages" && r.body !== undefined
      )
    )
    return ScriptedModel.of({
      url: `http://127.0.0.1:${port}`,
      requests: Effect.sync(() => recorded.slice()),
      modelRequests,
      setScript: (next) =>
        Effect.sync(() => {
          script = next
          listIndex = 0
        }),
      clearRequests: Effect.sync(() => {
        recorded.length = 0
      })
    })
  })

// ----------------------------------------------------------------------------
// wiring the SDK to it
// ----------------------------------------------------------------------------

/**
 * The complete environment for a CLI that talks to the scripted model.
 * `Options.env` replaces the CLI's whole environment, so this gives it a
 * private home, config and temp directory, and nothing of the caller's.
 *
 * @category wiring
 */
export const sdkEnv = (
  url: string,
  options: {
    /** A private directory for HOME, CLAUDE_CONFIG_DIR and TMPDIR. */
    readonly home: string
    /** `CLAUDE_CODE_MAX_RETRIES`; 0 makes API errors surface at once. */
    readonly maxRetries?: number
  }
): Record<string, string> => ({
  PATH: process.env.PATH ?? "/usr/bin:/bin",
  HOME: options.home,
  CLAUDE_CONFIG_DIR: Path.join(options.home, ".claude"),
  TMPDIR: options.home,
  ANTHROPIC_BASE_URL: url,
  ANTHROPIC_API_KEY: "sk-ant-scripted-model",
  CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: "1",
  DISABLE_TELEMETRY: "1",
  DISABLE_AUTOUPDATER: "1",
  DISABLE_ERROR_REPORTING: "1",
  // Running as root, the CLI allows bypassPermissions only inside a declared sandbox.
  IS_SANDBOX: "1",
  ...(options.maxRetries !== undefined ? { CLAUDE_CODE_MAX_RETRIES: String(options.maxRetries) } : {})
})

/**
 * `AgentSdk` wired to the scripted model, with a private home directory that
 * is removed when the layer closes.
 *
 * @category layers
 */
export const layerAgentSdk = (
  options: { readonly maxRetries?: number; readonly maxConcurrentQueries?: number } = {}
): Layer.Layer<AgentSdk, never, ScriptedModel | PermissionPolicy> =>
  Layer.unwrap(
    Effect.gen(function* () {
      const model = yield* ScriptedModel
      const home = yield* Effect.acquireRelease(
        Effect.sync(() => Fs.mkdtempSync(Path.join(Os.tmpdir(), "scripted-agent-"))),
        (dir) => Effect.sync(() => Fs.rmSync(dir, { recursive: true, force: true }))
      )
      return AgentSdk.layer({
        env: sdkEnv(model.url, {
          home,
          ...(options.maxRetries !== undefined ? { maxRetries: options.maxRetries } : {})
        }),
        ...(options.maxConcurrentQueries !== undefined ? { maxConcurrentQueries: options.maxConcurrentQueries } : {})
      })
    })
  )
