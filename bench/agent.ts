/**
 * The agent path: what our wrapper costs over the raw SDK, and what
 * prewarming saves on time to first token. Every variant runs the real CLI
 * against the scripted model, interleaved in one run so that the machine's
 * noise falls on all of them alike.
 */
import * as Sdk from "@anthropic-ai/claude-agent-sdk"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { Effect, Layer, Stream } from "effect"
import * as AgentMessage from "../src/sdk/AgentMessage.ts"
import { AgentSdk } from "../src/sdk/AgentSdk.ts"
import { PermissionPolicy } from "../src/sdk/PermissionPolicy.ts"
import * as ScriptedModel from "../src/testing/ScriptedModel.ts"
import type { Measurement } from "./Measurement.ts"

const answer = () => ScriptedModel.text("The quick brown fox jumps over the lazy dog.", { chunkSize: 4 })

const timed = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function* () {
    const start = performance.now()
    yield* effect
    return performance.now() - start
  })

/**
 * The memory of this process's descendants (the CLI a query spawns and what it starts), in KiB: their
 * proportional set size from /proc, so that the pages a child forked from the CLI shares with it count once,
 * where RSS would count them twice. Linux only.
 */
const descendantsPss = (): number => {
  const children = new Map<number, Array<number>>()
  for (const entry of Fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue
    try {
      const stat = Fs.readFileSync(`/proc/${entry}/stat`, "utf8")
      // The command name may hold spaces and parentheses: the fields after the last ")" are fixed.
      const parent = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1])
      children.set(parent, [...(children.get(parent) ?? []), Number(entry)])
    } catch {
      // The process ended while we read.
    }
  }
  let total = 0
  const pending = [...(children.get(process.pid) ?? [])]
  while (pending.length > 0) {
    const pid = pending.pop()!
    pending.push(...(children.get(pid) ?? []))
    try {
      const pss = /^Pss:\s+(\d+) kB/m.exec(Fs.readFileSync(`/proc/${pid}/smaps_rollup`, "utf8"))
      total += pss === null ? 0 : Number(pss[1])
    } catch {
      // Ended while we read.
    }
  }
  return total
}

/**
 * The highest memory of the processes a query spawned, sampled every 10 ms while it runs, in MiB.
 * It starts once the CLIs of earlier queries have exited, so that only this query's are counted.
 */
const peakChildMemory = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function* () {
    for (let i = 0; i < 500 && descendantsPss() > 0; i++) yield* Effect.sleep("10 millis")
    let peak = 0
    const timer = setInterval(() => {
      peak = Math.max(peak, descendantsPss())
    }, 10)
    yield* effect.pipe(Effect.ensuring(Effect.sync(() => clearInterval(timer))))
    return peak / 1024
  })

/**
 * The heap this process still holds per query after `count` of them (after a forced GC, before and after), in
 * KiB: what a query leaves behind in the process that ran it. `forget` empties the scripted model's request
 * log, which lives in this process too and is not the query's.
 */
const heapHeldPerQuery = <A, E, R>(effect: Effect.Effect<A, E, R>, count: number, forget: Effect.Effect<void>) =>
  Effect.gen(function* () {
    const gc = (globalThis as { gc?: () => void }).gc
    if (gc === undefined) return yield* Effect.die(new Error("run the benchmark with --expose-gc"))
    yield* forget
    gc()
    const before = process.memoryUsage().heapUsed
    for (let i = 0; i < count; i++) yield* effect
    yield* forget
    gc()
    return (process.memoryUsage().heapUsed - before) / count / 1024
  })

/** Milliseconds from handing over the prompt to the first text delta. */
const firstToken = (handle: { readonly stream: Stream.Stream<AgentMessage.AgentMessage, unknown> }, start: number) =>
  handle.stream.pipe(
    Stream.filter((m) => AgentMessage.textDelta(m) !== undefined),
    Stream.take(1),
    Stream.runDrain,
    Effect.map(() => performance.now() - start)
  )

