import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { spawn } from "node:child_process"
import * as Path from "node:path"
import { PgClient } from "@effect/sql-pg"
import { Duration, Effect, Fiber, Layer, Redacted, Stream } from "effect"
import { AgentOutput } from "../../src/output/AgentOutput.ts"
import type { NewEvent } from "../../src/output/OutputEvent.ts"
import { createDatabase, dropDatabase } from "../engine/TestDatabase.ts"

const events = (step: string, attempt: number, from: number, count: number): ReadonlyArray<NewEvent> =>
  Array.from({ length: count }, (_, i) => ({
    step,
    attempt,
    index: from + i,
    kind: "text_delta" as const,
    payload: { text: `${step}#${attempt}:${from + i}` }
  }))

const sequences = (list: Iterable<{ readonly sequence: number }>) => Array.from(list, (e) => e.sequence)
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i)

/** A small seeded PRNG: the randomized tests replay the same interleavings. */
const prng = (seed: number) => () => {
  seed = (seed * 1103515245 + 12345) & 0x7fffffff
  return seed / 0x7fffffff
}

// Signals only: a subscriber that relied on the safety poll would hang for an hour.
const signalsOnly = AgentOutput.layerMemory({ safetyPollInterval: Duration.hours(1) })

describe("AgentOutput", () => {
  it.effect("numbers events per run without gaps and replays from any offset", () =>
    Effect.gen(function* () {
      const output = yield* AgentOutput
      yield* output.publish("run-a", events("plan", 1, 0, 3))
      yield* output.publish("run-b", events("plan", 1, 0, 2))
      yield* output.publish("run-a", events("act", 1, 0, 4))
      assert.deepStrictEqual(sequences(yield* output.read("run-a")), range(1, 7))
      assert.deepStrictEqual(sequences(yield* output.read("run-b")), range(1, 2))
      const fromFour = yield* output.read("run-a", { from: 4 })
      assert.deepStrictEqual(sequences(fromFour), range(4, 7))
      assert.deepStrictEqual(fromFour[0]!.payload, { text: "act#1:0" })
      yield* output.end("run-a")
      assert.deepStrictEqual(sequences(yield* Stream.runCollect(output.subscribe("run-a", { from: 3 }))), range(3, 7))
    }).pipe(Effect.provide(AgentOutput.layerMemory()))
  )

  it.effect("stores a retried append once, leaving no gap", () =>
    Effect.gen(function* () {
      const output = yield* AgentOutput
      const first = yield* output.publish("run", events("plan", 1, 0, 3))
      const again = yield* output.publish("run", events("plan", 1, 0, 3))
      const overlapping = yield* output.publish("run", events("plan", 1, 2, 3))
      assert.strictEqual(first.length, 3)
      assert.strictEqual(again.length, 0)
      assert.deepStrictEqual(
        overlapping.map((e) => e.index),
        [3, 4]
      )
      assert.deepStrictEqual(sequences(yield* output.read("run")), range(1, 5))
    }).pipe(Effect.provide(AgentOutput.layerMemory()))
  )

  it.effect("keeps a retried attempt's events apart from the earlier attempt's", () =>
    Effect.gen(function* () {
      const output = yield* AgentOutput
      yield* output.publish("run", events("act", 1, 0, 2))
      yield* output.publish("run", events("act", 2, 0, 2))
      const stored = yield* output.read("run")
      assert.deepStrictEqual(
        stored.map((e) => [e.attempt, e.index]),
        [
          [1, 0],
          [1, 1],
          [2, 0],
          [2, 1]
        ]
      )
    }).pipe(Effect.provide(AgentOutput.layerMemory()))
  )

  it.live("follows a concurrent producer live and ends with the run", () =>
    Effect.gen(function* () {
      const output = yield* AgentOutput
      const subscriber = yield* Effect.forkChild(Stream.runCollect(output.subscribe("live")))
      for (let i = 0; i < 50; i++) {
        yield* output.publish("live", events("step", 1, i * 2, 2))
        if (i % 7 === 0) yield* Effect.sleep("1 millis")
      }
      yield* output.end("live")
      assert.deepStrictEqual(sequences(yield* Fiber.join(subscriber)), range(1, 100))
    }).pipe(Effect.provide(signalsOnly))
  )

  it.live("has no gap and no duplicate at the seam between replay and live, whatever the interleaving", () =>
    Effect.gen(function* () {
      const output = yield* AgentOutput
      const random = prng(20261125)
      for (let trial = 0; trial < 40; trial++) {
        const runId = `seam-${trial}`
        let produced = 0
        const batch = () => {
          const size = 1 + Math.floor(random() * 5)
          const list = events("s", 1, produced, size)
          produced += size
          return list
        }
        const before = Math.floor(random() * 4)
        for (let i = 0; i < before; i++) yield* output.publish(runId, batch())
        const from = 1 + Math.floor(random() * (produced + 3))
        const pauses = Array.from({ length: 8 }, () => Math.floor(random() * 3))
        const subscriber = yield* Effect.forkChild(Stream.runCollect(output.subscribe(runId, { from })))
        for (const pause of pauses) {
          if (pause === 1) yield* Effect.yieldNow
          if (pause === 2) yield* Effect.sleep("1 millis")
          yield* output.publish(runId, batch())
        }
        yield* output.end(runId)
        const received = sequences(yield* Fiber.join(subscriber))
        assert.deepStrictEqual(received, range(from, produced), `trial ${trial}: from ${from} of ${produced}`)
      }
    }).pipe(Effect.provide(signalsOnly))
  )

  it.live("resumes exactly after the last offset a disconnected consumer saw", () =>
    Effect.gen(function* () {
      const output = yield* AgentOutput
      yield* output.publish("resume", events("s", 1, 0, 12))
      const firstVisit = yield* Stream.runCollect(Stream.take(output.subscribe("resume"), 5))
      const lastSeen = Array.from(firstVisit).at(-1)!.sequence
      yield* output.publish("resume", events("s", 1, 12, 3))
      yield* output.end("resume")
      const secondVisit = yield* Stream.runCollect(output.subscribe("resume", { from: lastSeen + 1 }))
      assert.deepStrictEqual([...sequences(firstVisit), ...sequences(secondVisit)], range(1, 15))
    }).pipe(Effect.provide(signalsOnly))
  )

  it.effect("refuses to publish after the end, and changes nothing", () =>
    Effect.gen(function* () {
      const output = yield* AgentOutput
      yield* output.publish("closed", events("s", 1, 0, 1))
      yield* output.end("closed")
      const error = yield* Effect.flip(output.publish("closed", events("s", 1, 1, 1)))
      assert.strictEqual(error._tag, "OutputClosed")
      assert.deepStrictEqual(sequences(yield* output.read("closed")), [1])
    }).pipe(Effect.provide(AgentOutput.layerMemory()))
  )

  it.effect("moves a large payload to the blob table and keeps a reference", () =>
    Effect.gen(function* () {
      const output = yield* AgentOutput
      const transcript = { text: "x".repeat(5_000) }
      const [stored] = yield* output.publish("big", [
        { step: "s", attempt: 1, index: 0, kind: "result", payload: transcript }
      ])
      assert.deepStrictEqual(stored!.payload, { blob: "big/s/1/0", bytes: JSON.stringify(transcript).length })
      assert.deepStrictEqual(yield* output.readBlob("big/s/1/0"), transcript)
      const missing = yield* Effect.flip(output.readBlob("nope"))
      assert.strictEqual(missing._tag, "UnknownBlob")
    }).pipe(Effect.provide(AgentOutput.layerMemory({ blobThreshold: 1024 })))
  )

  it.effect("purges a run's events, blobs and state", () =>
    Effect.gen(function* () {
      const output = yield* AgentOutput
      yield* output.publish("gone", [{ step: "s", attempt: 1, index: 0, kind: "result", payload: "y".repeat(2000) }])
      yield* output.publish("kept", events("s", 1, 0, 1))
      yield* output.purge(["gone"])
      assert.strictEqual((yield* output.read("gone")).length, 0)
      assert.isTrue((yield* output.status("gone"))._tag === "None")
      assert.strictEqual((yield* Effect.flip(output.readBlob("gone/s/1/0")))._tag, "UnknownBlob")
      assert.strictEqual((yield* output.read("kept")).length, 1)
    }).pipe(Effect.provide(AgentOutput.layerMemory({ blobThreshold: 1024 })))
  )
})

