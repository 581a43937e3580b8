/**
 * The HTTP API of the agent service, shared by the server and its clients.
 *
 * `AgentApi` is the generic part that every server has: workflows, runs,
 * their live output, the decisions people send, and health. `withWorkflows`
 * adds the typed endpoints `WorkflowProxy` derives from a server's own
 * workflows (execute, discard, resume under `/v1/workflows/<name>`).
 *
 * Every `/v1` route requires `Authorization: Bearer <token>`. Errors are the
 * JSON bodies of `ApiError`.
 *
 * @since 0.1.0
 */
import type { Array as Arr } from "effect"
import { Schema } from "effect"
import * as Sse from "effect/encoding/Sse"
import {
  HttpApi,
  HttpApiEndpoint,
  HttpApiGroup,
  HttpApiMiddleware,
  HttpApiSchema,
  HttpApiSecurity,
  OpenApi
} from "effect/http-api"
import { Rpc } from "effect/rpc"
import type * as Workflow from "effect/workflow/Workflow"
import * as WorkflowProxy from "effect/workflow/WorkflowProxy"
import { OutputEvent } from "../output/OutputEvent.ts"
import * as ApiError from "./ApiError.ts"

// ---------------------------------------------------------------------------
// Middleware
// ---------------------------------------------------------------------------

/**
 * The bearer token every `/v1` route requires.
 *
 * @category middleware
 */
export class Authorization extends HttpApiMiddleware.Service<Authorization>()("effect-claude-agent/api/Authorization", {
  requiredForClient: true,
  security: { bearer: HttpApiSecurity.bearer },
  error: ApiError.Unauthorized
}) {}

/**
 * Turns a request that fails its schemas (bad JSON, a missing field, a bad
 * query) into a `BadRequest` that lists the problems.
 *
 * @category middleware
 */
export class RequestErrors extends HttpApiMiddleware.Service<RequestErrors>()("effect-claude-agent/api/RequestErrors", {
  error: ApiError.BadRequest
}) {}

// ---------------------------------------------------------------------------
// Schemas
// ---------------------------------------------------------------------------

/**
 * A name the API stores or looks up (a run id, a workflow name, an idempotency
 * key, a cursor): any string without NUL characters, which Postgres cannot
 * store in text. Refusing them here is a 400 instead of a database error.
 *
 * @category schemas
 */
export const Identifier = Schema.String.check(
  Schema.makeFilter((value: string) => !value.includes("\u0000"), {
    message: "Must not contain NUL (\\u0000) characters",
    toJsonSchema: () => ({ pattern: "^[^\\u0000]*$" })
  })
)

/**
 * What a run can be doing.
 *
 * @category schemas
 */
export const RunStatus = Schema.Literals(["running", "waiting", "completed", "failed", "interrupted"])

/**
 * A workflow the server runs, with the JSON Schema of its input.
 *
 * @category schemas
 */
export class WorkflowInfo extends Schema.Class<WorkflowInfo>("effect-claude-agent/api/WorkflowInfo")({
  name: Schema.String,
  input: Schema.Unknown
}) {}

/**
 * A request a run waits for, with the signed token that answers it.
 *
 * @category schemas
 */
export class WaitingFor extends Schema.Class<WaitingFor>("effect-claude-agent/api/WaitingFor")({
  kind: Schema.Literals(["approval", "input"]),
  step: Schema.String,
  token: Schema.String,
  request: Schema.Unknown,
  /** ISO 8601; when the request times out and takes its default. */
  expiresAt: Schema.optional(Schema.String)
}) {}

/**
 * A run.
 *
 * @category schemas
 */
export class RunView extends Schema.Class<RunView>("effect-claude-agent/api/RunView")({
  runId: Schema.String,
  workflow: Schema.String,
  status: RunStatus,
  waitingFor: Schema.Array(WaitingFor),
  input: Schema.Unknown,
  result: Schema.optional(Schema.Unknown),
  error: Schema.optional(Schema.Unknown),
  idempotencyKey: Schema.optional(Schema.String),
  /** Tokens and cost of the run's completed agent steps. */
  usage: Schema.Struct({ inputTokens: Schema.Number, outputTokens: Schema.Number, costUsd: Schema.Number }),
  /** ISO 8601. */
  createdAt: Schema.String,
  updatedAt: Schema.String
}) {}

