/**
 * Peers: the workflow of bench/engine.ts (N sequential trivial steps) on
 * DBOS Transact, LangGraph.js and Restate, next to ours and to one raw
 * commit. Trials are interleaved across the systems, so that every ratio
 * compares figures taken at the same moments of a noisy machine. A peer that
 * fails is reported as "could not run" and fails the run at the end (see
 * bench/run.ts), unless it is a documented case (`PeerUnavailable`).
 */
import { PgClient } from "@effect/sql-pg"
import { Cause, Context, Effect, Exit, Layer, Redacted, type Scope } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import { adminUrl, createDatabase, dropDatabase } from "../test/engine/TestDatabase.ts"
import * as Engine from "./engine.ts"
import { format, type Measurement, measured, summary, verdict } from "./Measurement.ts"
import * as Dbos from "./peers/dbos.ts"
import * as LangGraph from "./peers/langgraph.ts"
import * as Ours from "./peers/ours.ts"
import { type Peer, PeerUnavailable, type Started } from "./peers/Peer.ts"
import * as Restate from "./peers/restate.ts"

const group = "Peers"
/** The short workflow of the runs/s figure, and how many of its runs are in flight at once. */
const shortSteps = 3
const concurrency = 8

interface Entry {
  readonly peer: Peer
  started: Started | undefined
  database: string | undefined
  failure: { readonly reason: string; readonly expected: boolean } | undefined
  readonly perStep: Array<number>
  /** CPU time of this Node process (user + system) per step; a peer's own server process is not in it. */
  readonly cpuPerStep: Array<number>
  readonly runsPerSecond: Array<number>
  readonly txPerStep: Array<number>
}

const entryOf = (peer: Peer): Entry => ({
  peer,
  started: undefined,
  database: undefined,
  failure: undefined,
  perStep: [],
  cpuPerStep: [],
  runsPerSecond: [],
  txPerStep: []
})

/** The innermost message: `Effect.tryPromise` wraps the peer's own error as the cause of a generic one. */
const messageOf = (error: unknown): string =>
  error instanceof PeerUnavailable
    ? error.reason
    : error instanceof Error
      ? error.cause !== undefined
        ? messageOf(error.cause)
        : error.message
      : String(error)

/** Why it failed, in one line fit for a table cell. */
const describe = (cause: Cause.Cause<unknown>): string =>
  messageOf(Cause.squash(cause)).replace(/\s+/g, " ").replaceAll("|", "\\|").slice(0, 400)

/** Runs `effect` unless the peer has already failed; a failure is recorded and ends its part in the benchmark. */
const attempt = <A>(entry: Entry, what: string, effect: Effect.Effect<A, unknown>) =>
  entry.failure !== undefined
    ? Effect.succeed(undefined)
    : Effect.map(Effect.exit(effect), (exit) => {
        if (Exit.isSuccess(exit)) return exit.value
        entry.failure = { reason: `${what}: ${describe(exit.cause)}`, expected: false }
        return undefined
      })

/** Starts the peer, on a database of its own if it uses Postgres (dropped after the peer has stopped). */
const start = <S extends Started>(
  entry: Entry,
  peer:
    | { readonly postgres: true; readonly start: (url: string) => Effect.Effect<S, unknown, Scope.Scope> }
    | { readonly postgres: false; readonly start: () => Effect.Effect<S, unknown, Scope.Scope> }
) =>
  Effect.gen(function* () {
    yield* Effect.logInfo(`peers: starting ${entry.peer.name}`)
    let starting: Effect.Effect<S, unknown, Scope.Scope>
    if (peer.postgres) {
      const url = yield* Effect.acquireRelease(
        Effect.promise(() => createDatabase(`peer_${entry.peer.key}`)),
        (made) => Effect.promise(() => dropDatabase(made))
      )
      entry.database = url.slice(url.lastIndexOf("/") + 1)
      starting = peer.start(url)
    } else {
      starting = peer.start()
    }
    const exit = yield* Effect.exit(Effect.timeout(starting, "2 minutes"))
    if (Exit.isSuccess(exit)) {
      entry.started = exit.value
      return exit.value
    }
    const expected = Cause.squash(exit.cause) instanceof PeerUnavailable
    entry.failure = { reason: `${expected ? "" : "start: "}${describe(exit.cause)}`, expected }
    return undefined
  })

