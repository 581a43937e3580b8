/**
 * The command line's connection to a server: the typed client of `AgentApi`
 * at a URL with a bearer token, and the one-line reasons its failures are
 * reported with.
 *
 * @since 0.1.0
 */
import * as Fs from "node:fs"
import * as Path from "node:path"
import { Config, Context, Effect, Layer, Option, Predicate, Redacted } from "effect"
import { FetchHttpClient, HttpClientRequest } from "effect/http"
import { HttpApiClient, HttpApiMiddleware } from "effect/http-api"
import { AgentApi, Authorization } from "../api/AgentApi.ts"

/**
 * The typed client, and where it points.
 *
 * @category services
 */
export class AgentClient extends Context.Service<
  AgentClient,
  { readonly api: HttpApiClient.ForApi<typeof AgentApi>; readonly url: string }
>()("effect-claude-agent/cli/AgentClient") {
  /** @category layers */
  static readonly layer = (options: {
    readonly url: string
    readonly token: Redacted.Redacted<string>
  }): Layer.Layer<AgentClient> =>
    Layer.effect(AgentClient)(
      Effect.map(
        HttpApiClient.make(AgentApi, { baseUrl: options.url }).pipe(
          Effect.provide(
            HttpApiMiddleware.layerClient(Authorization, ({ next, request }) =>
              next(HttpClientRequest.bearerToken(request, Redacted.value(options.token)))
            )
          ),
          Effect.provide(FetchHttpClient.layer)
        ),
        (api) => ({ api, url: options.url })
      )
    )
}

/**
 * A failure the command reports on one line and exits 1 for.
 *
 * @category errors
 */
export class CliFailure extends Error {
  override readonly name = "CliFailure"
}

/**
 * The token: `--token`, else `AGENT_API_TOKEN`, else the file a server
 * started in this directory generated (`$AGENT_DATA_DIR/api-token`).
 *
 * @category configuration
 */
export const resolveToken = (flag: Option.Option<Redacted.Redacted<string>>) =>
  Effect.gen(function* () {
    if (Option.isSome(flag)) return flag.value
    const fromEnv = yield* Config.option(Config.Redacted("AGENT_API_TOKEN"))
    if (Option.isSome(fromEnv) && Redacted.value(fromEnv.value) !== "") return fromEnv.value
    const dataDir = yield* Config.String("AGENT_DATA_DIR").pipe(Config.withDefault("./data"))
    const file = Path.join(dataDir, "api-token")
    if (Fs.existsSync(file)) return Redacted.make(Fs.readFileSync(file, "utf8").trim())
    return yield* Effect.fail(
      new CliFailure(`no API token: pass --token, set AGENT_API_TOKEN, or run where the server keeps ${file}`)
    )
  })

/**
 * Says in one line what went wrong with a call to the server.
 *
 * @category errors
 */
export const describeFailure = (url: string, error: unknown): CliFailure => {
  if (error instanceof CliFailure) return error
  if (Predicate.isTagged(error, "HttpClientError") && Predicate.hasProperty(error, "reason")) {
    const reason = error.reason as { readonly _tag: string; readonly response?: { readonly status: number } }
    if (reason._tag === "TransportError") {
      return new CliFailure(
        `cannot reach the server at ${url} (is it running? start one with: effect-claude-agent serve)`
      )
    }
    if (reason.response !== undefined) {
      return new CliFailure(`the server at ${url} answered ${reason.response.status}`)
    }
  }
  if (Predicate.hasProperty(error, "message") && Predicate.isString(error.message) && error.message !== "") {
    return new CliFailure(error.message)
  }
  return new CliFailure(String(error))
}
