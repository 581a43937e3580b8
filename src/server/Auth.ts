/**
 * Bearer-token authentication for the API and the RPC endpoint.
 *
 * The token is compared in constant time (as digests, so lengths never leak),
 * and a refusal says only whether a token was missing or wrong.
 *
 * @since 0.1.0
 */
import { createHash, timingSafeEqual } from "node:crypto"
import { Effect, Layer, Redacted } from "effect"
import { HttpServerRequest, HttpServerResponse } from "effect/http"
import { Authorization } from "../api/AgentApi.ts"
import * as ApiError from "../api/ApiError.ts"
import { ApiToken } from "./Credentials.ts"

const digest = (value: string) => createHash("sha256").update(value).digest()

/**
 * Checks a presented token; the refusal names the problem.
 *
 * @category checking
 */
export const check = (
  expected: Redacted.Redacted<string>,
  presented: string | undefined
): Effect.Effect<void, ApiError.Unauthorized> =>
  presented === undefined || presented === ""
    ? Effect.fail(
        new ApiError.Unauthorized({ message: "Missing bearer token: send Authorization: Bearer <AGENT_API_TOKEN>" })
      )
    : timingSafeEqual(digest(presented), digest(Redacted.value(expected)))
      ? Effect.void
      : Effect.fail(new ApiError.Unauthorized({ message: "The bearer token is not this server's API token" }))

/**
 * The `Authorization` middleware of the API.
 *
 * @category layers
 */
export const layer: Layer.Layer<Authorization, never, ApiToken> = Layer.effect(Authorization)(
  Effect.map(ApiToken, ({ token }) =>
    Authorization.of({
      bearer: (httpEffect, { credential }) => Effect.andThen(check(token, Redacted.value(credential)), httpEffect)
    })
  )
)

const bearer = (authorization: string | undefined) => {
  const match = /^bearer\s+(.+)$/i.exec(authorization?.trim() ?? "")
  return match?.[1]
}

/**
 * Wraps a raw HTTP handler (the RPC endpoint) in the same check.
 *
 * @category middleware
 */
export const guard = <E, R>(
  token: Redacted.Redacted<string>,
  handler: Effect.Effect<HttpServerResponse.HttpServerResponse, E, R>
) =>
  Effect.flatMap(HttpServerRequest.HttpServerRequest, (request) =>
    check(token, bearer(request.headers.authorization)).pipe(
      Effect.matchEffect({
        onFailure: (error) => Effect.succeed(HttpServerResponse.jsonUnsafe(error, { status: 401 })),
        onSuccess: () => handler
      })
    )
  )
