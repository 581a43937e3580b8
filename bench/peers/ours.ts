/**
 * Ours: `Bench/Steps` on `AgentEngine.layerPostgres`, effect/cluster's
 * `ClusterWorkflowEngine` on Postgres, as bench/engine.ts measures it.
 */
import { Context, Effect, Layer, Redacted } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import * as AgentEngine from "../../src/engine/AgentEngine.ts"
import { Steps, workflows } from "../engine.ts"
import type { Peer } from "./Peer.ts"

export const peer = {
  key: "ours",
  name: "effect-claude-agent (ours: effect/cluster ClusterWorkflowEngine)",
  storage: "Postgres: the cluster's message and reply tables",
  postgres: true,
  /** Also gives one autocommitted INSERT through the engine's own SQL client: the physical limit of a step. */
  start: (url: string) =>
    Effect.gen(function* () {
      const context = yield* Layer.build(
        workflows.pipe(Layer.provideMerge(AgentEngine.layerPostgres({ url: Redacted.make(url) })))
      )
      const sql = Context.get(context, SqlClient)
      yield* sql`CREATE TABLE bench_raw (v TEXT)`
      return {
        run: (id: string, steps: number) => Steps.execute({ id, steps }).pipe(Effect.provideContext(context)),
        rawCommit: Effect.asVoid(sql`INSERT INTO bench_raw (v) VALUES (${"x"})`)
      }
    })
} satisfies Peer
