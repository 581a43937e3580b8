/**
 * Messages that the Claude Agent SDK streams, checked at the process boundary.
 *
 * The CLI speaks a wide and fast-moving protocol (forty-odd message kinds in
 * 0.3.x). We check the kinds we rely on with Schemas, so a change of shape is a
 * typed `MalformedMessageError` rather than an `undefined` deep in a workflow,
 * and pass every message through unchanged, including kinds we do not model.
 *
 * @since 0.1.0
 */
import type * as Sdk from "@anthropic-ai/claude-agent-sdk"
import { Effect, Option, Schema } from "effect"
import * as AgentSdkError from "./AgentSdkError.ts"

/**
 * Any message the SDK yields: the SDK's own union, untouched.
 *
 * @category models
 */
export type AgentMessage = Sdk.SDKMessage

/** @category models */
export type ResultMessage = Sdk.SDKResultMessage

/** @category models */
export type AssistantMessage = Sdk.SDKAssistantMessage

const ContentBlock = Schema.Struct({ type: Schema.String })

const Usage = Schema.Struct({
  input_tokens: Schema.Number,
  output_tokens: Schema.Number,
  cache_creation_input_tokens: Schema.optional(Schema.NullOr(Schema.Number)),
  cache_read_input_tokens: Schema.optional(Schema.NullOr(Schema.Number))
})

/**
 * The first message of every query: the session id and the agent's set-up.
 *
 * @category schemas
 */
export const SystemInit = Schema.Struct({
  type: Schema.Literal("system"),
  subtype: Schema.Literal("init"),
  session_id: Schema.String,
  model: Schema.String,
  cwd: Schema.String,
  tools: Schema.Array(Schema.String),
  permissionMode: Schema.String
})

/** @category schemas */
export const Assistant = Schema.Struct({
  type: Schema.Literal("assistant"),
  session_id: Schema.String,
  parent_tool_use_id: Schema.NullOr(Schema.String),
  message: Schema.Struct({ content: Schema.Array(ContentBlock) }),
  error: Schema.optional(Schema.String)
})

/** @category schemas */
export const User = Schema.Struct({
  type: Schema.Literal("user"),
  session_id: Schema.String,
  message: Schema.Struct({
    role: Schema.Literal("user"),
    content: Schema.Union([Schema.String, Schema.Array(ContentBlock)])
  })
})

const ResultFields = {
  type: Schema.Literal("result"),
  session_id: Schema.String,
  is_error: Schema.Boolean,
  num_turns: Schema.Number,
  duration_ms: Schema.Number,
  total_cost_usd: Schema.Number,
  stop_reason: Schema.NullOr(Schema.String),
  usage: Usage
}

/** @category schemas */
export const ResultSuccess = Schema.Struct({
  ...ResultFields,
  subtype: Schema.Literal("success"),
  result: Schema.String,
  api_error_status: Schema.optional(Schema.NullOr(Schema.Number))
})

/** @category schemas */
export const ResultError = Schema.Struct({
  ...ResultFields,
  subtype: Schema.Literals([
    "error_during_execution",
    "error_max_turns",
    "error_max_budget_usd",
    "error_max_structured_output_retries"
  ]),
  errors: Schema.Array(Schema.String)
})

/** @category schemas */
export const StreamEvent = Schema.Struct({
  type: Schema.Literal("stream_event"),
  session_id: Schema.String,
  parent_tool_use_id: Schema.NullOr(Schema.String),
  event: Schema.Struct({ type: Schema.String })
})

const Envelope = Schema.Struct({ type: Schema.String, subtype: Schema.optional(Schema.String) })

const schemaFor = (envelope: typeof Envelope.Type): Schema.Top | undefined => {
  switch (envelope.type) {
    case "assistant":
      return Assistant
    case "user":
      return User
    case "stream_event":
      return StreamEvent
    case "result":
      return envelope.subtype === "success" ? ResultSuccess : ResultError
    case "system":
      return envelope.subtype === "init" ? SystemInit : undefined
    default:
      return undefined
  }
}

/**
 * Checks one message from the CLI. Modelled kinds must match their Schema;
 * other kinds need only a string `type`.
 *
 * @category decoding
 */
