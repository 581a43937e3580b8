/**
 * Ours: `Bench/Steps` on `AgentEngine.layerPostgres`, effect/cluster's
 * `ClusterWorkflowEngine` on Postgres, as bench/engine.ts measures it, and
 * on our `JournalEngine` on the same Postgres.
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

/** Ours on `AgentEngine.layerJournalPostgres`: our single-process engine, one write per step. */
export const journalPeer = {
  key: "ours_journal",
  name: "effect-claude-agent (ours: JournalEngine)",
  storage: "Postgres: one row of journal_activities",
  postgres: true,
  start: (url: string) =>
    Effect.map(
      Layer.build(workflows.pipe(Layer.provideMerge(AgentEngine.layerJournalPostgres({ url: Redacted.make(url) })))),
      (context) => ({
        run: (id: string, steps: number) => Steps.execute({ id, steps }).pipe(Effect.provideContext(context))
      })
    )
} satisfies Peer
