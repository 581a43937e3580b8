/**
 * A system in the peers' comparison: started in a scope, it runs a workflow
 * of N sequential trivial steps (each returns 1) to completion, the same
 * workflow as `Bench/Steps` in bench/engine.ts. Peers are installed from npm
 * as devDependencies and only called.
 */
import * as Fs from "node:fs"
import type { Effect, Scope } from "effect"
import { Schema } from "effect"

/** A started peer. */
export interface Started {
  /** Runs one workflow of `steps` sequential steps under the id `id`, and returns the sum of the steps' results. */
  readonly run: (id: string, steps: number) => Effect.Effect<number, unknown>
}

export type Peer = {
  /** A short name, for its database's name. */
  readonly key: string
  /** The name and version the table shows. */
  readonly name: string
  /** Where a step's result is made durable before the next step starts. */
  readonly storage: string
} & (
  | {
      /** It runs on a fresh Postgres database, made for it and dropped after it has stopped. */
      readonly postgres: true
      /** Starts the peer on the database at `url`; everything it started stops when the scope closes. */
      readonly start: (url: string) => Effect.Effect<Started, unknown, Scope.Scope>
    }
  | {
      readonly postgres: false
      readonly start: () => Effect.Effect<Started, unknown, Scope.Scope>
    }
)

/**
 * A documented case of a peer that cannot run on this machine. Only this
 * failure lets the benchmark pass without the peer's numbers.
 */
export class PeerUnavailable extends Schema.TaggedError<PeerUnavailable>()("PeerUnavailable", {
  reason: Schema.String
}) {}

/** The installed version of an npm package (some packages' exports hide their package.json from `require`). */
export const versionOf = (name: string): string =>
  JSON.parse(Fs.readFileSync(new URL(`../../node_modules/${name}/package.json`, import.meta.url), "utf8")).version