let ids = 0
/** One run of `steps` steps, checked, with a bound on how long a stuck peer can hold the benchmark. */
const runOnce = (entry: Entry, steps: number) =>
  entry.started!.run(`peer-${entry.peer.key}-${process.pid}-${++ids}`, steps).pipe(
    Effect.timeout("2 minutes"),
    Effect.flatMap((total) =>
      total === steps ? Effect.void : Effect.fail(new Error(`a run of ${steps} steps returned ${total}`))
    )
  )

/** Wall time and this process's CPU time (user + system), in milliseconds. */
const timed = <E>(effect: Effect.Effect<unknown, E>) =>
  Effect.suspend(() => {
    const [wall, cpu] = [performance.now(), process.cpuUsage()]
    return Effect.map(effect, () => {
      const used = process.cpuUsage(cpu)
      return { wall: performance.now() - wall, cpu: (used.user + used.system) / 1000 }
    })
  })

/**
 * Postgres transactions per step, for each Postgres system: its database's
 * `xact_commit` over one run of `steps` steps, less an idle window as long
 * (engines poll and heartbeat in the background), divided by `steps`.
 */
const transactionsPerStep = (entries: ReadonlyArray<Entry>, steps: number) =>
  Effect.gen(function* () {
    const admin = Context.get(yield* Layer.build(PgClient.layer({ url: Redacted.make(adminUrl) })), SqlClient)
    const snapshot = Effect.map(
      admin<{
        readonly datname: string
        readonly n: string
      }>`SELECT datname, xact_commit::text AS n FROM pg_stat_database`,
      (rows) => new Map(rows.map((row) => [row.datname, Number(row.n)]))
    )
    // A backend reports its counters at most once a second, and one that goes idle within a second
    // of its last report waits 10 s (PGSTAT_IDLE_INTERVAL): only after that are the counts complete.
    const settle = Effect.andThen(Effect.sleep("11 seconds"), snapshot)
    const before = yield* settle
    const begin = performance.now()
    for (const entry of entries) yield* attempt(entry, "the counted run", runOnce(entry, steps))
    const after = yield* settle
    yield* Effect.sleep(performance.now() - begin)
    const idle = yield* snapshot
    for (const entry of entries) {
      if (entry.failure !== undefined || entry.database === undefined) continue
      const count = (map: Map<string, number>) => map.get(entry.database!) ?? Number.NaN
      entry.txPerStep.push((count(after) - count(before) - (count(idle) - count(after))) / steps)
    }
  })

// A peer's library can keep an idle pooled Postgres connection past its own shutdown; dropping the peer's
// database then ends it ("terminating connection due to administrator command", 57P01), and a pool with no
// 'error' listener would take the benchmark down with it (seen once in CI). That error, and only that one,
// is logged instead while the peers run.
const peersLeftAConnection = (error: unknown) => {
  if ((error as { readonly code?: unknown } | null)?.code !== "57P01") throw error
  console.warn(`peers: a peer's idle Postgres connection was ended with its database: ${String(error)}`)
}

