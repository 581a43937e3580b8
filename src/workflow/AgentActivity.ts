/**
 * Agent queries as durable workflow activities.
 *
 * `AgentActivity.query` runs one agent query inside an `Activity`: recorded
 * once in the journal, never run again on replay. It drains the query's stream
 * into the run's `AgentOutput` log as it goes, and returns only the small
 * Schema'd `QueryResult` (text, session id, usage, cost, turns, stop reason):
 * the transcript lives in the output log, not in the journal.
 *
 * Transient model failures (rate limit, overloaded, 5xx, a dead process) are
 * retried with exponential backoff and jitter. `Activity.retry` takes no
 * schedule, so the backoff is a `DurableClock` sleep between attempts, and
 * each attempt is an activity of its own: a crash during the backoff resumes
 * the wait, and completed attempts are never re-sent to the model. The jitter
 * is derived from the run, step and attempt, so a replay sleeps the same.
 *
 * @since 0.1.0
 */
import type * as Sdk from "@anthropic-ai/claude-agent-sdk"
import { Duration, Effect, Exit, Schema, Stream } from "effect"
import * as Activity from "effect/workflow/Activity"
import * as DurableClock from "effect/workflow/DurableClock"
import { WorkflowInstance } from "effect/workflow/WorkflowEngine"
import { AgentOutput } from "../output/AgentOutput.ts"
import type { NewEvent } from "../output/OutputEvent.ts"
import * as AgentMessage from "../sdk/AgentMessage.ts"
import { AgentSdk, type QueryOptions } from "../sdk/AgentSdk.ts"
import * as AgentSdkError from "../sdk/AgentSdkError.ts"

/**
 * How transient failures are retried.
 *
 * @category models
 */
export interface RetryPolicy {
  /** Attempts after the first. Default 3. */
  readonly times?: number
  /** The first backoff; it doubles each attempt. Default 1 s. */
  readonly base?: Duration.Duration
  /** The longest backoff. Default 1 min. */
  readonly max?: Duration.Duration
}

/**
 * @category models
 */
export interface Options<R = never> {
  /** Options of the agent query itself (tools, model, resume, …). */
  readonly query?: QueryOptions<R>
  readonly retry?: RetryPolicy
}

/** A deterministic fraction in [0, 1) from a string: jitter that replays the same. */
const unitHash = (key: string): number => {
  let hash = 2166136261
  for (let i = 0; i < key.length; i++) {
    hash ^= key.charCodeAt(i)
    hash = Math.imul(hash, 16777619)
  }
  return (hash >>> 0) / 2 ** 32
}

/**
 * The backoff before attempt `attempt + 1`: base · 2^(attempt-1), capped, with
 * "equal jitter" (between half and all of it).
 *
 * @category retry
 */
export const backoff = (policy: RetryPolicy, attempt: number, key: string): Duration.Duration => {
  const base = Duration.toMillis(policy.base ?? Duration.seconds(1))
  const max = Duration.toMillis(policy.max ?? Duration.minutes(1))
  const ceiling = Math.min(max, base * 2 ** (attempt - 1))
  return Duration.millis(Math.round(ceiling / 2 + (ceiling / 2) * unitHash(`${key}/${attempt}`)))
}

/**
 * Turns SDK messages into output events: text as it streams, tool calls and
 * their results, and the final result.
 */
const toEvents = (message: AgentMessage.AgentMessage): ReadonlyArray<Pick<NewEvent, "kind" | "payload">> => {
  const delta = AgentMessage.textDelta(message)
  if (delta !== undefined) return [{ kind: "text_delta", payload: { text: delta } }]
  switch (message.type) {
    case "assistant":
      // The CLI reports a failed model call as a synthetic assistant message
      // carrying `error`: not the model's words; the error event reports it.
      if (message.error !== undefined) return []
      return message.message.content.flatMap((block): ReadonlyArray<Pick<NewEvent, "kind" | "payload">> =>
        block.type === "text"
          ? [{ kind: "assistant_message", payload: { text: block.text } }]
          : block.type === "tool_use"
            ? [{ kind: "tool_use", payload: { id: block.id, name: block.name, input: block.input } }]
            : []
      )
    case "user": {
      const content = (message as Sdk.SDKUserMessage).message.content
      if (typeof content === "string") return []
      return content.flatMap((block): ReadonlyArray<Pick<NewEvent, "kind" | "payload">> =>
        block.type === "tool_result"
          ? [
              {
                kind: "tool_result",
                payload: { toolUseId: block.tool_use_id, content: block.content, isError: block.is_error ?? false }
              }
            ]
          : []
      )
    }
    default:
      return []
  }
}

