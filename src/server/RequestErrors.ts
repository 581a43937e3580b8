/**
 * Client mistakes as JSON 4xx responses, never a 500 or an empty body.
 *
 * Two places catch them. The `RequestErrors` API middleware turns a request
 * that fails its endpoint's schemas (malformed JSON, a missing field, a bad
 * query) into a `BadRequest` listing the issues. The global router middleware
 * covers what happens outside any endpoint: an unknown route (404), a body
 * over the size limit (413), a body that is not JSON (415), a request during
 * shutdown (503), and, for a real
 * server fault, a 500 whose body says nothing about the internals.
 *
 * @since 0.1.0
 */
import { ByteSize, Cause, Effect, type Layer, Option, Predicate, type Schema } from "effect"
import * as SchemaIssue from "effect/SchemaIssue"
import { HttpIncomingMessage, HttpRouter, HttpServerRequest, HttpServerResponse } from "effect/http"
import { HttpApiMiddleware } from "effect/http-api"
import * as ApiError from "../api/ApiError.ts"
import { RequestErrors } from "../api/AgentApi.ts"
import { Shutdown } from "./Shutdown.ts"

const formatter = SchemaIssue.makeFormatterStandardSchemaV1()

/**
 * The issues of a schema error, each with its path prefixed by `prefix`.
 *
 * @category formatting
 */
export const issuesOf = (
  error: Schema.SchemaError,
  prefix: ReadonlyArray<string> = []
): ReadonlyArray<ApiError.Issue> =>
  formatter(error.issue).issues.map((issue) => ({
    path: [
      ...prefix,
      ...(issue.path ?? []).map((segment) => {
        const key = typeof segment === "object" && segment !== null ? segment.key : segment
        return typeof key === "number" ? key : String(key)
      })
    ],
    message: issue.message
  }))

const describe = (issues: ReadonlyArray<ApiError.Issue>) =>
  issues.map((issue) => (issue.path.length === 0 ? issue.message : `${issue.path.join(".")}: ${issue.message}`))

/**
 * The `RequestErrors` middleware: schema failures of a request become a
 * `BadRequest` that names every problem.
 *
 * @category layers
 */
export const layer: Layer.Layer<RequestErrors> = HttpApiMiddleware.layerSchemaErrorTransform(RequestErrors, (error) => {
  // A response that fails its own schema is our bug, not the client's.
  if (error.kind === "Body" || error.kind === "ResponseHeaders") return Effect.die(error)
  const slot = error.kind.toLowerCase()
  const issues = issuesOf(error.cause, [slot])
  const notJson = issues.some((issue) => issue.message === "Expected a valid JSON body")
  return Effect.fail(
    new ApiError.BadRequest({
      message: notJson ? "The request body is not valid JSON" : `Invalid ${slot}: ${describe(issues).join("; ")}`,
      issues
    })
  )
})

// The router matches paths case-insensitively, percent-decoded and with repeated slashes ignored, so
// `//V1/%61pprovals/<token>` reaches the approve handler too: redaction looks for the decision segment in
// every spelling. Decoding each `%XX` on its own (as Latin-1) is enough to find the ASCII segment names,
// and never fails on malformed escapes the way `decodeURIComponent` does.
const decisionSegment = /^(?:approvals|inputs)$/
const readable = (path: string) =>
  path.replace(/%([0-9a-f]{2})/gi, (_, hex: string) => String.fromCharCode(Number.parseInt(hex, 16)))

/**
 * A request path fit for logs: the query dropped and whatever follows an
 * `approvals` or `inputs` segment (the token, however the path spells it)
 * replaced by `<token>`.
 *
 * @category redaction
 */
export const redactedPath = (url: string) => {
  const path = url.split(/[?#]/)[0]!
  const segments = readable(path).split("/")
  const decision = segments.findIndex((segment) => decisionSegment.test(segment.toLowerCase()))
  if (decision === -1 || segments.slice(decision + 1).every((segment) => segment === "")) return path
  return [...segments.slice(0, decision + 1), "<token>"].join("/")
}

/**
 * Whether a request URL carries an approval or input token.
 *
 * @category redaction
 */
export const carriesToken = (url: string) => redactedPath(url) !== url.split(/[?#]/)[0]

const json = (error: { readonly message: string }, status: number) => HttpServerResponse.jsonUnsafe(error, { status })

// Reading a body past `MaxBodySize` is a defect by the time it reaches us.
const isBodyTooLarge = (cause: Cause.Cause<unknown>) => /BodyTooLarge|maxBytes exceeded/.test(Cause.pretty(cause))

const isRouteNotFound = (error: unknown) =>
  Predicate.isTagged(error, "HttpServerError") &&
  Predicate.hasProperty(error, "reason") &&
  Predicate.isTagged(error.reason, "RouteNotFound")

/**
 * The global router middleware: body limit, unknown routes, shutdown and
 * unexpected faults, all as JSON.
 *
 * @category layers
 */
export const layerGlobal = (options: { readonly maxBodyBytes: number }) =>
  HttpRouter.middleware(
    Effect.gen(function* () {
      const shutdown = yield* Shutdown
      return (httpEffect) =>
        Effect.gen(function* () {
          const request = yield* HttpServerRequest.HttpServerRequest
          if (yield* shutdown.isDraining) {
            return json(new ApiError.Unavailable({ message: "The server is shutting down; retry shortly" }), 503)
          }
          const tooLarge = () =>
            json(
              new ApiError.PayloadTooLarge({
                message: `The request body is larger than ${options.maxBodyBytes} bytes`,
                limitBytes: options.maxBodyBytes
              }),
              413
            )
          const length = Number(request.headers["content-length"] ?? "0")
          if (Number.isFinite(length) && length > options.maxBodyBytes) return tooLarge()
          const started = Date.now()
          return yield* httpEffect.pipe(
            // A body without content-length is cut off at the same limit while it is read.
            Effect.provideService(HttpIncomingMessage.MaxBodySize, ByteSize.bytes(options.maxBodyBytes)),
            Effect.catchCause((cause) => {
              const error = Cause.findErrorOption(cause)
              if (Option.isSome(error) && isRouteNotFound(error.value)) {
                return Effect.succeed(
                  json(
                    new ApiError.NotFound({
                      message: `No route for ${request.method} ${request.url.split("?")[0]}`,
                      resource: "route"
                    }),
                    404
                  )
                )
              }
              if (isBodyTooLarge(cause)) return Effect.succeed(tooLarge())
              if (Cause.hasInterruptsOnly(cause)) return Effect.failCause(cause)
              return Effect.as(
                Effect.logError("request failed", cause),
                json({ message: "Internal server error" }, 500)
              )
            }),
            // The endpoints' own 415 is plain text.
            Effect.map((response) =>
              response.status === 415
                ? json(
                    new ApiError.UnsupportedMediaType({
                      message: `Send the body as JSON, with Content-Type: application/json (got ${
                        request.headers["content-type"] ?? "none"
                      })`
                    }),
                    415
                  )
                : response
            ),
            // The access log, with the path redacted (see `disableLogger` in `AgentServer`).
            Effect.tap((response) =>
              Effect.logInfo("Sent HTTP response").pipe(
                Effect.annotateLogs({
                  "http.method": request.method,
                  "http.url": redactedPath(request.url),
                  "http.status": response.status,
                  "http.millis": Date.now() - started
                })
              )
            )
          )
        })
    }),
    { global: true }
  )