export const run = (quick: boolean) =>
  Effect.gen(function* () {
    process.on("uncaughtException", peersLeftAConnection)
    const { trials, steps } = Engine.optionsFor(quick)
    const batch = quick ? { trials: 3, runs: 24 } : { trials: 5, runs: 200 }
    // Counting transactions takes half a minute of settling: full runs only.
    const countedSteps = quick ? undefined : 100
    const ours = entryOf(Ours.peer)
    const others = [Ours.journalPeer, Dbos.peer, LangGraph.peer, Restate.peer].map(entryOf)
    const entries = [ours, ...others]
    const live = () => entries.filter((entry) => entry.failure === undefined)

    const oursStarted = yield* start(ours, Ours.peer)
    for (const entry of others) yield* start(entry, entry.peer)
    for (const entry of live()) yield* attempt(entry, "warm-up", runOnce(entry, 5))

    const perCommit: Array<number> = []
    for (let t = 0; t < trials; t++) {
      yield* Effect.logInfo(`peers: ${steps} steps, trial ${t + 1} of ${trials}`)
      if (oursStarted !== undefined) {
        const commits = Effect.gen(function* () {
          for (let i = 0; i < steps; i++) yield* oursStarted.rawCommit
        })
        const took = yield* attempt(ours, "raw commits", timed(commits))
        if (took !== undefined) perCommit.push(took.wall / steps)
      }
      for (const entry of live()) {
        const took = yield* attempt(entry, "a run", timed(runOnce(entry, steps)))
        if (took !== undefined) {
          entry.perStep.push(took.wall / steps)
          entry.cpuPerStep.push(took.cpu / steps)
        }
      }
    }
    for (let t = 0; t < batch.trials; t++) {
      yield* Effect.logInfo(`peers: runs/s, trial ${t + 1} of ${batch.trials}`)
      for (const entry of live()) {
        const took = yield* attempt(
          entry,
          "a batch of runs",
          timed(
            Effect.forEach(Array.from({ length: batch.runs }), () => runOnce(entry, shortSteps), {
              concurrency,
              discard: true
            })
          )
        )
        if (took !== undefined) entry.runsPerSecond.push(batch.runs / (took.wall / 1000))
      }
    }
    if (countedSteps !== undefined) {
      yield* Effect.logInfo("peers: transactions per step")
      yield* transactionsPerStep(
        live().filter((entry) => entry.peer.postgres),
        countedSteps
      )
    }

    const names = {
      raw: "peers: one raw commit (INSERT, autocommit)",
      step: (entry: Entry) => `peers: ${entry.peer.name}: one step (${steps} sequential)`,
      runs: (entry: Entry) =>
        `peers: ${entry.peer.name}: runs/s (${batch.runs} runs of ${shortSteps} steps, ${concurrency} at a time)`,
      cpu: (entry: Entry) => `peers: ${entry.peer.name}: CPU of this process per step`,
      tx: (entry: Entry) => `peers: ${entry.peer.name}: Postgres transactions per step (run of ${countedSteps} steps)`
    }
    const raw = measurementOf(ours, names.raw, "ms", perCommit)
    const rows = entries.map((entry): Row => ({
      entry,
      step:
        entry === ours
          ? {
              ...measurementOf(ours, names.step(ours), "ms", ours.perStep),
              baseline: names.raw,
              target: { ratio: 1.5, text: "≤ 1.5× a raw commit" }
            }
          : measurementOf(entry, names.step(entry), "ms", entry.perStep),
      cpu: measurementOf(entry, names.cpu(entry), "ms", entry.cpuPerStep),
      runs: measurementOf(entry, names.runs(entry), "runs/s", entry.runsPerSecond),
      tx:
        entry.peer.postgres && countedSteps !== undefined
          ? measurementOf(entry, names.tx(entry), "tx", entry.txPerStep)
          : undefined
    }))
    return {
      measurements: [
        raw,
        ...rows.flatMap(({ step, cpu, runs, tx }) => (tx === undefined ? [step, cpu, runs] : [step, cpu, runs, tx]))
      ],
      section: render({ steps, trials, batch, countedSteps, raw, rows })
    }
  }).pipe(Effect.scoped, Effect.ensuring(Effect.sync(() => process.off("uncaughtException", peersLeftAConnection))))

interface Row {
  readonly entry: Entry
  readonly step: Measurement
  readonly cpu: Measurement
  readonly runs: Measurement
  readonly tx: Measurement | undefined
}

const measurementOf = (entry: Entry, name: string, unit: string, samples: ReadonlyArray<number>): Measurement => ({
  group,
  name,
  unit,
  ...(entry.failure === undefined ? { samples } : { samples: [], couldNotRun: entry.failure })
})

const median = (m: Measurement) => (measured(m) ? summary(m.samples).median : undefined)

const ratio = (m: Measurement, base: Measurement) => {
  const [a, b] = [median(m), median(base)]
  return a === undefined || b === undefined ? undefined : a / b
}

const times = (value: number | undefined) => (value === undefined ? "" : `${value.toFixed(2)}×`)

const spread = (m: Measurement) => {
  if (!measured(m)) return ""
  const s = summary(m.samples)
  return `${format(s.min)} / ${format(s.median)} / ${format(s.max)} ${m.unit}`
}

