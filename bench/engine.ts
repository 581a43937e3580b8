/**
 * The engines: cost of a durable step next to the physical limit (one raw
 * commit on the same database), resume latency after a deferred is
 * completed, and memory per parked run.
 */
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { Effect, Fiber, Layer, Option, Redacted, Schema } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import * as Activity from "effect/workflow/Activity"
import * as DurableDeferred from "effect/workflow/DurableDeferred"
import * as Workflow from "effect/workflow/Workflow"
import type { WorkflowEngine } from "effect/workflow/WorkflowEngine"
import * as AgentEngine from "../src/engine/AgentEngine.ts"
import { createDatabase, dropDatabase } from "../test/engine/TestDatabase.ts"
import { type Measurement, percentile } from "./Measurement.ts"

/** N sequential trivial activities: what a durable step costs. The peers run the same workflow (bench/peers/). */
export const Steps = Workflow.make("Bench/Steps", {
  payload: { id: Schema.String, steps: Schema.Number },
  success: Schema.Number,
  idempotencyKey: ({ id }) => id
})

const Go = DurableDeferred.make("go")

const Parked = Workflow.make("Bench/Parked", {
  payload: { id: Schema.String },
  idempotencyKey: ({ id }) => id
})

export const workflows = Layer.mergeAll(
  Steps.toLayer(
    Effect.fnUntraced(function* ({ steps }) {
      let total = 0
      for (let i = 0; i < steps; i++) {
        total += yield* Activity.make({ name: `step-${i}`, success: Schema.Number, execute: Effect.succeed(1) })
      }
      return total
    })
  ),
  Parked.toLayer(() => DurableDeferred.await(Go))
)

let ids = 0
export const nextId = (label: string) => `${label}-${process.pid}-${++ids}`

const waitSuspended = (executionId: string) =>
  Effect.gen(function* () {
    for (;;) {
      const result = yield* Parked.poll(executionId)
      if (Option.isSome(result) && result.value._tag === "Suspended") return
      yield* Effect.sleep("2 millis")
    }
  })

interface EngineCase {
  readonly name: string
  readonly layer: Layer.Layer<WorkflowEngine, unknown>
  readonly raw: boolean
}

const measureEngine = (
  engine: EngineCase,
  options: { readonly trials: number; readonly steps: number; readonly resumes: number }
) =>
  Effect.gen(function* () {
    const perStep: Array<number> = []
    const perCommit: Array<number> = []
    const sql = engine.raw ? Option.getOrUndefined(yield* Effect.serviceOption(SqlClient)) : undefined
    if (sql !== undefined) yield* sql`CREATE TABLE IF NOT EXISTS bench_raw (v TEXT)`
    // Warm-up: the first run pays for table creation and caches.
    yield* Steps.execute({ id: nextId("warm"), steps: 5 })
    for (let t = 0; t < options.trials; t++) {
      if (sql !== undefined) {
        const start = performance.now()
        for (let i = 0; i < options.steps; i++) yield* sql`INSERT INTO bench_raw (v) VALUES (${"x"})`
        perCommit.push((performance.now() - start) / options.steps)
      }
      const start = performance.now()
      yield* Steps.execute({ id: nextId("steps"), steps: options.steps })
      perStep.push((performance.now() - start) / options.steps)
    }

    // What limits a durable step: count the database's own commits over one run.
    const commitsPerStep: Array<number> = []
    if (sql !== undefined && engine.name.startsWith("postgres")) {
      const commits = sql<{
        readonly n: string
      }>`SELECT xact_commit::text AS n FROM pg_stat_database WHERE datname = current_database()`
      // Postgres 15+ backends flush their counters at most once a second while busy, and an idle
      // backend's last ones up to 10 s later (PGSTAT_IDLE_INTERVAL): wait that out on both sides.
      const settle = Effect.andThen(Effect.sleep("11 seconds"), commits)
      const before = Number((yield* settle)[0]!.n)
      yield* Steps.execute({ id: nextId("count"), steps: options.steps })
      const after = Number((yield* settle)[0]!.n)
      // Less the `before` query's own commit.
      commitsPerStep.push((after - before - 1) / options.steps)
    }

    const resume: Array<number> = []
    for (let t = 0; t < options.resumes; t++) {
      const id = nextId("resume")
      const executionId = yield* Parked.execute({ id }, { discard: true })
      yield* waitSuspended(executionId)
      const joined = yield* Effect.forkChild(Parked.execute({ id }))
      yield* Effect.yieldNow
      const start = performance.now()
      yield* DurableDeferred.succeed(Go, {
        token: DurableDeferred.tokenFromExecutionId(Go, { workflow: Parked, executionId }),
        value: undefined
      })
      yield* Fiber.join(joined)
      resume.push(performance.now() - start)
    }

    const group = `Engine: ${engine.name}`
    const out: Array<Measurement> = []
    if (perCommit.length > 0) {
      out.push({ group, name: `${engine.name}: one raw commit (INSERT, autocommit)`, unit: "ms", samples: perCommit })
    }
    out.push({
      group,
      name: `${engine.name}: one durable step (${options.steps} sequential activities)`,
      unit: "ms",
      samples: perStep,
      ...(perCommit.length > 0
        ? {
            baseline: `${engine.name}: one raw commit (INSERT, autocommit)`,
            target: { ratio: 1.5, text: "≤ 1.5× a raw commit" }
          }
        : {})
    })
    if (commitsPerStep.length > 0) {
      out.push({
        group,
        name: `${engine.name}: transactions committed per durable step (pg_stat_database)`,
        unit: "tx",
        samples: commitsPerStep
      })
    }
    out.push({
      group,
      name: `${engine.name}: resume after a deferred is completed, all ${resume.length} trials`,
      unit: "ms",
      samples: resume
    })
    out.push({
      group,
      name: `${engine.name}: resume p50`,
      unit: "ms",
      samples: [percentile(resume, 50)],
      target: { below: 20, text: "p50 < 20 ms" }
    })
    out.push({ group, name: `${engine.name}: resume p99`, unit: "ms", samples: [percentile(resume, 99)] })
    return out
  }).pipe(Effect.provide(workflows.pipe(Layer.provideMerge(engine.layer))))

