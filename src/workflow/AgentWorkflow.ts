/**
 * Durable agent workflows: steps, human decisions, durable waits and budgets
 * on top of `effect/workflow`.
 *
 * A workflow body is replayed from the start whenever its run resumes (after
 * an approval, a sleep, a crash). Everything here is built so that a replay
 * does nothing twice: a step's result comes from the journal, a request is
 * registered once, a wait resumes where it was, and every choice the body
 * makes (the budget window, a patch) is derived from journaled values only.
 *
 * ```ts
 * const PlanAndAct = Workflow.make("PlanAndAct", { payload: { task: Schema.String }, ... })
 * const layer = AgentWorkflow.toLayer(PlanAndAct, ({ task }) =>
 *   Effect.gen(function* () {
 *     const plan = yield* AgentWorkflow.runStep("plan", { prompt: `Plan: ${task}` })
 *     const decision = yield* AgentWorkflow.awaitApproval("review", { request: { plan: plan.text } })
 *     ...
 *   })
 * )
 * ```
 *
 * @since 0.1.0
 */
import { Cause, Context, Duration, Effect, Exit, Option, Schema } from "effect"
import * as Activity from "effect/workflow/Activity"
import * as DurableClock from "effect/workflow/DurableClock"
import * as DurableDeferred from "effect/workflow/DurableDeferred"
import * as Workflow from "effect/workflow/Workflow"
import { WorkflowEngine, WorkflowInstance } from "effect/workflow/WorkflowEngine"
import * as Durably from "../engine/Durably.ts"
import { AgentOutput } from "../output/AgentOutput.ts"
import type { AgentSdk } from "../sdk/AgentSdk.ts"
import type * as AgentMessage from "../sdk/AgentMessage.ts"
import type * as AgentSdkError from "../sdk/AgentSdkError.ts"
import * as AgentActivity from "./AgentActivity.ts"
import { Approvals, Decision, deferredFor } from "./Approvals.ts"
import { type Outcome, Runs } from "./Runs.ts"
import * as StepName from "./StepName.ts"

export { Decision } from "./Approvals.ts"
export { iteration } from "./StepName.ts"

const runOf = Effect.map(WorkflowInstance, (instance) => ({
  runId: instance.executionId,
  workflow: instance.workflow._tag
}))

/**
 * Publishes a status event of a step. Keyed by step and index, so a replay
 * publishes nothing new.
 */
const status = (step: string, index: number, payload: Record<string, unknown>) =>
  Effect.gen(function* () {
    const { runId } = yield* runOf
    const output = yield* AgentOutput
    yield* output.publish(runId, [{ step, attempt: 0, index, kind: "status", payload }])
  }).pipe(Durably.durably, Effect.catchTag("OutputClosed", Effect.die))

// ---------------------------------------------------------------------------
// Runs
// ---------------------------------------------------------------------------

const finalized = new WeakSet<object>()

// The workflow's registration already requires its schemas' services.
const encode = (schema: Schema.Top, value: unknown) =>
  Schema.encodeUnknownEffect(Schema.toCodecJson(schema as Schema.Codec<unknown, unknown>))(value)

/** A run's exit as the registry records it: the result or error encoded with the workflow's schemas. */
const outcomeOf = (
  workflow: Workflow.Any,
  exit: Exit.Exit<unknown, unknown>
): Effect.Effect<
  { readonly status: Outcome; readonly result?: unknown; readonly error?: unknown },
  Schema.SchemaError
> => {
  const { successSchema, errorSchema } = workflow as Workflow.AnyWithProps
  if (Exit.isSuccess(exit)) {
    return Effect.map(encode(successSchema, exit.value), (result) => ({ status: "completed", result }))
  }
  if (Cause.hasInterruptsOnly(exit.cause)) return Effect.succeed({ status: "interrupted" })
  return Option.match(Cause.findErrorOption(exit.cause), {
    onNone: () =>
      Effect.succeed({ status: "failed", error: { _tag: "Defect", message: String(Cause.squash(exit.cause)) } }),
    onSome: (value) => Effect.map(encode(errorSchema, value), (error) => ({ status: "failed", error }))
  })
}