export const run = (iterations: number, memory: { readonly trials: number; readonly queriesPerTrial: number }) =>
  Effect.gen(function* () {
    const model = yield* ScriptedModel.ScriptedModel
    const sdk = yield* AgentSdk
    const home = Fs.mkdtempSync(Path.join(Os.tmpdir(), "bench-agent-"))
    const env = ScriptedModel.sdkEnv(model.url, { home, maxRetries: 0 })
    yield* model.setScript(ScriptedModel.perSession(() => [answer()]))

    const rawQuery = Effect.promise(async () => {
      const q = Sdk.query({ prompt: "bench", options: { env } })
      for await (const _ of q) {
        /* drain */
      }
    })
    const oursQuery = sdk.run("bench")
    const coldTtft = Effect.scoped(
      Effect.gen(function* () {
        const start = performance.now()
        const handle = yield* sdk.query("bench", { includePartialMessages: true })
        return yield* firstToken(handle, start)
      })
    )
    const warmTtft = Effect.scoped(
      Effect.gen(function* () {
        const spare = yield* sdk.prewarm({ includePartialMessages: true })
        const start = performance.now()
        const handle = yield* spare.query("bench")
        return yield* firstToken(handle, start)
      })
    )

    const samples = {
      raw: [] as Array<number>,
      ours: [] as Array<number>,
      cold: [] as Array<number>,
      warm: [] as Array<number>
    }
    // One warm-up of each, not counted: the first spawn pays for disk caches.
    yield* rawQuery
    yield* oursQuery
    for (let i = 0; i < iterations; i++) {
      samples.raw.push(yield* timed(rawQuery))
      samples.ours.push(yield* timed(oursQuery))
      samples.cold.push(yield* coldTtft)
      samples.warm.push(yield* warmTtft)
    }
    // Memory apart from the timed trials, whose wall time the sampling of /proc would disturb.
    const memorySamples = {
      rawPss: [] as Array<number>,
      oursPss: [] as Array<number>,
      rawHeap: [] as Array<number>,
      oursHeap: [] as Array<number>
    }
    const linux = process.platform === "linux"
    for (let i = 0; i < memory.trials; i++) {
      if (linux) {
        memorySamples.rawPss.push(yield* peakChildMemory(rawQuery))
        memorySamples.oursPss.push(yield* peakChildMemory(oursQuery))
      }
      memorySamples.rawHeap.push(yield* heapHeldPerQuery(rawQuery, memory.queriesPerTrial, model.clearRequests))
      memorySamples.oursHeap.push(yield* heapHeldPerQuery(oursQuery, memory.queriesPerTrial, model.clearRequests))
    }
    Fs.rmSync(home, { recursive: true, force: true })
    const notLinux = { reason: `reads /proc, which ${process.platform} does not have`, expected: true }
    const measurements: Array<Measurement> = [
      { group: "Agent path", name: "raw SDK query(), wall time per query", unit: "ms", samples: samples.raw },
      {
        group: "Agent path",
        name: "AgentSdk.run, wall time per query",
        unit: "ms",
        samples: samples.ours,
        baseline: "raw SDK query(), wall time per query",
        target: { ratio: 1.05, text: "≤ 5 % over the raw SDK" }
      },
      {
        group: "Agent path",
        name: "raw SDK query(), peak memory of the processes it spawned (PSS)",
        unit: "MiB",
        samples: memorySamples.rawPss,
        ...(linux ? {} : { couldNotRun: notLinux })
      },
      {
        group: "Agent path",
        name: "AgentSdk.run, peak memory of the processes it spawned (PSS)",
        unit: "MiB",
        samples: memorySamples.oursPss,
        baseline: "raw SDK query(), peak memory of the processes it spawned (PSS)",
        target: { ratio: 1.05, text: "≤ 5 % over the raw SDK" },
        ...(linux ? {} : { couldNotRun: notLinux })
      },
      {
        group: "Agent path",
        name: `raw SDK query(), heap still held per query (${memory.queriesPerTrial} queries, after GC)`,
        unit: "KiB",
        samples: memorySamples.rawHeap
      },
      {
        group: "Agent path",
        name: `AgentSdk.run, heap still held per query (${memory.queriesPerTrial} queries, after GC)`,
        unit: "KiB",
        samples: memorySamples.oursHeap
      },
      { group: "Agent path", name: "time to first token, cold query", unit: "ms", samples: samples.cold },
      {
        group: "Agent path",
        name: "time to first token, prewarmed query",
        unit: "ms",
        samples: samples.warm,
        baseline: "time to first token, cold query"
      }
    ]
    return measurements
  }).pipe(
    Effect.provide(
      ScriptedModel.layerAgentSdk({ maxRetries: 0 }).pipe(
        Layer.provideMerge(ScriptedModel.ScriptedModel.layer()),
        Layer.provide(PermissionPolicy.layerDenyAll)
      )
    )
  )