/** The Peers section of docs/benchmarks.md: one line per system, with ratios to one raw commit and to ours. */
const render = (options: {
  readonly steps: number
  readonly trials: number
  readonly batch: { readonly trials: number; readonly runs: number }
  readonly countedSteps: number | undefined
  readonly raw: Measurement
  readonly rows: ReadonlyArray<Row>
}): ReadonlyArray<string> => {
  const { steps, trials, batch, countedSteps, raw, rows } = options
  const ours = rows[0]!
  const dbos = rows.find((row) => row.entry.peer === Dbos.peer)!.step
  const versusDbos = ratio(ours.step, dbos)
  const journal = rows.find((row) => row.entry.peer === Ours.journalPeer)!.step
  const journalVersusDbos = ratio(journal, dbos)
  const transactions = (row: Row) =>
    !row.entry.peer.postgres ? "n/a" : row.tx === undefined ? "full run only" : format(median(row.tx)!)
  return [
    "## Peers",
    "",
    "The workflow of the Engine rows, N sequential trivial steps each returning 1, written for each system",
    "(bench/peers/); the peers' code comes from npm and is only called. Trials are interleaved across the systems.",
    "",
    `- Per step: one run of ${steps} steps divided by ${steps}, ${trials} trials; CPU is this Node process's user + system`,
    "  time over the same runs (the engines and clients run in it; Restate's server is another process, not counted).",
    `  Runs/s: ${batch.runs} runs of a ${shortSteps}-step workflow, ${concurrency} in flight at a time, ${batch.trials} trials.`,
    '  "× ours" is the system\'s median over ours: below 1 a step takes less time than ours, above 1 it makes more',
    "  runs per second.",
    "- Each Postgres system has a fresh database on the same server (127.0.0.1:5432, fsync on); the raw commit",
    "  is an autocommitted INSERT through our SQL client into our database. Restate keeps its journal in its own",
    "  storage (an embedded log server and RocksDB in a temporary directory, fsynced), so its ratios to the raw",
    "  commit compare unlike storage.",
    `- Postgres transactions per step: \`xact_commit\` of the system's database (pg_stat_database, read-only ones`,
    `  included) over one run of ${countedSteps ?? "N"} steps, less an idle window as long, divided by the steps; full runs only.`,
    "",
    "| system | a step is durable in | per step: min / median / max | × one raw commit | × ours | CPU per step (median) | runs/s: min / median / max | × ours | Postgres tx per step |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    `| one raw commit (INSERT, autocommit) | Postgres | ${measured(raw) ? spread(raw) : `could not run: ${raw.couldNotRun?.reason}`} | ${measured(raw) ? "1.00×" : ""} |  |  |  |  | 1 |`,
    ...rows.map((row) =>
      row.entry.failure !== undefined
        ? `| ${row.entry.peer.name} | ${row.entry.peer.storage} | could not run${row.entry.failure.expected ? " here" : ""}: ${row.entry.failure.reason} |  |  |  |  |  |  |`
        : `| ${row.entry.peer.name} | ${row.entry.peer.storage} | ${spread(row.step)} | ${times(ratio(row.step, raw))} | ${times(ratio(row.step, ours.step))} | ${format(median(row.cpu)!)} ms | ${spread(row.runs)} | ${times(ratio(row.runs, ours.runs))} | ${transactions(row)} |`
    ),
    "",
    `- Ours, per step, ${verdict(ours.step, ratio(ours.step, raw)) || "≤ 1.5× a raw commit: not judged, no number"}.`,
    `- Ours, per step, ahead of DBOS Transact on the same Postgres: ${
      versusDbos === undefined
        ? "not judged, no number"
        : versusDbos < 1
          ? `met (ours takes ${versusDbos.toFixed(2)}× DBOS's time)`
          : `missed by ${((versusDbos - 1) * 100).toFixed(1)} % (ours takes ${versusDbos.toFixed(2)}× DBOS's time per step)`
    }.`,
    `- Ours on the JournalEngine, per step, ${verdict({ ...journal, target: { ratio: 1.5, text: "≤ 1.5× a raw commit" } }, ratio(journal, raw)) || "≤ 1.5× a raw commit: not judged, no number"}; ahead of DBOS Transact: ${
      journalVersusDbos === undefined
        ? "not judged, no number"
        : journalVersusDbos < 1
          ? `met (it takes ${journalVersusDbos.toFixed(2)}× DBOS's time)`
          : `missed by ${((journalVersusDbos - 1) * 100).toFixed(1)} % (${journalVersusDbos.toFixed(2)}× DBOS's time per step)`
    }.`
  ]
}