/**
 * Registers a workflow whose body uses this module: the run gets a span and
 * log annotations, and when it ends its output log is closed (so live
 * followers finish) and its open requests are refused from then on.
 *
 * @category runs
 */
export const toLayer = <
  Name extends string,
  Payload extends Workflow.AnyStructSchema,
  Success extends Schema.Top,
  Error extends Schema.Top,
  R
>(
  workflow: Workflow.Workflow<Name, Payload, Success, Error>,
  body: (payload: Payload["Type"], runId: string) => Effect.Effect<Success["Type"], Error["Type"], R>
) =>
  workflow.toLayer((payload, runId) =>
    Effect.gen(function* () {
      const output = yield* AgentOutput
      const approvals = yield* Effect.serviceOption(Approvals)
      const runs = yield* Effect.serviceOption(Runs)
      // Once per scope: the engines give each replay of the body a scope of its own.
      const scope = yield* Workflow.scope
      if (!finalized.has(scope)) {
        finalized.add(scope)
        // Runs started by other means than the service (`execute`, WorkflowProxy) are listed too.
        if (runs._tag === "Some") {
          const input = yield* Effect.orDie(
            Schema.encodeUnknownEffect(Schema.toCodecJson(workflow.payloadSchema))(payload)
          )
          yield* Durably.durably(runs.value.register({ runId, workflow: workflow._tag, input }))
        }
        const instance = yield* WorkflowInstance
        yield* Workflow.addFinalizer((exit) =>
          Effect.gen(function* () {
            // The engine also closes the scopes of replays that suspended (with a void exit) and
            // of replays cut off by an interruption from outside (the run replays elsewhere):
            // neither is the run's end, and ending its output then would break the replay to come.
            if (instance.suspended) return
            if (Exit.isFailure(exit) && Cause.hasInterruptsOnly(exit.cause) && !instance.interrupted) return
            if (approvals._tag === "Some") yield* Effect.ignore(approvals.value.close(runId))
            // Before the output ends: a follower that sees the end reads the final status.
            if (runs._tag === "Some")
              yield* Effect.ignore(
                Effect.flatMap(outcomeOf(workflow, exit), (outcome) => runs.value.finish(runId, outcome))
              )
            yield* Effect.ignore(output.end(runId))
            yield* Effect.logInfo(exit._tag === "Success" ? "run completed" : "run ended without success")
          })
        )
      }
      yield* Effect.logDebug("run body started (new run or replay)")
      return yield* body(payload, runId)
    }).pipe(
      Effect.withSpan(`AgentWorkflow.run ${workflow._tag}`, {
        attributes: { "run.id": runId, "workflow.name": workflow._tag }
      }),
      Effect.annotateLogs({ runId, workflow: workflow._tag })
    )
  )

// ---------------------------------------------------------------------------
// Steps
// ---------------------------------------------------------------------------

/**
 * An agent step: a query, its retries, and the session it continues.
 *
 * @category steps
 */
export interface AgentStep<R = never> extends AgentActivity.Options<R> {
  readonly prompt: string
  /** Tokens this step is expected to use, for budget windows. Default: the run's average so far. */
  readonly estimatedTokens?: number
}

/**
 * A step that runs any Effect, journaled like an agent step.
 *
 * @category steps
 */
export interface EffectStep<A, E, R, S extends Schema.Codec<A, any>, F extends Schema.Codec<E, any>> {
  readonly execute: Effect.Effect<A, E, R>
  readonly success: S
  readonly error?: F
}

/**
 * Runs a named step. Given a `prompt`, it is an agent query (see
 * `AgentActivity.query`): streamed to the run's output, retried, journaled,
 * and held back by the run's budget. Given `execute`, it is any Effect,
 * journaled with its `success` and `error` schemas.
 *
 * Names are journal keys: unique within a run (see `iteration`).
 *
 * @category steps
 */
