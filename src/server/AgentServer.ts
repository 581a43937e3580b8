/**
 * The agent service over HTTP: `AgentApi` with the typed endpoints of the
 * served workflows, their RPC endpoint, `/openapi.json`, `/health` and the
 * dashboard at `/`, on a Node HTTP server.
 *
 * ```ts
 * const Server = AgentServer.layer({ workflows: [PlanAndAct], host: "127.0.0.1", port: 8787 }).pipe(
 *   Layer.provide(PlanAndActLayer),              // the workflows' implementations
 *   Layer.provideMerge(AgentRuntime.layerConfig), // engine, output, approvals, runs
 *   ...                                           // ApiToken, ApprovalSecret, AgentSdk, Shutdown
 * )
 * ```
 *
 * `main.ts` is the ready-made server; this layer is for serving your own
 * workflows.
 *
 * @since 0.1.0
 */
import { createServer } from "node:http"
import { NodeHttpServer } from "@effect/platform-node"
import type { Array as Arr } from "effect"
import { Cause, Duration, Effect, Layer, Schema } from "effect"
import { HttpMiddleware, HttpRouter, HttpServerResponse } from "effect/http"
import { HttpApiBuilder } from "effect/http-api"
import { RpcSerialization, RpcServer } from "effect/rpc"
import type * as Workflow from "effect/workflow/Workflow"
import * as WorkflowProxyServer from "effect/workflow/WorkflowProxyServer"
import * as AgentApi from "../api/AgentApi.ts"
import * as ApiError from "../api/ApiError.ts"
import * as ApiHandlers from "./ApiHandlers.ts"
import * as Auth from "./Auth.ts"
import * as Dashboard from "./Dashboard.ts"
import { ApiToken } from "./Credentials.ts"
import * as RequestErrors from "./RequestErrors.ts"
import { ServedWorkflows } from "./ServedWorkflows.ts"
import { Shutdown } from "./Shutdown.ts"

/**
 * @category models
 */
export interface Options<Workflows extends Arr.NonEmptyReadonlyArray<Workflow.Any>> {
  readonly workflows: Workflows
  /** Default 127.0.0.1: reachable from this machine only. */
  readonly host?: string | undefined
  /** 0 picks a free port. */
  readonly port: number
  /** Larger request bodies get a 413. Default 1 MiB. */
  readonly maxBodyBytes?: number | undefined
  /**
   * Browser origins (`https://app.example.com`) whose pages may call the API
   * (CORS). Default none: the server sends no CORS headers, so browsers refuse
   * every cross-origin call and only the dashboard, on the server's own
   * origin, works in a browser.
   */
  readonly corsOrigins?: ReadonlyArray<string> | undefined
}

/**
 * A browser origin, written as browsers send it in `Origin`: `scheme://host[:port]`,
 * lowercase, no path and no trailing slash. Surrounding spaces are dropped.
 *
 * @category schemas
 */
export const CorsOrigin = Schema.Trim.check(
  Schema.makeFilter((origin: string) => {
    const parsed = URL.parse(origin)
    if (parsed === null || (parsed.protocol !== "http:" && parsed.protocol !== "https:")) {
      return `"${origin}" is not an origin: write scheme://host[:port], e.g. https://app.example.com`
    }
    return parsed.origin === origin ? true : `"${origin}" is not an origin as browsers send it: write ${parsed.origin}`
  })
)

/**
 * CORS for the listed origins only: their pages may call the API with the
 * bearer token (no cookies: credentials stay off); any other origin gets no
 * `Access-Control-Allow-Origin`, so the browser refuses it.
 *
 * @category layers
 */
export const layerCors = (origins: ReadonlyArray<string>) => {
  const allowed = new Set(origins)
  return HttpRouter.middleware(
    HttpMiddleware.cors({
      allowedOrigins: (origin) => allowed.has(origin),
      allowedMethods: ["GET", "POST"],
      allowedHeaders: ["authorization", "content-type", "accept", "last-event-id"],
      maxAge: 600
    }),
    { global: true }
  )
}

