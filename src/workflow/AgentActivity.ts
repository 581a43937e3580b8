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
import { Duration, Effect, Exit, Metric, Option, Schema, Stream } from "effect"
import * as Activity from "effect/workflow/Activity"
import * as DurableClock from "effect/workflow/DurableClock"
import { WorkflowInstance } from "effect/workflow/WorkflowEngine"
import * as Durably from "../engine/Durably.ts"
import { AgentOutput } from "../output/AgentOutput.ts"
import type { NewEvent } from "../output/OutputEvent.ts"
import * as AgentMessage from "../sdk/AgentMessage.ts"
import { AgentSdk, type QueryOptions } from "../sdk/AgentSdk.ts"
import * as AgentSdkError from "../sdk/AgentSdkError.ts"
import { SessionStore } from "../sdk/SessionStore.ts"
import * as AgentMetrics from "./AgentMetrics.ts"
import * as StepName from "./StepName.ts"

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
  /** Options of the agent query itself (tools, model, …). */
  readonly query?: QueryOptions<R>
  /** Continue this session (a `QueryResult.sessionId` of an earlier step). */
  readonly session?: string | undefined
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
      // With a SessionStore the transcript is mirrored to the database as the
      // CLI writes it, and a resume on any runner loads it back from there.
      const sessions = yield* Effect.serviceOption(SessionStore)
      // The engine runs a step again when its result did not reach the journal (the runner killed in
      // between, or on the cluster engine a reply it could not save while the database was away). If
      // an execution's result reached the log, that is the step's result: the model is not asked again.
      const stored = yield* Durably.durably(output.stepResult(runId, name)).pipe(
        Effect.flatMap(
          Option.match({
            onNone: () => Effect.succeedNone,
            onSome: (payload) => Effect.option(Schema.decodeUnknownEffect(AgentMessage.QueryResult)(payload))
          })
        ),
        Effect.catchTag("UnknownBlob", () => Effect.succeedNone)
      )
      if (Option.isSome(stored)) {
        yield* Effect.logInfo("step result taken from the output log; not run again", { runId, step: name })
        return stored.value
      }
      // Each execution publishes under a number of its own. An execution cut
      // off by a crash is run again by the engine as the same retry attempt;
      // the model may answer differently, so the new execution must not
      // continue the old one's partial output.
      const execution = (yield* Durably.durably(output.lastAttempt(runId, name))) + 1
      let index = 0
      // Numbered once, so a retried write stores the same events.
      const publish = (events: ReadonlyArray<Pick<NewEvent, "kind" | "payload">>) =>
        Durably.durably(
          output.publish(
            runId,
            events.map((event) => ({ ...event, step: name, attempt: execution, index: index++ }))
          )
        )
      yield* Effect.annotateCurrentSpan({ "run.id": runId, "agent.execution": execution })
      yield* publish([{ kind: "status", payload: { state: "attempt_started", attempt, execution } }])
      const handle = yield* sdk.query(prompt, {
        ...options.query,
        ...(options.session === undefined ? {} : { resume: options.session }),
        ...(sessions._tag === "Some" ? { sessionStore: sessions.value.adapter } : {}),
        includePartialMessages: true
      })
      yield* handle.stream.pipe(
        // The SDK drops a transcript batch the store refused; a later resume
        // would miss those turns, so the attempt must not count as done.
        Stream.tap((message) =>
          message.type === "system" && message.subtype === "mirror_error"
            ? Effect.die(new Error(`The session store refused the transcript: ${String(message.error)}`))
            : Effect.void
        ),
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
      yield* Effect.annotateCurrentSpan({
        "agent.session_id": result.sessionId,
        "agent.input_tokens": result.usage.inputTokens,
        "agent.output_tokens": result.usage.outputTokens,
        "agent.cost_usd": result.costUsd,
        "agent.turns": result.turns
      })
      const workflow = { workflow: (yield* WorkflowInstance).workflow._tag }
      yield* Metric.update(Metric.withAttributes(AgentMetrics.steps, workflow), 1)
      yield* Metric.update(
        Metric.withAttributes(AgentMetrics.tokens, { ...workflow, direction: "input" }),
        result.usage.inputTokens
      )
      yield* Metric.update(
        Metric.withAttributes(AgentMetrics.tokens, { ...workflow, direction: "output" }),
        result.usage.outputTokens
      )
      yield* Metric.update(Metric.withAttributes(AgentMetrics.costUsd, workflow), result.costUsd)
      return result
    }).pipe(
      Effect.scoped,
      Effect.withSpan("AgentActivity.attempt", { attributes: { step: name, attempt } }),
      // The log itself failing is not the model's fault: it is a defect of this attempt.
      Effect.catchTag("OutputClosed", Effect.die)
    )
  })

/**
 * Runs an agent query as a durable step of the current workflow. `name` must
 * be unique within the run (see `StepName.iteration` for loops).
 *
 * @category steps
 */
export const query = <R = never>(name: string, prompt: string, options: Options<R> = {}) =>
  Effect.gen(function* () {
    yield* StepName.claim(name)
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
  }).pipe(Effect.withSpan("AgentActivity.query", { attributes: { step: name } }), Effect.annotateLogs({ step: name }))
