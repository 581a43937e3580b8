/**
 * The handlers of `AgentApi`: runs, their output, decisions and health.
 *
 * Every client mistake is answered with an `ApiError` before anything is
 * written: the workflow and its input are checked before a run is
 * registered, and a decision goes through `Approvals.decide`, whose
 * conditional update refuses a stale or forged one without touching the
 * request.
 *
 * @since 0.1.0
 */
import { createHash, randomUUID } from "node:crypto"
import { DateTime, Duration, Effect, Layer, Option, Schema, Stream } from "effect"
import { HttpServerResponse } from "effect/http"
import { HttpApiBuilder } from "effect/http-api"
import type * as Workflow from "effect/workflow/Workflow"
import { WorkflowEngine } from "effect/workflow/WorkflowEngine"
import { AgentApi, RunPage, RunView, WaitingFor, WorkflowInfo } from "../api/AgentApi.ts"
import * as ApiError from "../api/ApiError.ts"
import { AgentOutput } from "../output/AgentOutput.ts"
import type { OutputEvent } from "../output/OutputEvent.ts"
import { Approvals, Decision } from "../workflow/Approvals.ts"
import { type Run, Runs } from "../workflow/Runs.ts"
import { issuesOf } from "./RequestErrors.ts"
import { inputJsonSchema, ServedWorkflows } from "./ServedWorkflows.ts"
import { Shutdown } from "./Shutdown.ts"

const iso = (millis: number) => DateTime.formatIso(DateTime.makeUnsafe(millis))

/**
 * A run's id: derived from the workflow and the idempotency key when there is
 * one (the same key names the same run), random otherwise. Never the
 * workflow's payload-derived key: two runs of the same task are two runs.
 */
const runIdFor = (workflow: string, idempotencyKey: string | undefined) =>
  idempotencyKey === undefined
    ? randomUUID().replaceAll("-", "")
    : createHash("sha256").update(`${workflow}\u0000${idempotencyKey}`).digest("hex").slice(0, 32)

const notFoundRun = (runId: string) => new ApiError.NotFound({ message: `No run ${runId}`, resource: "run" })

const finished = (run: Run) => run.status === "completed" || run.status === "failed" || run.status === "interrupted"

const stillRunning = (run: Run) =>
  finished(run)
    ? Effect.fail(
        new ApiError.Conflict({ message: `Run ${run.runId} has ended (${run.status})`, reason: "run_finished" })
      )
    : Effect.void

/** The SSE text of one output event: `id` is its sequence, `event` its kind. */
const sseEvent = (event: OutputEvent) =>
  `id: ${event.sequence}\nevent: ${event.kind}\ndata: ${JSON.stringify(event)}\n\n`

/**
 * How long a follower waits to reconnect after a shutdown closed its stream.
 *
 * @category configuration
 */
export const retryAfterShutdown = Duration.seconds(1)

/**
 * The handlers of the `runs`, `decisions` and `system` groups.
 *
 * @category layers
 */
