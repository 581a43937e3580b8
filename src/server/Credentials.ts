/**
 * The server's two secrets: the API token clients send as
 * `Authorization: Bearer …`, and the secret approval tokens are signed with.
 *
 * Each comes from its variable (`AGENT_API_TOKEN`, `AGENT_APPROVAL_SECRET`)
 * or, when that is unset, from a file under the data directory that the first
 * start creates with owner-only permissions, so a restarted server accepts the
 * same clients and the same approval tokens. The values are `Redacted` from
 * the moment they are read; only where they live is ever printed.
 *
 * @since 0.1.0
 */
import { randomBytes } from "node:crypto"
import * as Fs from "node:fs"
import * as Path from "node:path"
import { Config, Context, Effect, Layer, Option, Redacted } from "effect"

/**
 * Where a secret came from, for the start-up message.
 *
 * @category models
 */
export type Source =
  | { readonly _tag: "Env"; readonly variable: string }
  | { readonly _tag: "File"; readonly path: string; readonly created: boolean }

/**
 * The token every `/v1` request must carry.
 *
 * @category services
 */
export class ApiToken extends Context.Service<
  ApiToken,
  { readonly token: Redacted.Redacted<string>; readonly source: Source }
>()("effect-claude-agent/server/ApiToken") {
  /** @category layers */
  static readonly layer = (token: Redacted.Redacted<string>): Layer.Layer<ApiToken> =>
    Layer.succeed(ApiToken)({ token, source: { _tag: "Env", variable: "AGENT_API_TOKEN" } })
}

/**
 * Reads a secret from `variable`, or from `<dataDir>/<file>`, creating the
 * file with a fresh random value (mode 0600) if it does not exist.
 *
 * @category constructors
 */
export const load = (options: { readonly variable: string; readonly dataDir: string; readonly file: string }) =>
  Effect.gen(function* () {
    const fromEnv = yield* Config.option(Config.Redacted(options.variable))
    if (Option.isSome(fromEnv) && Redacted.value(fromEnv.value) !== "") {
      return { value: fromEnv.value, source: { _tag: "Env", variable: options.variable } as Source }
    }
    const path = Path.resolve(options.dataDir, options.file)
    return yield* Effect.sync(() => {
      Fs.mkdirSync(Path.dirname(path), { recursive: true, mode: 0o700 })
      let created = false
      try {
        // `wx`: of two servers starting at once, one writes and both read the same value.
        Fs.writeFileSync(path, randomBytes(32).toString("base64url") + "\n", { flag: "wx", mode: 0o600 })
        created = true
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error
      }
      // A copied file may have lost its mode; a secret must not be readable by others.
      if ((Fs.statSync(path).mode & 0o077) !== 0) Fs.chmodSync(path, 0o600)
      const value = Fs.readFileSync(path, "utf8").trim()
      return { value: Redacted.make(value), source: { _tag: "File", path, created } as Source }
    })
  })

/**
 * `AGENT_API_TOKEN`, or `<dataDir>/api-token`.
 *
 * @category layers
 */
export const layerApiToken = (dataDir: string): Layer.Layer<ApiToken, Config.ConfigError> =>
  Layer.effect(ApiToken)(
    Effect.map(load({ variable: "AGENT_API_TOKEN", dataDir, file: "api-token" }), ({ value, source }) => ({
      token: value,
      source
    }))
  )

/**
 * Describes a source for people: where to find the secret.
 *
 * @category formatting
 */
export const describe = (source: Source): string =>
  source._tag === "Env"
    ? `from ${source.variable}`
    : `${source.created ? "generated and stored in" : "stored in"} ${source.path} (owner-only)`