/**
 * The path of the RPC endpoint (`AgentApi.workflowsRpcGroup` of the served
 * workflows, NDJSON over HTTP POST).
 *
 * @category constants
 */
export const rpcPath = "/v1/rpc"

// The RPC server interrupts its own request when the body repeats a request id, or goes on after an `Eof`
// message while requests still run: the client's mistake, which would reach the client as the 503 of an
// interruption. It becomes a 400. A request interrupted from outside (the client went away) stays
// interrupted (`catchCause` cannot undo that), and while the server drains the 503 is the truth.
const refuseMalformedRpc = <E, R>(
  handler: Effect.Effect<HttpServerResponse.HttpServerResponse, E, R>,
  shutdown: Shutdown["Service"]
) =>
  Effect.catchCause(handler, (cause) =>
    Cause.hasInterruptsOnly(cause)
      ? Effect.flatMap(shutdown.isDraining, (draining) =>
          draining
            ? Effect.failCause(cause)
            : Effect.succeed(
                HttpServerResponse.jsonUnsafe(
                  new ApiError.BadRequest({
                    message: "The RPC messages were refused: a request id is used twice, or messages follow an Eof"
                  }),
                  { status: 400 }
                )
              )
        )
      : Effect.failCause(cause)
  )

/**
 * The RPC endpoint, behind the same bearer token as the API.
 *
 * @category layers
 */
export const layerRpc = <const Workflows extends Arr.NonEmptyReadonlyArray<Workflow.Any>>(workflows: Workflows) =>
  Layer.effectDiscard(
    Effect.gen(function* () {
      const router = yield* HttpRouter.HttpRouter
      const { token } = yield* ApiToken
      const shutdown = yield* Shutdown
      const handler = yield* RpcServer.toHttpEffect(AgentApi.workflowsRpcGroup(workflows))
      yield* router.add("POST", rpcPath, Auth.guard(token, refuseMalformedRpc(handler, shutdown)))
    })
  ).pipe(Layer.provide(WorkflowProxyServer.layerRpcHandlers(workflows)), Layer.provide(RpcSerialization.layerNdjson))

/**
 * The HTTP server. It needs the workflow layer (`AgentRuntime`) with the
 * served workflows registered on it, the `ApiToken` and `Shutdown`.
 *
 * @category layers
 */
export const layer = <const Workflows extends Arr.NonEmptyReadonlyArray<Workflow.Any>>(options: Options<Workflows>) => {
  const api = AgentApi.withWorkflows(options.workflows)
  const routes = HttpApiBuilder.layer(api, { openapiPath: "/openapi.json" }).pipe(
    Layer.provide(ApiHandlers.layer),
    Layer.provide(WorkflowProxyServer.layerHttpApi(api, "workflows", options.workflows)),
    Layer.provide([Auth.layer, RequestErrors.layer])
  )
  return HttpRouter.serve(
    Layer.mergeAll(
      routes,
      layerRpc(options.workflows),
      Dashboard.layer,
      RequestErrors.layerGlobal({ maxBodyBytes: options.maxBodyBytes ?? 1024 * 1024 }),
      options.corsOrigins === undefined || options.corsOrigins.length === 0
        ? Layer.empty
        : layerCors(options.corsOrigins)
    ),
    {
      disableListenLog: true,
      // Approval tokens travel in the path and are longer than the router's default limit of 100.
      routerConfig: { maxParamLength: 2048 },
      // The default access log prints the whole path, tokens included; `RequestErrors` logs a redacted one.
      disableLogger: true
    }
  ).pipe(
    // The default request span records the whole URL; the decision handlers make their own, without the token.
    Layer.provide(
      Layer.succeed(HttpMiddleware.TracerDisabledWhen)((request) => RequestErrors.carriesToken(request.url))
    ),
    // Merged, so that whoever starts the server can read the bound address.
    Layer.provideMerge(
      NodeHttpServer.layer(createServer, {
        host: options.host ?? "127.0.0.1",
        port: options.port,
        // Event streams end when shutdown begins; what is left is short requests.
        gracefulShutdownTimeout: Duration.seconds(5)
      })
    ),
    Layer.provide(ServedWorkflows.layer(options.workflows))
  )
}
