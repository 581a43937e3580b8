import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { spawn } from "node:child_process"
import * as Path from "node:path"
import { PgClient } from "@effect/sql-pg"
import { Context, Duration, Effect, Fiber, Layer, Queue, Redacted, Stream } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import * as SqliteClient from "../../src/engine/SqliteClient.ts"
import { AgentOutput, type Options } from "../../src/output/AgentOutput.ts"
import type { NewEvent, OutputEvent } from "../../src/output/OutputEvent.ts"
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

/** The log and its SQL client, on a fresh database. */
type Backend = (options?: Options) => Layer.Layer<AgentOutput | SqlClient, unknown>

// The same as `AgentOutput.layerMemory`, with the client exposed.
const sqlite: Backend = (options) =>
  AgentOutput.layer(options).pipe(Layer.provideMerge(SqliteClient.layer({ filename: ":memory:" })))

// A database of its own for each layer, dropped with it.
const postgres: Backend = (options) =>
  Layer.unwrap(
    Effect.map(
      Effect.acquireRelease(
        Effect.promise(() => createDatabase("output")),
        (url) => Effect.promise(() => dropDatabase(url))
      ),
      (url) => AgentOutput.layer(options).pipe(Layer.provideMerge(PgClient.layer({ url: Redacted.make(url) })))
    )
  )

const suite = (name: string, backend: Backend) =>
  describe(`AgentOutput on ${name}`, () => {
    // Signals only: a subscriber that relied on the safety poll would hang for an hour.
    const signalsOnly = backend({ safetyPollInterval: Duration.hours(1) })

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
      }).pipe(Effect.provide(backend()))
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
      }).pipe(Effect.provide(backend()))
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
      }).pipe(Effect.provide(backend()))
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
        // A replay's batch, stored already: nothing new, so nothing to refuse (a run the engine re-runs
        // because it could not store its result). With one new event in it, refused whole.
        assert.deepStrictEqual(yield* output.publish("closed", events("s", 1, 0, 1)), [])
        const mixed = yield* Effect.flip(output.publish("closed", [...events("s", 1, 0, 1), ...events("s", 1, 1, 1)]))
        assert.strictEqual(mixed._tag, "OutputClosed")
        assert.deepStrictEqual(sequences(yield* output.read("closed")), [1])
      }).pipe(Effect.provide(backend()))
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
      }).pipe(Effect.provide(backend({ blobThreshold: 1024 })))
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
      }).pipe(Effect.provide(backend({ blobThreshold: 1024 })))
    )

    it.effect("stores an event repeated within one batch once", () =>
      Effect.gen(function* () {
        const output = yield* AgentOutput
        const batch = events("plan", 1, 0, 2)
        const stored = yield* output.publish("run", [...batch, batch[0]!, ...events("plan", 1, 2, 1), batch[1]!])
        assert.deepStrictEqual(
          stored.map((e) => [e.sequence, e.index]),
          [
            [1, 0],
            [2, 1],
            [3, 2]
          ]
        )
        assert.deepStrictEqual(sequences(yield* output.read("run")), range(1, 3))
      }).pipe(Effect.provide(backend()))
    )

    it.live("hands a waiting subscriber the events it publishes, exactly as the log stores them", () =>
      Effect.gen(function* () {
        const output = yield* AgentOutput
        const sql = yield* SqlClient
        // Two events already stored (written directly: no notification is left in flight).
        yield* sql`INSERT INTO agent_output_runs (run_id, last_sequence) VALUES ('handoff', 2)`
        yield* sql`INSERT INTO agent_output_events (run_id, sequence, step, attempt, idx, kind, payload, created_at)
          VALUES ('handoff', 1, 's', 1, 0, 'text_delta', '{}', 0), ('handoff', 2, 's', 1, 1, 'text_delta', '{}', 0)`
        const received = yield* Queue.unbounded<OutputEvent>()
        // Attached late: it replays offset 2 from the log, then waits.
        yield* Effect.forkChild(
          output.subscribe("handoff", { from: 2 }).pipe(Stream.runForEach((event) => Queue.offer(received, event)))
        )
        const replayed = yield* Queue.take(received)
        const published = yield* output.publish("handoff", events("s", 1, 2, 3))
        const handed = [yield* Queue.take(received), yield* Queue.take(received), yield* Queue.take(received)]
        assert.deepStrictEqual(sequences([replayed, ...handed]), range(2, 5))
        // Handed over: the very events `publish` returned, not copies read back from the log.
        assert.isTrue(handed.every((event, i) => event === published[i]))
        assert.deepStrictEqual(
          handed.map((e) => ({ ...e })),
          (yield* output.read("handoff", { from: 3 })).map((e) => ({ ...e }))
        )
      }).pipe(Effect.provide(signalsOnly))
    )

    it.live("reads the log when a handed-over batch does not continue from the subscriber's last event", () =>
      Effect.gen(function* () {
        const output = yield* AgentOutput
        const sql = yield* SqlClient
        const stored = (sequence: number, step: string) =>
          sql`INSERT INTO agent_output_events (run_id, sequence, step, attempt, idx, kind, payload, created_at)
            VALUES ('gap', ${sequence}, ${step}, 1, 0, 'text_delta', '{}', ${Date.now()})`
        yield* sql`INSERT INTO agent_output_runs (run_id, last_sequence) VALUES ('gap', 1)`
        yield* stored(1, "first")
        const received = yield* Queue.unbounded<OutputEvent>()
        yield* Effect.forkChild(
          output.subscribe("gap").pipe(Stream.runForEach((event) => Queue.offer(received, event)))
        )
        const first = yield* Queue.take(received)
        // Appended behind this process's back: another runner whose notification is still on its way.
        yield* stored(2, "elsewhere")
        yield* sql`UPDATE agent_output_runs SET last_sequence = 2 WHERE run_id = 'gap'`
        // Handed over as 3 and 4, which do not follow 1.
        yield* output.publish("gap", events("s", 1, 0, 2))
        const rest = [yield* Queue.take(received), yield* Queue.take(received), yield* Queue.take(received)]
        assert.deepStrictEqual(
          [first, ...rest].map((e) => [e.sequence, e.step]),
          [
            [1, "first"],
            [2, "elsewhere"],
            [3, "s"],
            [4, "s"]
          ]
        )
      }).pipe(Effect.provide(signalsOnly))
    )

    it.live("numbers concurrent publishers' events without gaps, storing retried keys once", () =>
      Effect.gen(function* () {
        const output = yield* AgentOutput
        const subscriber = yield* Effect.forkChild(Stream.runCollect(output.subscribe("together")))
        const producers = ["a", "b", "c", "d"]
        // Each producer publishes 10 batches of 3, and retries each batch once, concurrently with the others.
        yield* Effect.forEach(
          producers,
          (step) =>
            Effect.forEach(
              range(0, 9),
              (b) =>
                Effect.all(
                  [
                    output.publish("together", events(step, 1, b * 3, 3)),
                    output.publish("together", events(step, 1, b * 3, 3))
                  ],
                  {
                    concurrency: 2
                  }
                ),
              { discard: true }
            ),
          { concurrency: "unbounded", discard: true }
        )
        yield* output.end("together")
        const received = Array.from(yield* Fiber.join(subscriber))
        assert.deepStrictEqual(sequences(received), range(1, producers.length * 30))
        const keys = received.map((e) => `${e.step}/${e.index}`)
        assert.strictEqual(new Set(keys).size, keys.length)
        for (const step of producers) {
          assert.deepStrictEqual(
            received.filter((e) => e.step === step).map((e) => e.index),
            range(0, 29)
          )
        }
      }).pipe(Effect.provide(signalsOnly))
    )

    it.live("shows a publish inside a transaction only once it commits, and never if it rolls back", () =>
      Effect.gen(function* () {
        const output = yield* AgentOutput
        const sql = yield* SqlClient
        const subscriber = yield* Effect.forkChild(Stream.runCollect(output.subscribe("tx")))
        yield* Effect.sleep("50 millis")
        yield* sql
          .withTransaction(Effect.andThen(output.publish("tx", events("rolled-back", 1, 0, 2)), Effect.fail("abort")))
          .pipe(Effect.ignore)
        // Time for the subscriber to take whatever it was told.
        yield* Effect.sleep("50 millis")
        yield* sql.withTransaction(output.publish("tx", events("committed", 1, 0, 2)))
        yield* output.end("tx")
        const received = Array.from(yield* Fiber.join(subscriber))
        assert.deepStrictEqual(
          received.map((e) => [e.sequence, e.step]),
          [
            [1, "committed"],
            [2, "committed"]
          ]
        )
      }).pipe(Effect.provide(signalsOnly))
    )
  })