describe("AgentOutput on Postgres", () => {
  let url = ""
  beforeAll(async () => {
    url = await createDatabase("output")
  })
  afterAll(() => dropDatabase(url))

  it.live(
    "a subscriber follows events published by another process",
    () =>
      Effect.gen(function* () {
        const output = yield* AgentOutput
        const subscriber = yield* Effect.forkChild(Stream.runCollect(output.subscribe("cross")))
        const publisher = spawn(
          process.execPath,
          [Path.join(import.meta.dirname, "fixtures", "Publisher.ts"), url, "cross", "20"],
          {
            stdio: ["ignore", "inherit", "inherit"]
          }
        )
        const received = yield* Fiber.join(subscriber)
        assert.deepStrictEqual(sequences(received), range(1, 20))
        assert.deepStrictEqual(
          Array.from(received, (e) => e.payload),
          range(0, 19).map((i) => ({ text: `r${i}` }))
        )
        assert.strictEqual(publisher.exitCode ?? 0, 0)
      }).pipe(
        Effect.provide(
          Layer.unwrap(
            Effect.sync(() =>
              AgentOutput.layer({ safetyPollInterval: Duration.hours(1) }).pipe(
                Layer.provide(PgClient.layer({ url: Redacted.make(url) }))
              )
            )
          )
        )
      ),
    60_000
  )
})
