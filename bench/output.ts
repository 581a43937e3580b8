/**
 * The output channel: batched append throughput, and publish → subscriber
 * latency on one node and across two processes on Postgres.
 */
import { spawn } from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { PgClient } from "@effect/sql-pg"
import { Effect, Fiber, Layer, Redacted, Stream } from "effect"
import * as SqliteClient from "../src/engine/SqliteClient.ts"
import { AgentOutput } from "../src/output/AgentOutput.ts"
import type { NewEvent } from "../src/output/OutputEvent.ts"
import { createDatabase, dropDatabase } from "../test/engine/TestDatabase.ts"
import { type Measurement, percentile } from "./Measurement.ts"

const batchOf = (from: number, size: number): ReadonlyArray<NewEvent> =>
  Array.from({ length: size }, (_, i) => ({
    step: "bench",
    attempt: 1,
    index: from + i,
    kind: "text_delta" as const,
    payload: { text: "a token or two" }
  }))

const throughput = (label: string, trials: number, batches: number) =>
  Effect.gen(function* () {
    const output = yield* AgentOutput
    const samples: Array<number> = []
    for (let t = 0; t < trials; t++) {
      const runId = `throughput-${t}`
      const start = performance.now()
      for (let b = 0; b < batches; b++) yield* output.publish(runId, batchOf(b * 1000, 1000))
      samples.push((batches * 1000) / ((performance.now() - start) / 1000))
    }
    return {
      group: "Output channel",
      name: `${label}: append throughput, batches of 1000`,
      unit: "events/s",
      samples,
      target: { above: 50_000, text: "≥ 50,000 events/s" }
    } satisfies Measurement
  })

const latencyOneNode = (label: string, trials: number) =>
  Effect.gen(function* () {
    const output = yield* AgentOutput
    const runId = "latency-local"
    const received: Array<number> = []
    const subscriber = yield* Effect.forkChild(
      output.subscribe(runId).pipe(Stream.runForEach(() => Effect.sync(() => received.push(performance.now()))))
    )
    yield* Effect.sleep("100 millis")
    const sent: Array<number> = []
    for (let i = 0; i < trials; i++) {
      sent.push(performance.now())
      yield* output.publish(runId, batchOf(i, 1))
      yield* Effect.sleep("2 millis")
    }
    yield* output.end(runId)
    yield* Fiber.join(subscriber)
    const latencies = sent.map((at, i) => received[i]! - at)
    return [
      {
        group: "Output channel",
        name: `${label}: publish → subscriber, p50`,
        unit: "ms",
        samples: [percentile(latencies, 50)]
      },
      {
        group: "Output channel",
        name: `${label}: publish → subscriber, p99`,
        unit: "ms",
        samples: [percentile(latencies, 99)],
        target: { below: 10, text: "p99 < 10 ms on one node" }
      }
    ] satisfies ReadonlyArray<Measurement>
  })

const latencyAcrossProcesses = (url: string, trials: number) =>
  Effect.gen(function* () {
    const output = yield* AgentOutput
    const runId = "latency-remote"
    const latencies: Array<number> = []
    const subscriber = yield* Effect.forkChild(
      output
        .subscribe(runId)
        .pipe(
          Stream.runForEach((event) =>
            Effect.sync(() => latencies.push(Date.now() - (event.payload as { readonly sentAt: number }).sentAt))
          )
        )
    )
    const publisher = spawn(
      process.execPath,
      [
        Path.join(import.meta.dirname, "..", "test", "output", "fixtures", "LatencyPublisher.ts"),
        url,
        runId,
        String(trials),
        "5"
      ],
      { stdio: ["ignore", "inherit", "inherit"] }
    )
    yield* Fiber.join(subscriber)
    publisher.kill()
    if (latencies.length !== trials)
      return yield* Effect.die(new Error(`received ${latencies.length} of ${trials} events`))
    return [
      {
        group: "Output channel",
        name: "postgres, another process: publish → subscriber, p50 (wall clock, 1 ms resolution)",
        unit: "ms",
        samples: [percentile(latencies, 50)]
      },
      {
        group: "Output channel",
        name: "postgres, another process: publish → subscriber, p99 (wall clock, 1 ms resolution)",
        unit: "ms",
        samples: [percentile(latencies, 99)]
      }
    ] satisfies ReadonlyArray<Measurement>
  })

export const run = (quick: boolean) =>
  Effect.gen(function* () {
    const url = yield* Effect.promise(() => createDatabase("bench_output"))
    const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "bench-output-"))
    const trials = quick ? 2 : 5
    const batches = quick ? 5 : 50
    const latencyTrials = quick ? 50 : 500
    const sqlite = AgentOutput.layer().pipe(
      Layer.provide(SqliteClient.layer({ filename: Path.join(dir, "output.db") }))
    )
    const postgres = AgentOutput.layer().pipe(Layer.provide(PgClient.layer({ url: Redacted.make(url) })))
    const out: Array<Measurement> = []
    out.push(yield* throughput("sqlite", trials, batches).pipe(Effect.provide(sqlite)))
    out.push(yield* throughput("postgres", trials, batches).pipe(Effect.provide(postgres)))
    out.push(...(yield* latencyOneNode("sqlite, one node", latencyTrials).pipe(Effect.provide(sqlite))))
    out.push(...(yield* latencyOneNode("postgres, one node", latencyTrials).pipe(Effect.provide(postgres))))
    out.push(...(yield* latencyAcrossProcesses(url, quick ? 50 : 300).pipe(Effect.provide(postgres))))
    yield* Effect.promise(() => dropDatabase(url))
    return out
  })