export const decode = (raw: unknown): Effect.Effect<AgentMessage, AgentSdkError.AgentSdkError> =>
  Effect.gen(function* () {
    const envelope = yield* Schema.decodeUnknownEffect(Envelope)(raw)
    const schema = schemaFor(envelope)
    if (schema !== undefined) {
      yield* Schema.decodeUnknownEffect(schema as Schema.Codec<unknown>)(raw)
    }
    return raw as AgentMessage
  }).pipe(
    Effect.mapError((issue) =>
      AgentSdkError.make(new AgentSdkError.MalformedMessageError({ description: String(issue) }))
    )
  )

/**
 * The small, journal-friendly summary of a finished query.
 *
 * @category models
 */
export class QueryResult extends Schema.Class<QueryResult>("effect-claude-agent/QueryResult")({
  text: Schema.String,
  sessionId: Schema.String,
  turns: Schema.Number,
  usage: Schema.Struct({
    inputTokens: Schema.Number,
    outputTokens: Schema.Number,
    cacheReadInputTokens: Schema.Number,
    cacheCreationInputTokens: Schema.Number
  }),
  costUsd: Schema.Number,
  stopReason: Schema.NullOr(Schema.String),
  durationMs: Schema.Number
}) {}

const summarize = (message: ResultMessage & { readonly result?: string }): QueryResult =>
  new QueryResult({
    text: message.result ?? "",
    sessionId: message.session_id,
    turns: message.num_turns,
    usage: {
      inputTokens: message.usage.input_tokens,
      outputTokens: message.usage.output_tokens,
      cacheReadInputTokens: message.usage.cache_read_input_tokens ?? 0,
      cacheCreationInputTokens: message.usage.cache_creation_input_tokens ?? 0
    },
    costUsd: message.total_cost_usd,
    stopReason: message.stop_reason,
    durationMs: message.duration_ms
  })

/**
 * Classifies an API failure from what the CLI reports: the HTTP status of the
 * failed call and the error kind stamped on the synthetic assistant message.
 */
const apiFailure = (
  status: number | null,
  kind: string | undefined,
  description: string
): AgentSdkError.AgentSdkErrorReason => {
  if (status === 401 || status === 403 || kind === "authentication_failed") {
    return new AgentSdkError.AuthenticationError({ description })
  }
  if (status === 429 || kind === "rate_limit") return new AgentSdkError.RateLimitError({ description })
  if (status === 529 || kind === "overloaded") return new AgentSdkError.OverloadedError({ description })
  return new AgentSdkError.ApiError({ status, kind: kind ?? "unknown", description })
}

/**
 * Turns the final result message of a turn into the summary, or the typed
 * reason it failed. `lastAssistant` carries the error kind of an API failure;
 * `interrupted` says whether we asked for the stop ourselves.
 *
 * @category decoding
 */
export const toResult = (
  message: ResultMessage,
  options: { readonly lastAssistant: Option.Option<AssistantMessage>; readonly interrupted: boolean }
): Effect.Effect<QueryResult, AgentSdkError.AgentSdkError> => {
  switch (message.subtype) {
    case "success": {
      if (!message.is_error) return Effect.succeed(summarize(message))
      const kind = Option.getOrUndefined(Option.flatMapNullishOr(options.lastAssistant, (m) => m.error))
      return Effect.fail(AgentSdkError.make(apiFailure(message.api_error_status ?? null, kind, message.result)))
    }
    case "error_max_turns":
    case "error_max_budget_usd":
    case "error_max_structured_output_retries":
      return Effect.fail(
        AgentSdkError.make(
          new AgentSdkError.LimitExceededError({
            limit: message.subtype.slice("error_".length) as AgentSdkError.LimitExceededError["limit"],
            turns: message.num_turns,
            costUsd: message.total_cost_usd
          })
        )
      )
    case "error_during_execution":
      return Effect.fail(
        AgentSdkError.make(
          options.interrupted
            ? new AgentSdkError.InterruptedError()
            : new AgentSdkError.ExecutionError({ errors: message.errors })
        )
      )
  }
}

/**
 * The text of an assistant message's text blocks.
 *
 * @category accessors
 */
export const assistantText = (message: AssistantMessage): string =>
  message.message.content.flatMap((block) => (block.type === "text" ? [block.text] : [])).join("")

/**
 * The text of a streamed `text_delta`, if the message is one (needs
 * `includePartialMessages`).
 *
 * @category accessors
 */
export const textDelta = (message: AgentMessage): string | undefined =>
  message.type === "stream_event" &&
  message.event.type === "content_block_delta" &&
  message.event.delta.type === "text_delta"
    ? message.event.delta.text
    : undefined