export const layer = Layer.mergeAll(
  HttpApiBuilder.group(
    AgentApi,
    "runs",
    Effect.fnUntraced(function* (handlers) {
      const served = yield* ServedWorkflows
      const engine = yield* WorkflowEngine
      const runs = yield* Runs
      const approvals = yield* Approvals
      const output = yield* AgentOutput
      const shutdown = yield* Shutdown

      const view = (run: Run) =>
        Effect.map(
          Effect.forEach(run.pending, (wait) =>
            Effect.map(
              approvals.tokenFor(wait),
              (token) =>
                new WaitingFor({
                  kind: wait.purpose,
                  step: wait.step,
                  token,
                  request: wait.request,
                  ...(wait.expiresAt === undefined ? {} : { expiresAt: iso(wait.expiresAt) })
                })
            )
          ),
          (waitingFor) =>
            new RunView({
              runId: run.runId,
              workflow: run.workflow,
              status: run.status,
              waitingFor,
              input: run.input,
              ...(run.result === undefined ? {} : { result: run.result }),
              ...(run.error === undefined ? {} : { error: run.error }),
              ...(run.idempotencyKey === undefined ? {} : { idempotencyKey: run.idempotencyKey }),
              usage: run.usage,
              createdAt: iso(run.createdAt),
              updatedAt: iso(run.updatedAt)
            })
        )

      const find = (runId: string) =>
        Effect.flatMap(Effect.orDie(runs.get(runId)), (run) =>
          Option.match(run, { onNone: () => Effect.fail(notFoundRun(runId)), onSome: Effect.succeed })
        )

      const workflowOf = (run: Run) =>
        Effect.fromNullishOr(served.get(run.workflow)).pipe(
          Effect.mapError(
            () =>
              new ApiError.NotFound({
                message: `Run ${run.runId} belongs to workflow ${run.workflow}, which this server does not run`,
                resource: "workflow"
              })
          )
        )

      return handlers
        .handle("workflows", () =>
          Effect.succeed(served.all.map((w) => new WorkflowInfo({ name: w._tag, input: inputJsonSchema(w) })))
        )
        .handle("create", ({ payload }) =>
          Effect.gen(function* () {
            const workflow = served.get(payload.workflow)
            if (workflow === undefined) {
              return yield* new ApiError.NotFound({
                message: `No workflow named "${payload.workflow}"; GET /v1/workflows lists them`,
                resource: "workflow"
              })
            }
            const codec = Schema.toCodecJson(workflow.payloadSchema as unknown as Schema.Codec<unknown, unknown>)
            const decoded = yield* Schema.decodeUnknownEffect(codec)(payload.input).pipe(
              Effect.mapError((error) => {
                const issues = issuesOf(error, ["input"])
                return new ApiError.InvalidInput({
                  message: `The input does not match the ${workflow._tag} workflow's schema: ${issues
                    .map((i) => `${i.path.join(".")}: ${i.message}`)
                    .join("; ")}`,
                  workflow: workflow._tag,
                  issues
                })
              })
            )
            const input = yield* Effect.orDie(Schema.encodeUnknownEffect(codec)(decoded))
            const runId = runIdFor(workflow._tag, payload.idempotencyKey)
            const run = yield* Effect.orDie(
              runs.register({ runId, workflow: workflow._tag, input, idempotencyKey: payload.idempotencyKey })
            )
            if (JSON.stringify(run.input) !== JSON.stringify(input)) {
              return yield* new ApiError.Conflict({
                message: `The idempotency key "${payload.idempotencyKey}" already names run ${runId}, with another input`,
                reason: "idempotency_key_reused"
              })
            }
            // The workflow's registration on the engine already required its schemas' services.
            yield* engine.execute(workflow as Workflow.Workflow<string, any, any, any>, {
              executionId: runId,
              payload: decoded,
              discard: true
            }) as Effect.Effect<string>
            yield* Effect.logInfo("run started", { runId, workflow: workflow._tag })
            return { runId }
          })
        )
        .handle("list", ({ query }) =>
          runs.list(query).pipe(
            Effect.catchTags({
              InvalidCursor: (error) => Effect.fail(new ApiError.BadRequest({ message: error.message })),
              SqlError: Effect.die
            }),
            Effect.flatMap((page) =>
              Effect.map(
                Effect.forEach(page.runs, view),
                (views) =>
                  new RunPage({
                    runs: views,
                    ...(page.nextCursor === undefined ? {} : { nextCursor: page.nextCursor })
                  })
              )
            )
          )
        )
        .handle("get", ({ params }) => Effect.flatMap(find(params.runId), view))
        .handle("events", ({ params, query, headers }) =>
          Effect.gen(function* () {
            const run = yield* Effect.option(find(params.runId))
            // A run registered before the registry existed still has its output.
            if (Option.isNone(run) && Option.isNone(yield* Effect.orDie(output.status(params.runId)))) {
              return yield* notFoundRun(params.runId)
            }
            const lastEventId = headers["last-event-id"]
            // Digits only, and an id a number holds exactly (as `?from` requires): past 2^53 the offset
            // read would not be the one sent.
            if (
              lastEventId !== undefined &&
              !(/^\d+$/.test(lastEventId.trim()) && Number.isSafeInteger(Number(lastEventId) + 1))
            ) {
              return yield* new ApiError.BadRequest({ message: `Last-Event-ID "${lastEventId}" is not an event id` })
            }
            const from = lastEventId === undefined ? Math.max(1, query.from ?? 1) : Number(lastEventId) + 1
            const accept = headers.accept ?? ""
            if (accept.includes("application/json") && !accept.includes("text/event-stream")) {
              return yield* Effect.orDie(output.read(params.runId, { from }))
            }
            const events = output.subscribe(params.runId, { from }).pipe(
              Stream.map(sseEvent),
              Stream.interruptWhen(shutdown.draining),
              Stream.concat(
                Stream.fromEffect(
                  Effect.gen(function* () {
                    if (yield* shutdown.isDraining) return `retry: ${Duration.toMillis(retryAfterShutdown)}\n\n`
                    const status = Option.match(yield* runs.get(params.runId), {
                      onNone: () => "ended",
                      onSome: (ended) => ended.status
                    })
                    return `event: end\ndata: ${JSON.stringify({ runId: params.runId, status })}\n\n`
                  })
                )
              ),
              // Comments keep idle connections open through proxies.
              Stream.merge(
                Stream.map(Stream.tick("15 seconds"), () => ": keep-alive\n\n"),
                {
                  haltStrategy: "left"
                }
              ),
              Stream.tapCause((cause) => Effect.logWarning("event stream failed", cause)),
              Stream.encodeText
            )
            return HttpServerResponse.stream(events, {
              contentType: "text/event-stream",
              headers: { "cache-control": "no-cache", "x-accel-buffering": "no" }
            })
          })
        )
        .handle("interrupt", ({ params }) =>
          Effect.gen(function* () {
            const run = yield* find(params.runId)
            yield* stillRunning(run)
            yield* engine.interrupt(yield* workflowOf(run), run.runId)
            yield* Effect.logInfo("run interrupted", { runId: run.runId })
            return { runId: run.runId }
          })
        )
        .handle("resume", ({ params }) =>
          Effect.gen(function* () {
            const run = yield* find(params.runId)
            yield* stillRunning(run)
            yield* engine.resume(yield* workflowOf(run), run.runId)
            return { runId: run.runId }
          })
        )
    })
  ),
  HttpApiBuilder.group(
    AgentApi,
    "decisions",
    Effect.fnUntraced(function* (handlers) {
      const approvals = yield* Approvals
      const decide = (token: string, response: Decision | string) =>
        approvals.decide(token, response).pipe(
          Effect.tap((claims) => Effect.annotateCurrentSpan({ "run.id": claims.executionId, step: claims.step })),
          Effect.map((claims) => ({ runId: claims.executionId, step: claims.step })),
          Effect.catchTags({
            InvalidToken: (error) =>
              Effect.andThen(
                Effect.logInfo("refused a decision token", { reason: error.reason }),
                Effect.fail(new ApiError.InvalidToken({ message: "The token is not valid for this request" }))
              ),
            DecisionRejected: (error) =>
              Effect.fail(
                error.reason === "unknown_request"
                  ? new ApiError.NotFound({ message: error.message, resource: "request" })
                  : new ApiError.Conflict({ message: error.message, reason: error.reason })
              ),
            SqlError: Effect.die
          }),
          // The request span of these routes is off (the path holds the token): this one says what was decided.
          Effect.withSpan("AgentServer.decide", {
            kind: "server",
            attributes: { purpose: typeof response === "string" ? "input" : "approval" }
          })
        )
      return handlers
        .handle("approve", ({ params, payload }) =>
          decide(
            params.token,
            new Decision({
              approved: payload.approved,
              ...(payload.comment === undefined ? {} : { comment: payload.comment })
            })
          )
        )
        .handle("answer", ({ params, payload }) => decide(params.token, payload.value))
    })
  ),
  HttpApiBuilder.group(
    AgentApi,
    "system",
    Effect.fnUntraced(function* (handlers) {
      const runs = yield* Runs
      // Listing one run is a real query: the database answers or it does not.
      return handlers.handle("health", () =>
        runs.list({ limit: 1 }).pipe(
          Effect.timeout("2 seconds"),
          Effect.matchEffect({
            onSuccess: () => Effect.succeed({ status: "ok" as const, database: "ok" as const }),
            onFailure: () => Effect.fail({ status: "unavailable" as const, database: "unreachable" as const })
          })
        )
      )
    })
  )
)
