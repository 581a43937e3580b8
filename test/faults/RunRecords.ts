/**
 * What the campaign reads back from a run's database: its output log, its
 * requests and decisions, its entry in the run registry. Read with a
 * separate client (read-only on SQLite) while the runners write.
 */
import { Effect, Option } from "effect"
import { SqlClient } from "effect/sql/SqlClient"

export interface EventRecord {
  readonly sequence: number
  readonly step: string
  readonly attempt: number
  readonly index: number
  readonly kind: string
  readonly payload: any
  readonly timestamp: number
}

export interface WaitRecord {
  readonly step: string
  readonly state: string
  readonly response: any
  readonly delivered: boolean
}

export interface RunRecord {
  readonly runId: string
  readonly events: ReadonlyArray<EventRecord>
  readonly outputEnded: boolean
  readonly waits: ReadonlyArray<WaitRecord>
  readonly registry: Option.Option<{ readonly status: string }>
}

const tableExists = (sql: SqlClient, table: string) =>
  sql
    .onDialectOrElse({
      pg: () => sql`SELECT 1 AS present FROM information_schema.tables WHERE table_name = ${table}`,
      orElse: () => sql`SELECT 1 AS present FROM sqlite_master WHERE type = 'table' AND name = ${table}`
    })
    .pipe(Effect.map((rows) => rows.length > 0))

export const readRun = (runId: string) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient
    if (!(yield* tableExists(sql, "agent_runs"))) {
      return { runId, events: [], outputEnded: false, waits: [], registry: Option.none() } satisfies RunRecord
    }
    const events = yield* sql<{
      sequence: number | string
      step: string
      attempt: number | string
      idx: number | string
      kind: string
      payload: string
      created_at: number | string
    }>`SELECT sequence, step, attempt, idx, kind, payload, created_at FROM agent_output_events
        WHERE run_id = ${runId} ORDER BY sequence`
    const output = yield* sql<{ ended_at: unknown }>`SELECT ended_at FROM agent_output_runs WHERE run_id = ${runId}`
    const waits = yield* sql<{ step: string; state: string; response: string | null; delivered_at: unknown }>`
      SELECT step, state, response, delivered_at FROM agent_waits WHERE run_id = ${runId}`
    const registry = yield* sql<{ status: string }>`SELECT status FROM agent_runs WHERE run_id = ${runId}`
    return {
      runId,
      events: events.map((row) => ({
        sequence: Number(row.sequence),
        step: row.step,
        attempt: Number(row.attempt),
        index: Number(row.idx),
        kind: row.kind,
        payload: JSON.parse(row.payload),
        timestamp: Number(row.created_at)
      })),
      outputEnded: output[0] !== undefined && output[0].ended_at !== null,
      waits: waits.map((row) => ({
        step: row.step,
        state: row.state,
        response: row.response === null ? undefined : JSON.parse(row.response),
        delivered: row.delivered_at !== null
      })),
      registry: Option.fromNullishOr(registry[0])
    } satisfies RunRecord
  })

/** The last event of each run: where it was when a runner was killed. */
export const lastEvents = (runIds: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient
    const last = new Map<string, { readonly step: string; readonly kind: string; readonly payload: any }>()
    if (runIds.length === 0 || !(yield* tableExists(sql, "agent_output_events"))) return last
    const rows = yield* sql<{ run_id: string; step: string; kind: string; payload: string }>`
      SELECT e.run_id, e.step, e.kind, e.payload FROM agent_output_events e
      JOIN (SELECT run_id, MAX(sequence) AS last FROM agent_output_events WHERE run_id IN ${sql.in(runIds)}
        GROUP BY run_id) m ON m.run_id = e.run_id AND m.last = e.sequence`
    for (const row of rows) last.set(row.run_id, { step: row.step, kind: row.kind, payload: JSON.parse(row.payload) })
    return last
  })

/**
 * Where a run is, from its last event: what a kill interrupted.
 */
export const phaseOf = (
  last: { readonly step: string; readonly kind: string; readonly payload: any } | undefined
): string => {
  if (last === undefined) return "starting"
  const state = last.kind === "status" ? String(last.payload?.state ?? "") : ""
  switch (last.kind) {
    case "text_delta":
    case "assistant_message":
      return "streaming"
    case "error":
      return "retry backoff"
    case "approval_requested":
      return "waiting for approval"
    case "decided":
      return "resuming after a decision"
    case "result":
      return "between steps"
    case "status":
      if (state === "attempt_started") return "agent step starting"
      if (state === "sleeping") return "in-memory sleep"
      if (state === "step_started") return "effect step"
      // The campaign's durable clock follows its effect step; a gate's nap follows its decision.
      if (state === "step_completed") return "durable sleep"
      return `status ${state}`
    default:
      return last.kind
  }
}