/**
 * A page of runs, newest first.
 *
 * @category schemas
 */
export class RunPage extends Schema.Class<RunPage>("effect-claude-agent/api/RunPage")({
  runs: Schema.Array(RunView),
  /** Pass as `cursor` for the next page; absent on the last page. */
  nextCursor: Schema.optional(Schema.String)
}) {}

/**
 * Starts a run of a registered workflow.
 *
 * @category schemas
 */
export const CreateRun = Schema.Struct({
  workflow: Schema.String,
  input: Schema.Unknown,
  /** The same key (for the same workflow) always names the same run. */
  idempotencyKey: Schema.optional(Identifier.check(Schema.isNonEmpty()))
})

/**
 * The run that was started (or already existed under the key).
 *
 * @category schemas
 */
export const Created = Schema.Struct({ runId: Schema.String }).pipe(HttpApiSchema.status(201))

/**
 * A request that was accepted and is carried out in the background.
 *
 * @category schemas
 */
export const Accepted = Schema.Struct({ runId: Schema.String }).pipe(HttpApiSchema.status(202))

/**
 * A reviewer's decision.
 *
 * @category schemas
 */
export const Approval = Schema.Struct({ approved: Schema.Boolean, comment: Schema.optional(Schema.String) })

/**
 * A person's answer.
 *
 * @category schemas
 */
export const Answer = Schema.Struct({ value: Schema.String })

/**
 * Which run and request a decision went to.
 *
 * @category schemas
 */
export const Decided = Schema.Struct({ runId: Schema.String, step: Schema.String })

/**
 * Liveness and whether the database answers.
 *
 * @category schemas
 */
export const Health = Schema.Struct({
  status: Schema.Literals(["ok", "unavailable"]),
  database: Schema.Literals(["ok", "unreachable"])
})

/**
 * The SSE form of a run's output: `id` is the event's sequence, `event` its
 * kind, `data` the `OutputEvent` as JSON. The stream ends with an `end` event
 * (data: the run's final status) when the run ends; a server that shuts down
 * sends a `retry:` hint instead, and the client reconnects with
 * `Last-Event-ID`.
 *
 * @category schemas
 */
export const EventStream = HttpApiSchema.StreamSse({ events: Sse.EventEncoded })

const runId = { runId: Identifier }

const ResumePayload = Schema.Struct({ executionId: Identifier })

// ---------------------------------------------------------------------------
// Groups
// ---------------------------------------------------------------------------

/**
 * Workflows and runs.
 *
 * @category groups
 */
export class RunsGroup extends HttpApiGroup.make("runs")
  .add(
    HttpApiEndpoint.get("workflows", "/v1/workflows", { success: Schema.Array(WorkflowInfo) }),
    HttpApiEndpoint.post("create", "/v1/runs", {
      payload: CreateRun,
      success: Created,
      error: [ApiError.NotFound, ApiError.InvalidInput, ApiError.Conflict]
    }),
    HttpApiEndpoint.get("list", "/v1/runs", {
      query: {
        status: Schema.optional(RunStatus),
        workflow: Schema.optional(Identifier),
        limit: Schema.optional(Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 100 }))),
        cursor: Schema.optional(Identifier)
      },
      success: RunPage,
      error: ApiError.BadRequest
    }),
    HttpApiEndpoint.get("get", "/v1/runs/:runId", { params: runId, success: RunView, error: ApiError.NotFound }),
    HttpApiEndpoint.get("events", "/v1/runs/:runId/events", {
      params: runId,
      query: { from: Schema.optional(Schema.Int.check(Schema.isGreaterThanOrEqualTo(0))) },
      headers: { accept: Schema.optional(Schema.String), "last-event-id": Schema.optional(Schema.String) },
      success: [Schema.Array(OutputEvent), EventStream],
      error: [ApiError.NotFound, ApiError.BadRequest]
    }),
    HttpApiEndpoint.post("interrupt", "/v1/runs/:runId/interrupt", {
      params: runId,
      success: Accepted,
      error: [ApiError.NotFound, ApiError.Conflict]
    }),
    HttpApiEndpoint.post("resume", "/v1/runs/:runId/resume", {
      params: runId,
      success: Accepted,
      error: [ApiError.NotFound, ApiError.Conflict]
    })
  )
  .middleware(Authorization)
  .annotateMerge(
    OpenApi.annotations({ title: "Runs", description: "Start, list, follow, interrupt and resume runs" })
  ) {}