/**
 * One attempt: an activity of its own, so that its outcome is journaled apart
 * from the others'.
 */
const attemptActivity = <R>(name: string, attempt: number, prompt: string, options: Options<R>) =>
  Activity.make({
    name: attempt === 1 ? name : `${name}/attempt-${attempt}`,
    success: AgentMessage.QueryResult,
    error: AgentSdkError.AgentSdkError,
    execute: Effect.gen(function* () {
      const runId = (yield* WorkflowInstance).executionId
      const output = yield* AgentOutput
      const sdk = yield* AgentSdk
      let index = 0
      const publish = (events: ReadonlyArray<Pick<NewEvent, "kind" | "payload">>) =>
        output.publish(
          runId,
          events.map((event) => ({ ...event, step: name, attempt, index: index++ }))
        )
      yield* publish([{ kind: "status", payload: { state: "attempt_started", attempt } }])
      const handle = yield* sdk.query(prompt, { ...options.query, includePartialMessages: true })
      yield* handle.stream.pipe(
        Stream.flatMap((message) => Stream.fromIterable(toEvents(message))),
        // Batches keep the log's write rate sane while text streams token by token.
        Stream.groupedWithin(64, Duration.millis(25)),
        Stream.runForEach(publish)
      )
      const result = yield* handle.result.pipe(
        Effect.tapError((error) =>
          publish([{ kind: "error", payload: { reason: error.reason._tag, message: error.message } }])
        )
      )
      yield* publish([{ kind: "result", payload: result }])
      return result
    }).pipe(
      Effect.scoped,
      // The log itself failing is not the model's fault: it is a defect of this attempt.
      Effect.catchTag(["OutputClosed", "SqlError"], Effect.die)
    )
  })

/**
 * Two steps of one run used the same name. Step names are journal keys:
 * Effect would silently hand the second step the first one's recorded result.
 *
 * @category errors
 */
export class DuplicateStepName extends Schema.TaggedError<DuplicateStepName>()("DuplicateStepName", {
  step: Schema.String
}) {
  override get message(): string {
    return `The step name "${this.step}" is used twice in one run; name loop iterations with AgentActivity.iteration`
  }
}

// Per workflow instance: a replay gets a new instance, so the set is rebuilt
// as the body replays, in the same order.
const stepNames = new WeakMap<WorkflowInstance["Service"], Set<string>>()

const claimStepName = (name: string) =>
  Effect.flatMap(WorkflowInstance, (instance) => {
    const names = stepNames.get(instance) ?? new Set<string>()
    stepNames.set(instance, names)
    if (names.has(name)) return Effect.die(new DuplicateStepName({ step: name }))
    names.add(name)
    return Effect.void
  })

/**
 * The step name of a loop's `index`-th iteration: `review#3`.
 *
 * @category steps
 */
export const iteration = (name: string, index: number): string => `${name}#${index}`

/**
 * Runs an agent query as a durable step of the current workflow. `name` must
 * be unique within the run (see `iteration` for loops).
 *
 * @category steps
 */
export const query = <R = never>(name: string, prompt: string, options: Options<R> = {}) =>
  Effect.gen(function* () {
    yield* claimStepName(name)
    const runId = (yield* WorkflowInstance).executionId
    const times = options.retry?.times ?? 3
    for (let attempt = 1; ; attempt++) {
      const exit = yield* Effect.exit(attemptActivity(name, attempt, prompt, options))
      if (Exit.isSuccess(exit)) return exit.value
      const error = Exit.findErrorOption(exit)
      if (error._tag === "None" || !error.value.isRetryable || attempt > times) return yield* exit
      yield* Effect.logInfo("agent step failed, retrying after a durable backoff", {
        step: name,
        attempt,
        reason: error.value.reason._tag
      })
      yield* DurableClock.sleep({
        name: `${name}/backoff-${attempt}`,
        duration: backoff(options.retry ?? {}, attempt, `${runId}/${name}`)
      })
    }
  }).pipe(Effect.withSpan("AgentActivity.query", { attributes: { step: name } }))