suite("SQLite", sqlite)
suite("Postgres", postgres)

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

  it.live(
    "listens again after its connection is dropped, so a subscriber still follows another process's events",
    () =>
      Effect.gen(function* () {
        // Two instances with clients of their own: the follower's connections are dropped, the publisher's not.
        const follower = yield* Layer.build(
          AgentOutput.layer({ safetyPollInterval: Duration.hours(1) }).pipe(
            Layer.provideMerge(PgClient.layer({ url: Redacted.make(url), applicationName: "follower" }))
          )
        )
        const publisher = yield* Layer.build(
          AgentOutput.layer().pipe(Layer.provide(PgClient.layer({ url: Redacted.make(url) })))
        )
        const followed = Context.get(follower, AgentOutput)
        const published = Context.get(publisher, AgentOutput)
        const subscriber = yield* Effect.forkChild(Stream.runCollect(followed.subscribe("dropped")))
        yield* published.publish("dropped", [{ step: "s", attempt: 1, index: 0, kind: "status", payload: 0 }])

        const sql = Context.get(follower, PgClient.PgClient)
        const ended = yield* sql<{ readonly ended: boolean }>`SELECT pg_terminate_backend(pid) AS ended
          FROM pg_stat_activity WHERE application_name = 'follower' AND pid <> pg_backend_pid()`
        assert.isNotEmpty(ended, "the follower's LISTEN connection was dropped")
        // Past the second it waits before listening again; with polling off, only a notification wakes it.
        yield* Effect.sleep(Duration.seconds(3))
        yield* published.publish("dropped", [{ step: "s", attempt: 1, index: 1, kind: "status", payload: 1 }])
        yield* published.end("dropped")
        const received = yield* Fiber.join(subscriber).pipe(Effect.timeout(Duration.seconds(15)))
        assert.deepStrictEqual(sequences(received), [1, 2])
      }).pipe(Effect.scoped),
    60_000
  )
})