/**
 * The decisions people send with the tokens of `waitingFor`.
 *
 * @category groups
 */
export class DecisionsGroup extends HttpApiGroup.make("decisions")
  .add(
    HttpApiEndpoint.post("approve", "/v1/approvals/:token", {
      params: { token: Schema.String },
      payload: Approval,
      success: Decided,
      error: [ApiError.InvalidToken, ApiError.NotFound, ApiError.Conflict]
    }),
    HttpApiEndpoint.post("answer", "/v1/inputs/:token", {
      params: { token: Schema.String },
      payload: Answer,
      success: Decided,
      error: [ApiError.InvalidToken, ApiError.NotFound, ApiError.Conflict]
    })
  )
  .middleware(Authorization)
  .annotateMerge(OpenApi.annotations({ title: "Decisions", description: "Approve plans and answer questions" })) {}

/**
 * Health, without authentication.
 *
 * @category groups
 */
export class SystemGroup extends HttpApiGroup.make("system", { topLevel: true }).add(
  HttpApiEndpoint.get("health", "/health", {
    success: Health,
    error: Health.pipe(HttpApiSchema.status(503))
  })
) {}

/**
 * The generic API: what every agent server serves.
 *
 * @category api
 */
export class AgentApi extends HttpApi.make("effect-claude-agent")
  .add(RunsGroup, DecisionsGroup, SystemGroup)
  .middleware(RequestErrors)
  .annotateMerge(OpenApi.annotations({ title: "effect-claude-agent", version: "0.1.0" })) {}

/**
 * The typed endpoints of a server's own workflows: `POST /v1/workflows/<name>`
 * (execute and wait), `…/discard` (start, return the run id) and `…/resume`.
 *
 * @category api
 */
export const workflowsGroup = <const Workflows extends readonly [Workflow.Any, ...Array<Workflow.Any>]>(
  workflows: Workflows
) => {
  const group = WorkflowProxy.toHttpApiGroup("workflows", workflows)
  // The same endpoints, but `…/resume` takes an `Identifier`: on Postgres the cluster engine retries a
  // write it can never make (an id with NUL) forever, and the request would never be answered.
  const resumes = workflows.map(({ _tag }) => {
    const endpoint = (group.endpoints as unknown as Record<string, HttpApiEndpoint.Top>)[`${_tag}Resume`]!
    return HttpApiEndpoint.post(endpoint.identifier, endpoint.path as `/${string}`, {
      payload: ResumePayload
    }).annotateMerge(endpoint.annotations)
  }) as unknown as Arr.NonEmptyReadonlyArray<HttpApiEndpoint.Top>
  return (group.add(...resumes) as unknown as typeof group)
    .prefix("/v1/workflows")
    .middleware(Authorization)
    .middleware(RequestErrors)
}

/**
 * The RPC procedures of a server's own workflows (`WorkflowProxy.toRpcGroup`),
 * with the same `Identifier` check on `…Resume` as the HTTP endpoint.
 *
 * @category api
 */
export const workflowsRpcGroup = <const Workflows extends readonly [Workflow.Any, ...Array<Workflow.Any>]>(
  workflows: Workflows
) => {
  const group = WorkflowProxy.toRpcGroup(workflows)
  const resumes = workflows.map(({ _tag }) => {
    const rpc = group.requests.get(`${_tag}Resume`)!
    return Rpc.make(rpc._tag, { payload: ResumePayload }).annotateMerge(rpc.annotations)
  })
  return group.add(...resumes) as unknown as typeof group
}

/**
 * `AgentApi` plus the typed endpoints of `workflows`.
 *
 * @category api
 */
export const withWorkflows = <const Workflows extends readonly [Workflow.Any, ...Array<Workflow.Any>]>(
  workflows: Workflows
) => AgentApi.add(workflowsGroup(workflows))