export const runStep: {
  <R = never>(
    name: string,
    step: AgentStep<R>
  ): Effect.Effect<
    AgentMessage.QueryResult,
    AgentSdkError.AgentSdkError,
    R | AgentSdk | AgentOutput | WorkflowEngine | WorkflowInstance
  >
  <A, E, R, S extends Schema.Codec<A, any>, F extends Schema.Codec<E, any> = typeof Schema.Never>(
    name: string,
    step: EffectStep<A, E, R, S, F>
  ): Effect.Effect<
    A,
    E,
    | R
    | AgentOutput
    | WorkflowEngine
    | WorkflowInstance
    | S["DecodingServices"]
    | S["EncodingServices"]
    | F["DecodingServices"]
    | F["EncodingServices"]
  >
} = ((name: string, step: AgentStep<any> | EffectStep<any, any, any, any, any>) =>
  "execute" in step ? effectStep(name, step) : agentStep(name, step)) as any

const effectStep = <A, E, R>(name: string, step: EffectStep<A, E, R, any, any>) =>
  Effect.gen(function* () {
    yield* StepName.claim(name)
    return yield* Activity.make({
      name,
      success: step.success,
      error: step.error ?? Schema.Never,
      execute: Effect.gen(function* () {
        const attempt = yield* Activity.CurrentAttempt
        yield* status(name, attempt * 2 - 1, { state: "step_started", attempt })
        return yield* step.execute.pipe(
          Effect.tap(() => status(name, attempt * 2, { state: "step_completed", attempt })),
          Effect.tapError((error) => status(name, attempt * 2, { state: "step_failed", attempt, error: String(error) }))
        )
      })
    })
  }).pipe(Effect.withSpan("AgentWorkflow.step", { attributes: { step: name } }), Effect.annotateLogs({ step: name }))

const agentStep = <R>(name: string, step: AgentStep<R>) =>
  Effect.gen(function* () {
    const budget = yield* Effect.serviceOption(RunBudget)
    if (budget._tag === "Some") yield* budget.value.admit(name, step.estimatedTokens)
    const result = yield* AgentActivity.query(name, step.prompt, step)
    if (budget._tag === "Some") budget.value.spend(result)
    const runs = yield* Effect.serviceOption(Runs)
    if (runs._tag === "Some") {
      const { runId } = yield* runOf
      yield* Durably.durably(
        runs.value.recordUsage(runId, name, {
          inputTokens: result.usage.inputTokens,
          outputTokens: result.usage.outputTokens,
          costUsd: result.costUsd
        })
      )
    }
    return result
  })

// ---------------------------------------------------------------------------
// Human decisions
// ---------------------------------------------------------------------------

/**
 * @category decisions
 */
export interface ApprovalOptions {
  /** What the reviewer needs to decide: shown in the run's output and status. */
  readonly request: unknown
  /** Without a decision by then, the run goes on with `default`. */
  readonly timeout?: Duration.Input
  /** The decision taken when the timeout fires. Default: rejected. */
  readonly default?: { readonly approved: boolean; readonly comment?: string }
}

/**
 * @category decisions
 */
export interface InputOptions {
  /** The question, shown in the run's output and status. */
  readonly request: unknown
  readonly timeout?: Duration.Input
  /** The answer taken when the timeout fires. Default: the empty string. */
  readonly default?: string
}

const awaitRequest = <A extends Decision | string>(
  step: string,
  purpose: "approval" | "input",
  request: unknown,
  timeout: Duration.Input | undefined,
  fallback: A
) =>
  Effect.gen(function* () {
    yield* StepName.claim(step)
    const { runId, workflow } = yield* runOf
    const approvals = yield* Approvals
    const duration = timeout === undefined ? undefined : Duration.fromInputUnsafe(timeout)
    yield* Activity.make({
      name: step,
      success: Schema.Void,
      execute: Effect.gen(function* () {
        const expiresAt = duration === undefined ? undefined : Date.now() + Duration.toMillis(duration)
        yield* Durably.durably(approvals.request({ runId, workflow, step, purpose, request, expiresAt }))
      })
    })
    yield* Effect.logInfo(`waiting for ${purpose}`)
    const deferred = deferredFor(purpose, step) as unknown as DurableDeferred.DurableDeferred<Schema.Codec<A>>
    const answer: A =
      duration === undefined
        ? yield* DurableDeferred.await(deferred)
        : yield* DurableDeferred.raceAll({
            name: step,
            success: deferred.successSchema,
            error: Schema.Never,
            effects: [
              DurableDeferred.await(deferred),
              DurableClock.sleep({ name: `${step}/timeout`, duration }).pipe(
                Effect.andThen(
                  Activity.make({
                    name: `${step}/expire`,
                    success: deferred.successSchema,
                    execute: Effect.map(
                      Effect.orDie(Durably.durably(approvals.expire(runId, step, fallback))),
                      (value) => value as A
                    )
                  })
                )
              )
            ]
          })
    yield* Effect.logInfo(`${purpose} received`)
    return answer
  }).pipe(Effect.withSpan(`AgentWorkflow.await ${purpose}`, { attributes: { step } }), Effect.annotateLogs({ step }))

