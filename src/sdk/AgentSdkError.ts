/**
 * The one error envelope of the SDK layer: every way an agent query can fail,
 * as a `reason` union of Schema-tagged errors so that failures can cross the
 * workflow journal and the network unchanged, and durable retries can ask
 * `isRetryable` instead of parsing messages.
 *
 * @since 0.1.0
 */
import { Schema } from "effect"

/**
 * The CLI process could not be started (missing binary, bad cwd, spawn error),
 * or it exited before it produced a result.
 *
 * @category reasons
 */
export class ProcessError extends Schema.TaggedError<ProcessError>()("ProcessError", {
  description: Schema.String,
  exitCode: Schema.optional(Schema.NullOr(Schema.Number)),
  stderr: Schema.optional(Schema.String)
}) {
  get isRetryable(): boolean {
    // A process that started and died mid-run is worth another try; one that
    // could not start at all will fail the same way again.
    return this.exitCode !== undefined
  }
  override get message(): string {
    return `Claude Code process failed: ${this.description}`
  }
}

/**
 * The model API refused the credentials.
 *
 * @category reasons
 */
export class AuthenticationError extends Schema.TaggedError<AuthenticationError>()("AuthenticationError", {
  description: Schema.String
}) {
  get isRetryable(): boolean {
    return false
  }
  override get message(): string {
    return `Authentication failed: ${this.description}`
  }
}

/**
 * The model API answered 429.
 *
 * @category reasons
 */
export class RateLimitError extends Schema.TaggedError<RateLimitError>()("RateLimitError", {
  description: Schema.String
}) {
  get isRetryable(): boolean {
    return true
  }
  override get message(): string {
    return `Rate limited: ${this.description}`
  }
}

/**
 * The model API answered 529 (overloaded).
 *
 * @category reasons
 */
export class OverloadedError extends Schema.TaggedError<OverloadedError>()("OverloadedError", {
  description: Schema.String
}) {
  get isRetryable(): boolean {
    return true
  }
  override get message(): string {
    return `Model overloaded: ${this.description}`
  }
}

/**
 * Any other model API failure; `status` is null for connection failures.
 *
 * @category reasons
 */
export class ApiError extends Schema.TaggedError<ApiError>()("ApiError", {
  status: Schema.NullOr(Schema.Number),
  kind: Schema.String,
  description: Schema.String
}) {
  get isRetryable(): boolean {
    return this.status === null || this.status === 408 || this.status >= 500
  }
  override get message(): string {
    return `Model API error (${this.status ?? "no response"}, ${this.kind}): ${this.description}`
  }
}

/**
 * The agent used up `maxTurns` or `maxBudgetUsd` before it finished.
 *
 * @category reasons
 */
export class LimitExceededError extends Schema.TaggedError<LimitExceededError>()("LimitExceededError", {
  limit: Schema.Literals(["max_turns", "max_budget_usd", "max_structured_output_retries"]),
  turns: Schema.Number,
  costUsd: Schema.Number
}) {
  get isRetryable(): boolean {
    return false
  }
  override get message(): string {
    return `Agent stopped: ${this.limit} reached after ${this.turns} turns ($${this.costUsd.toFixed(4)})`
  }
}

/**
 * The query was interrupted (by `QueryHandle.interrupt`, or by closing its scope).
 *
 * @category reasons
 */
export class InterruptedError extends Schema.TaggedError<InterruptedError>()("InterruptedError", {}) {
  get isRetryable(): boolean {
    return false
  }
  override get message(): string {
    return "The query was interrupted"
  }
}

/**
 * The CLI ended a turn with `error_during_execution` for a reason other than our interrupt.
 *
 * @category reasons
 */
export class ExecutionError extends Schema.TaggedError<ExecutionError>()("ExecutionError", {
  errors: Schema.Array(Schema.String)
}) {
  get isRetryable(): boolean {
    return false
  }
  override get message(): string {
    return `Agent execution failed: ${this.errors.join("; ") || "no details"}`
  }
}

/**
 * The CLI sent a message whose shape does not match what we rely on.
 *
 * @category reasons
 */
export class MalformedMessageError extends Schema.TaggedError<MalformedMessageError>()("MalformedMessageError", {
  description: Schema.String
}) {
  get isRetryable(): boolean {
    return false
  }
  override get message(): string {
    return `Malformed SDK message: ${this.description}`
  }
}

/**
 * Input was sent to a query whose input is already closed.
 *
 * @category reasons
 */
export class InputClosedError extends Schema.TaggedError<InputClosedError>()("InputClosedError", {}) {
  get isRetryable(): boolean {
    return false
  }
  override get message(): string {
    return "The query no longer accepts input"
  }
}

/**
 * All reasons an agent query can fail with.
 *
 * @category models
 */
export const AgentSdkErrorReason = Schema.Union([
  ProcessError,
  AuthenticationError,
  RateLimitError,
  OverloadedError,
  ApiError,
  LimitExceededError,
  InterruptedError,
  ExecutionError,
  MalformedMessageError,
  InputClosedError
])

/**
 * @category models
 */
export type AgentSdkErrorReason = typeof AgentSdkErrorReason.Type

/**
 * The error envelope of `AgentSdk`.
 *
 * @category errors
 */
export class AgentSdkError extends Schema.TaggedError<AgentSdkError>()("AgentSdkError", {
  reason: AgentSdkErrorReason
}) {
  /** Whether another attempt of the same query may succeed. */
  get isRetryable(): boolean {
    return this.reason.isRetryable
  }
  override get message(): string {
    return this.reason.message
  }
}

/**
 * Wraps a reason in the envelope.
 *
 * @category constructors
 */
export const make = (reason: AgentSdkErrorReason): AgentSdkError => new AgentSdkError({ reason })