/** Heap growth per run parked on a deferred, after a full GC. */
const parkedMemory = (engine: EngineCase, runs: number, afterEviction: boolean) =>
  Effect.gen(function* () {
    const gc = (globalThis as { gc?: () => void }).gc
    if (gc === undefined) return yield* Effect.die(new Error("run the benchmark with --expose-gc"))
    yield* Parked.execute({ id: nextId("warm-park") }, { discard: true })
    gc()
    const before = process.memoryUsage().heapUsed
    const parked = Array.from({ length: runs }, () => nextId("park"))
    yield* Effect.forEach(parked, (id) => Parked.execute({ id }, { discard: true }), { concurrency: 32, discard: true })
    // Let the runs reach their await and the engine settle.
    yield* Effect.forEach(parked.slice(-32), (id) => Effect.flatMap(Parked.executionId({ id }), waitSuspended), {
      discard: true
    })
    yield* Effect.sleep("500 millis")
    gc()
    const resident = (process.memoryUsage().heapUsed - before) / runs
    const out: Array<Measurement> = [
      {
        group: `Engine: ${engine.name}`,
        name: `${engine.name}: heap per parked run, just parked (${runs} runs)`,
        unit: "bytes",
        samples: [resident],
        target: { below: 5 * 1024, text: "≤ 5 KB per parked run" }
      }
    ]
    // Only effect/cluster evicts idle runs; the memory and journal engines keep theirs.
    if (afterEviction && (engine.name === "sqlite" || engine.name === "postgres")) {
      // Idle workflow entities leave memory after entityMaxIdleTime (1 min); a run parked for days lives only in the database.
      yield* Effect.sleep("70 seconds")
      gc()
      out.push({
        group: `Engine: ${engine.name}`,
        name: `${engine.name}: heap per parked run, after idle eviction (${runs} runs, 70 s later)`,
        unit: "bytes",
        samples: [(process.memoryUsage().heapUsed - before) / runs],
        target: { below: 5 * 1024, text: "≤ 5 KB per parked run" }
      })
    }
    return out
  }).pipe(Effect.provide(workflows.pipe(Layer.provideMerge(engine.layer))))

/** Trials, steps per workflow and resumes; the peers use the same number of steps. */
export const optionsFor = (quick: boolean) =>
  quick ? { trials: 3, steps: 10, resumes: 20 } : { trials: 10, steps: 50, resumes: 200 }

export const run = (quick: boolean) =>
  Effect.gen(function* () {
    const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "bench-engine-"))
    const pgUrls = [
      yield* Effect.promise(() => createDatabase("bench")),
      yield* Effect.promise(() => createDatabase("bench_parked"))
    ]
    const engines = (suffix: string, pgUrl: string): ReadonlyArray<EngineCase> => [
      { name: "memory", layer: AgentEngine.layerMemory, raw: false },
      { name: "sqlite", layer: AgentEngine.layerSqlite({ filename: Path.join(dir, `bench-${suffix}.db`) }), raw: true },
      { name: "postgres", layer: AgentEngine.layerPostgres({ url: Redacted.make(pgUrl) }), raw: true },
      // Our single-process engine (src/engine/JournalEngine.ts), on the same databases.
      {
        name: "sqlite journal",
        layer: AgentEngine.layerJournalSqlite({ filename: Path.join(dir, `bench-journal-${suffix}.db`) }),
        raw: true
      },
      { name: "postgres journal", layer: AgentEngine.layerJournalPostgres({ url: Redacted.make(pgUrl) }), raw: true }
    ]
    const options = optionsFor(quick)
    const measurements: Array<Measurement> = []
    for (const engine of engines("steps", pgUrls[0]!)) {
      yield* Effect.logInfo(`engine ${engine.name}: steps and resumes`)
      measurements.push(...(yield* measureEngine(engine, options)))
    }
    const parkedRuns = quick ? 200 : 10_000
    for (const engine of engines("parked", pgUrls[1]!)) {
      yield* Effect.logInfo(`engine ${engine.name}: ${parkedRuns} parked runs`)
      measurements.push(...(yield* parkedMemory(engine, parkedRuns, !quick)))
    }
    yield* Effect.promise(() => Promise.all(pgUrls.map(dropDatabase)))
    return measurements
  })