/**
 * Waits, durably, for a reviewer to approve or reject. The run suspends (no
 * process held) until the decision arrives through `Approvals.decide` with
 * the request's signed token, or until the timeout takes the default.
 *
 * @category decisions
 */
export const awaitApproval = (step: string, options: ApprovalOptions) =>
  awaitRequest(
    step,
    "approval",
    options.request,
    options.timeout,
    new Decision({ approved: false, ...options.default, by: "timeout" })
  )

/**
 * Waits, durably, for a person's answer (a string).
 *
 * @category decisions
 */
export const awaitUserInput = (step: string, options: InputOptions) =>
  awaitRequest(step, "input", options.request, options.timeout, options.default ?? "")

// ---------------------------------------------------------------------------
// Time
// ---------------------------------------------------------------------------

/**
 * A durable cool-down: the run suspends and resumes after `duration`, on
 * whichever runner holds it then.
 *
 * @category time
 */
export const sleep = (name: string, duration: Duration.Input) =>
  Effect.gen(function* () {
    yield* StepName.claim(name)
    yield* status(name, 0, { state: "sleeping", millis: Duration.toMillis(Duration.fromInputUnsafe(duration)) })
    yield* DurableClock.sleep({ name, duration })
  })

/**
 * A run's spending limit per window. A step that would take the window over
 * the limit waits, durably, until the next window starts.
 *
 * @category budgets
 */
export interface Budget {
  readonly window: Duration.Input
  /** Input plus output tokens per window. */
  readonly tokens?: number
  /** US dollars per window. */
  readonly costUsd?: number
}

/**
 * The budget state of one execution of a run's body. It is rebuilt on every
 * replay from journaled values only (the steps' results and the clock reads
 * recorded before each step), so every replay takes the same decisions.
 */
class RunBudget extends Context.Service<
  RunBudget,
  {
    readonly admit: (
      step: string,
      estimatedTokens: number | undefined
    ) => Effect.Effect<void, never, WorkflowEngine | WorkflowInstance | AgentOutput>
    readonly spend: (result: AgentMessage.QueryResult) => void
  }
>()("effect-claude-agent/workflow/AgentWorkflow/RunBudget") {}

const makeRunBudget = (budget: Budget) => {
  const window = Duration.toMillis(Duration.fromInputUnsafe(budget.window))
  let windowStart: number | undefined
  let tokens = 0
  let cost = 0
  let steps = 0
  let totalTokens = 0
  let totalCost = 0
  const over = (extraTokens: number, extraCost: number) =>
    (budget.tokens !== undefined && tokens + extraTokens > budget.tokens) ||
    (budget.costUsd !== undefined && cost + extraCost > budget.costUsd)
  return RunBudget.of({
    admit: (step, estimatedTokens) =>
      Effect.gen(function* () {
        const now = yield* Activity.make({
          name: `${step}/clock`,
          success: Schema.Number,
          execute: Effect.clockWith((clock) => clock.currentTimeMillis)
        })
        if (windowStart === undefined) windowStart = now
        if (now >= windowStart + window) {
          windowStart += Math.floor((now - windowStart) / window) * window
          tokens = 0
          cost = 0
        }
        const expectedTokens = estimatedTokens ?? (steps === 0 ? 0 : totalTokens / steps)
        const expectedCost = steps === 0 ? 0 : totalCost / steps
        // A step is never held back in a fresh window: it could wait forever.
        if ((tokens > 0 || cost > 0) && over(expectedTokens, expectedCost)) {
          const until = windowStart + window
          yield* status(step, 0, { state: "budget_wait", until, tokens, costUsd: cost })
          yield* Effect.logInfo("budget window spent; waiting for the next one", { until })
          yield* DurableClock.sleep({ name: `${step}/budget`, duration: Duration.millis(until - now) })
          windowStart = until
          tokens = 0
          cost = 0
        }
      }),
    spend: (result) => {
      const used = result.usage.inputTokens + result.usage.outputTokens
      tokens += used
      cost += result.costUsd
      steps++
      totalTokens += used
      totalCost += result.costUsd
    }
  })
}

/**
 * Gives the agent steps of `effect` a spending limit per window.
 *
 * @category budgets
 */
export const withBudget =
  (budget: Budget) =>
  <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    Effect.provideServiceEffect(
      effect,
      RunBudget,
      Effect.sync(() => makeRunBudget(budget))
    ) as Effect.Effect<A, E, R>

// ---------------------------------------------------------------------------
// Versioning
// ---------------------------------------------------------------------------

/**
 * Whether this run takes the code path of patch `id`, decided once per run
 * and journaled. A run that is new at this point takes it (`true`); a run
 * that had already gone past this point under the old code (it has steps in
 * its history the body has not replayed yet) keeps the old path (`false`).
 *
 * ```ts
 * if (yield* AgentWorkflow.patched("ask-for-tests")) {
 *   yield* AgentWorkflow.runStep("tests", { prompt: "Write the tests first" })
 * }
 * ```
 *
 * @category versioning
 */
export const patched = (id: string) =>
  Effect.gen(function* () {
    const name = `patch:${id}`
    yield* StepName.claim(name)
    const { runId } = yield* runOf
    const replayed = yield* StepName.claimedSoFar
    const output = yield* AgentOutput
    const taken = yield* Activity.make({
      name,
      success: Schema.Boolean,
      execute: Effect.gen(function* () {
        const history = yield* Durably.durably(output.steps(runId))
        return history.every((step) => replayed.has(step))
      })
    })
    yield* status(name, 0, { state: "patch", id, taken })
    return taken
  })

// ---------------------------------------------------------------------------
// Conversations and resources
// ---------------------------------------------------------------------------

/**
 * @category conversations
 */
export interface ConversationOptions<R = never> extends AgentActivity.Options<R> {
  /** The first message, if the run starts with one. */
  readonly first?: string
  /** A message for which this returns true ends the conversation. */
  readonly isEnd?: (message: string) => boolean
  /** The longest the conversation waits for the next message. Default: forever. */
  readonly idleTimeout?: Duration.Input
  /** At most this many replies. Default: unbounded. */
  readonly maxTurns?: number
}

/**
 * A chat with one agent session: each message a person sends (through the
 * input token of `<name>-message#<i>`) gets a reply step `<name>#<i>` that
 * continues the session. Between messages the run is suspended, for days if
 * need be, and it survives restarts. Returns the replies.
 *
 * @category conversations
 */
export const conversation = <R = never>(name: string, options: ConversationOptions<R> = {}) =>
  Effect.gen(function* () {
    const replies: Array<AgentMessage.QueryResult> = []
    let session = options.session
    for (let turn = 0; options.maxTurns === undefined || turn < options.maxTurns; turn++) {
      const message =
        turn === 0 && options.first !== undefined
          ? options.first
          : yield* awaitUserInput(StepName.iteration(`${name}-message`, turn), {
              request: { conversation: name, turn },
              ...(options.idleTimeout === undefined ? {} : { timeout: options.idleTimeout }),
              default: ""
            })
      if (message === "" || options.isEnd?.(message) === true) break
      const reply = yield* runStep(StepName.iteration(name, turn), { ...options, prompt: message, session })
      replies.push(reply)
      session = reply.sessionId
    }
    return replies
  })

/**
 * Acquires a resource for the rest of the run: it is released when the run
 * ends, not when the step that acquired it does. A run suspended on a wait
 * keeps it until the run resumes and ends; a replay elsewhere acquires its
 * own.
 *
 * @category resources
 */
export const resource = <A, E, R>(acquire: Effect.Effect<A, E, R>) => Workflow.provideScope(acquire)
