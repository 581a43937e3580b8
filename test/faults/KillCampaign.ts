/**
 * The kill campaign: runner processes SIGKILLed at random points while many
 * runs are in flight, restarted, and killed again; then left alone until
 * every run has ended, and every run checked against the invariants.
 *
 * Each cycle (re)starts the runners that are down and hands the one it
 * starts new runs, so that about `inFlight` are under way. It then picks,
 * with the seeded generator, where the kill should land (while a run streams,
 * waits for its approval, sleeps on the durable clock or in memory, backs off
 * before a retry, starts a step, resumes after a decision, or during the
 * runner's start-up and replay), watches the runs' output logs until one of
 * them is there (for at most `aimMs`), waits a few more random milliseconds,
 * and kills one runner (or, with two, sometimes both). It notes where every
 * run in flight was at that moment. A run that makes no progress for
 * `stallAfter` once the kills have stopped is stuck: the shape of a lost
 * resume.
 */
import * as Fs from "node:fs"
import * as Path from "node:path"
import { type Context, Deferred, Duration, Effect, Fiber, Layer, type Scope } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import { Campaign, Gates } from "./Campaign.ts"
import type { RunRef } from "./fixtures/CampaignWorker.ts"
import type { LoggedRequest } from "./FaultyModel.ts"
import { checkCampaignRun, checkGatesRun, type End, type Violation } from "./Invariants.ts"
import { count, faultTimes, type ScenarioReport } from "./Report.ts"
import { lastEvents, phaseOf, readRun } from "./RunRecords.ts"
import * as Workers from "./Workers.ts"

/** A seeded generator (mulberry32): the campaign's choices of when and whom to kill. */
export const seeded = (seed: number) => {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32
  }
}

export interface Model {
  readonly url: string
  readonly log: ReadonlyArray<LoggedRequest>
  readonly requestsOf: (key: string) => ReadonlyArray<LoggedRequest>
}

export interface Options {
  readonly scenario: string
  readonly engine: string
  /** The runners' `AGENT_DATABASE_URL`. */
  readonly database: string
  /** A client on the same database, for reading back. */
  readonly reader: Layer.Layer<SqlClient, unknown>
  /** One entry per runner process; a port makes it a runner of a Postgres cluster. */
  readonly runners: ReadonlyArray<{ readonly port?: number }>
  readonly workflow: RunRef["workflow"]
  readonly kills: number
  readonly inFlight: number
  readonly maxRuns: number
  readonly seed: number
  /** The longest a cycle waits for a run to reach the phase it aims at; then it kills anyway. */
  readonly aimMs: number
  /** Where kills are aimed (`phaseOf`'s names); repeat an entry to aim there more often. Default: every phase of `Campaign`. */
  readonly aims?: ReadonlyArray<string>
  /** A client-only process decides the requests instead of the runners (Postgres clusters). */
  readonly decider?: boolean
  readonly model: Model
  readonly dir: string
  /** Something more to do in each cycle, e.g. drop database connections; returns the faults it injected. */
  readonly duringCycle?: (cycle: number) => Effect.Effect<Record<string, number>>
  /** No progress for this long after the last kill: the runs still open are stuck. Default 60 s. */
  readonly stallAfter?: Duration.Duration
  /** Progress lines (`--verbose`). */
  readonly log?: (line: string) => void
  /**
   * A fault of the database, run alongside the kills (or alone, with no kills), and over before the
   * runs are left to finish. It counts what it injects in `faults`.
   */
  readonly disturb?: (faults: Record<string, number>) => Effect.Effect<void>
  /** A database fault must show in some runner's log in words like these: the clear error. */
  readonly reportedAs?: RegExp
  /** Check the SQLite file with `PRAGMA integrity_check` at the end. */
  readonly integrity?: boolean
  /**
   * When runs are stuck after the fault, restart every runner once and wait again; runs that then end
   * count as `recoveredByRestart`, not as violations (database faults: see docs/reliability.md).
   */
  readonly restartIfStuck?: boolean
}

/** The requests of a run that the cluster engine took and never answered (its `cluster_messages`). */
const unansweredRequests = (runId: string) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient
    const rows = yield* sql<{ message_id: string }>`SELECT message_id FROM cluster_messages
      WHERE entity_id = ${runId} AND NOT processed AND last_read IS NOT NULL AND message_id NOT LIKE ${"%/run/%"}`
    return rows.map((row) => row.message_id.replace(/^.*?\/activity\//, "activity "))
  })

interface RunState {
  readonly ref: RunRef
  readonly runId: string
  started: boolean
  end: End | undefined
}

const splitTwice = (line: string): Array<string> => {
  const first = line.indexOf(" ")
  if (first < 0) return [line]
  const second = line.indexOf(" ", first + 1)
  return second < 0
    ? [line.slice(0, first), line.slice(first + 1)]
    : [line.slice(0, first), line.slice(first + 1, second), line.slice(second + 1)]
}

/** Parses `<time> <key> tally` lines of the activity log. */
const talliesOf = (log: string) => {
  const byKey = new Map<string, Array<number>>()
  if (!Fs.existsSync(log)) return byKey
  for (const line of Fs.readFileSync(log, "utf8").split("\n")) {
    const [at, key] = line.split(" ")
    if (at === undefined || key === undefined) continue
    byKey.set(key, [...(byKey.get(key) ?? []), Number(at)])
  }
  return byKey
}

/** Where a `Campaign` cycle aims its kill. */
export const campaignAims = [
  "streaming",
  "streaming",
  "streaming",
  "waiting for approval",
  "waiting for approval",
  "durable sleep",
  "durable sleep",
  "in-memory sleep",
  "retry backoff",
  "agent step starting",
  "resuming after a decision",
  "between steps"
] as const

export const run = (options: Options): Effect.Effect<ScenarioReport> =>
  Effect.scoped(
    Effect.gen(function* () {
      const began = Date.now()
      const random = seeded(options.seed)
      const runs = new Map<string, RunState>()
      const activityLog = Path.join(options.dir, "activity.txt")
      const faults: Record<string, number> = {}
      const killPoints: Record<string, number> = {}
      const aimed: Record<string, number> = {}
      const notes: Array<string> = []
      const slots: Array<Workers.Worker | undefined> = options.runners.map(() => undefined)
      let decider: Workers.Worker | undefined
      let spawned = 0
      let kills = 0
      let lastProgressAt = Date.now()

      let refused = 0
      // `STARTED <key>`, `ENDED <key> <json>`, `DECIDED <key> <step>`, `REFUSED <key> <step> <reason>`.
      const onLine = (line: string) => {
        const [kind = "", key = "", rest = ""] = splitTwice(line)
        const state = runs.get(key)
        if (state === undefined) return
        if (kind === "STARTED") state.started = true
        if (kind === "ENDED" && state.end === undefined) {
          state.end = JSON.parse(rest) as End
          lastProgressAt = Date.now()
        }
        if (kind === "REFUSED") refused++
      }

      const workflowOf = options.workflow === "Campaign" ? Campaign : Gates
      const keyAt = (i: number) =>
        `s${options.seed}-${options.scenario.replace(/\W+/g, "")}-${String(i).padStart(3, "0")}`
      const addRuns = Effect.gen(function* () {
        const open = [...runs.values()].filter((r) => r.end === undefined).length
        for (let i = open; i < options.inFlight && runs.size < options.maxRuns; i++) {
          const key = keyAt(runs.size)
          runs.set(key, {
            ref: { workflow: options.workflow, key },
            runId: yield* workflowOf.executionId({ key }),
            started: false,
            end: undefined
          })
        }
      })

      const configFor = (slot: number) => {
        const all = [...runs.values()]
        return {
          database: options.database,
          role: "runner" as const,
          runnerPort: options.runners[slot]!.port,
          modelUrl: options.model.url,
          home: Path.join(options.dir, `home-${slot}`),
          start: all.filter((r) => !r.started).map((r) => r.ref),
          watch: all.filter((r) => r.end === undefined).map((r) => r.ref),
          decideFor: options.decider === true ? [] : all.map((r) => r.ref)
        }
      }

      const startSlot = (slot: number) =>
        Effect.gen(function* () {
          yield* addRuns
          Fs.mkdirSync(Path.join(options.dir, `home-${slot}`), { recursive: true })
          const worker = yield* Workers.start({
            name: `runner-${slot}-${spawned++}`,
            dir: options.dir,
            config: configFor(slot),
            env: { FAULTS_ACTIVITY_LOG: activityLog },
            onLine
          })
          slots[slot] = worker
          return worker
        })

      const startDecider = Effect.gen(function* () {
        // Every run the scenario will start, not only those started so far: runners get new runs while it lives.
        const all = Array.from({ length: options.maxRuns }, (_, i) => ({ workflow: options.workflow, key: keyAt(i) }))
        decider = yield* Workers.start({
          name: `decider-${spawned++}`,
          dir: options.dir,
          config: {
            database: options.database,
            role: "decider",
            modelUrl: options.model.url,
            home: options.dir,
            start: [],
            watch: [],
            decideFor: all
          },
          onLine
        })
      })

      const awaitReady = (worker: Workers.Worker) =>
        Deferred.await(worker.ready).pipe(
          Effect.timeout(Duration.seconds(120)),
          Effect.catchCause((cause) =>
            Effect.sync(() => notes.push(`${worker.name} did not become ready: ${String(cause).slice(0, 300)}`))
          )
        )

      const noteSelfExits = () => {
        for (const worker of [...slots, decider]) {
          if (worker !== undefined && worker.state.exitedByItself && !notes.some((n) => n.startsWith(worker.name))) {
            notes.push(
              `${worker.name} exited by itself (code ${worker.child.exitCode}): ${worker.stderr().slice(-600)}`
            )
          }
        }
      }

      // One reading connection for the scenario, opened once the database exists.
      let reader: Context.Context<SqlClient> | undefined
      const read = <A, E>(effect: Effect.Effect<A, E, SqlClient>): Effect.Effect<A, unknown, Scope.Scope> =>
        Effect.suspend(() =>
          reader !== undefined
            ? Effect.provideContext(effect, reader)
            : Effect.flatMap(Layer.build(options.reader), (context) => {
                reader = context
                return Effect.provideContext(effect, context)
              })
        )

      const phases = Effect.gen(function* () {
        const open = [...runs.values()].filter((r) => r.end === undefined && r.started)
        const last = yield* read(lastEvents(open.map((r) => r.runId))).pipe(Effect.orElseSucceed(() => new Map()))
        return open.map((r) => phaseOf(last.get(r.runId)))
      })

      // -- the kills ------------------------------------------------------------
      const log = options.log ?? (() => {})
      const disturbing = options.disturb === undefined ? undefined : yield* Effect.forkChild(options.disturb(faults))
      if (options.kills === 0) {
        for (let slot = 0; slot < slots.length; slot++) yield* startSlot(slot)
        if (options.decider === true) yield* startDecider
      }
      for (let cycle = 0; cycle < options.kills; cycle++) {
        const cycleStart = Date.now()
        const fresh: Array<Workers.Worker> = []
        for (let slot = 0; slot < slots.length; slot++) {
          const worker = slots[slot]
          if (worker === undefined || !Workers.alive(worker)) fresh.push(yield* startSlot(slot))
        }
        if (options.decider === true && (decider === undefined || !Workers.alive(decider))) yield* startDecider
        const duringStartUp = random() < 0.1
        const aims = options.aims ?? campaignAims
        const aim = duringStartUp ? "start-up" : aims[Math.floor(random() * aims.length)]!
        if (duringStartUp) {
          yield* Effect.sleep(Duration.millis(Math.floor(random() * 1500)))
        } else {
          yield* Effect.forEach(fresh, awaitReady, { discard: true })
          log(
            `cycle ${cycle}: ${fresh.map((w) => w.name).join(", ") || "no runner"} ready after ${Date.now() - cycleStart} ms; aiming at ${aim}`
          )
          const deadline = Date.now() + options.aimMs
          let hit = false
          while (!hit && Date.now() < deadline) {
            yield* Effect.sleep(Duration.millis(100))
            hit = (yield* phases).includes(aim)
          }
          count(aimed, `${aim}: ${hit ? "hit" : "missed"}`)
          yield* Effect.sleep(Duration.millis(Math.floor(random() * 300)))
        }
        if (options.duringCycle !== undefined) {
          for (const [kind, n] of Object.entries(yield* options.duringCycle(cycle))) count(faults, kind, n)
        }
        const victims: Array<Workers.Worker> =
          slots.length > 1 && random() < 0.15
            ? (slots.filter((w) => w !== undefined) as Array<Workers.Worker>)
            : [slots[Math.floor(random() * slots.length)]!].filter((w) => w !== undefined)
        if (decider !== undefined && random() < 0.1) victims.push(decider)
        noteSelfExits()
        for (const victim of victims) yield* Workers.kill(victim)
        kills += victims.length
        count(faults, duringStartUp ? "SIGKILL during start-up" : "SIGKILL", victims.length)
        for (const phase of yield* phases) count(killPoints, phase)
        const ended = [...runs.values()].filter((r) => r.end !== undefined).length
        log(
          `cycle ${cycle}: killed ${victims.map((w) => w.name).join(", ")} after ${Date.now() - cycleStart} ms; ${ended}/${runs.size} runs ended`
        )
      }

      if (disturbing !== undefined) {
        yield* Fiber.join(disturbing)
        log("the database fault is over")
      }

      // -- left alone until every run has ended ---------------------------------
      for (let slot = 0; slot < slots.length; slot++) {
        const worker = slots[slot]
        if (worker === undefined || !Workers.alive(worker)) yield* awaitReady(yield* startSlot(slot))
      }
      if (options.decider === true && (decider === undefined || !Workers.alive(decider))) yield* startDecider
      const stallAfter = Duration.toMillis(options.stallAfter ?? Duration.seconds(60))
      let progress = ""
      lastProgressAt = Date.now()
      log(`kills done; waiting for ${[...runs.values()].filter((r) => r.end === undefined).length} runs`)
      const open = () => [...runs.values()].filter((r) => r.end === undefined)
      const stuckBeforeRestart = new Set<string>()
      for (;;) {
        while (open().length > 0 && Date.now() - lastProgressAt < stallAfter) {
          yield* Effect.sleep(Duration.seconds(1))
          // Progress: any event stored, or a run ended.
          const now = yield* read(
            Effect.flatMap(
              SqlClient,
              (sql) => sql<{ n: number | string }>`SELECT COUNT(*) AS n FROM agent_output_events`
            )
          ).pipe(
            Effect.map((rows) => String(rows[0]?.n)),
            Effect.orElseSucceed(() => progress)
          )
          if (now !== progress) {
            progress = now
            lastProgressAt = Date.now()
          }
          // A runner that died on its own is restarted, and noted.
          noteSelfExits()
          for (let slot = 0; slot < slots.length; slot++) {
            if (!Workers.alive(slots[slot]!)) yield* startSlot(slot)
          }
        }
        if (open().length === 0 || options.restartIfStuck !== true || stuckBeforeRestart.size > 0) break
        // Stuck after a database fault: what the engine left unanswered, then a restart of every runner.
        for (const state of open()) {
          stuckBeforeRestart.add(state.ref.key)
          const unanswered = yield* read(unansweredRequests(state.runId)).pipe(Effect.orElseSucceed(() => []))
          notes.push(
            `${state.ref.key} stuck after the fault; requests the engine claimed and never answered: ${unanswered.join(", ") || "none"}`
          )
        }
        log(`${stuckBeforeRestart.size} runs stuck; restarting the runners`)
        for (const worker of slots) if (worker !== undefined) yield* Workers.kill(worker)
        // A kill too: what it cuts off may run again.
        count(faults, "runners restarted (stuck after the fault)")
        for (let slot = 0; slot < slots.length; slot++) yield* awaitReady(yield* startSlot(slot))
        lastProgressAt = Date.now()
      }
      noteSelfExits()
      for (const worker of [...slots, decider]) if (worker !== undefined) yield* Workers.kill(worker)

      // -- the invariants -------------------------------------------------------
      const tallies = talliesOf(activityLog)
      const violations: Array<Violation> = []
      const resumes: Array<number> = []
      let recoveredByRestart = 0
      let asExpected = 0
      for (const state of runs.values()) {
        const record = yield* read(readRun(state.runId)).pipe(Effect.orDie)
        record.events.forEach((event, i) => {
          const next = record.events[i + 1]
          if (event.kind === "decided" && next !== undefined) resumes.push(next.timestamp - event.timestamp)
        })
        const found =
          state.ref.workflow === "Campaign"
            ? checkCampaignRun({
                key: state.ref.key,
                record,
                end: state.end,
                requests: options.model.requestsOf(state.ref.key),
                tallies: tallies.get(state.ref.key) ?? [],
                faultTimes: faultTimes(faults)
              })
            : checkGatesRun({ key: state.ref.key, record, end: state.end })
        if (state.end === undefined) {
          const last = record.events.at(-1)
          found.push({
            key: state.ref.key,
            invariant: "nothing stuck",
            detail: `no end ${Math.round(stallAfter / 1000)} s after the last progress; last event ${last === undefined ? "none" : `${last.step} ${last.kind}`} (${phaseOf(last)}); waits ${record.waits.map((w) => `${w.step}:${w.state}${w.delivered ? "+delivered" : ""}`).join(", ")}`
          })
        }
        if (state.end !== undefined && !found.some((v) => v.invariant === "run: expected end")) asExpected++
        if (state.end !== undefined && stuckBeforeRestart.has(state.ref.key)) recoveredByRestart++
        violations.push(...found)
      }
      if (resumes.length > 0) {
        resumes.sort((a, b) => a - b)
        notes.push(
          `resume after a decision (decided → the run's next event): median ${resumes[Math.floor(resumes.length / 2)]} ms, max ${resumes.at(-1)} ms over ${resumes.length}`
        )
      }
      for (const request of options.model.log) if (request.served !== "ok") count(faults, `model ${request.served}`)
      if (options.reportedAs !== undefined) {
        const reported = new Set<string>()
        const errors: Array<string> = []
        for (const file of Fs.readdirSync(options.dir).filter((f) => f.endsWith(".log"))) {
          for (const line of Fs.readFileSync(Path.join(options.dir, file), "utf8").split("\n")) {
            const match = options.reportedAs.exec(line)
            if (match !== null) reported.add(match[0])
            else if (/\] ERROR |SqlError/.test(line)) errors.push(line)
          }
        }
        // A fault that no write ran into (SQLite reuses its WAL after a checkpoint, so a full disk can go
        // unnoticed) has nothing to report; one that some write ran into must be reported in its words.
        if (reported.size === 0 && errors.length === 0) {
          notes.push("the fault hit no write: nothing failed, nothing to report")
        } else if (reported.size === 0) {
          violations.push({
            key: "-",
            invariant: "the fault is reported clearly",
            detail: `no runner logged ${options.reportedAs}; errors logged: ${errors.slice(0, 2).join(" | ").slice(0, 400)}`
          })
        } else
          notes.push(
            `runners reported the fault as: ${[...reported]
              .slice(0, 4)
              .map((r) => `"${r}"`)
              .join(", ")}`
          )
      }
      if (options.integrity === true) {
        const check = yield* read(
          Effect.flatMap(SqlClient, (sql) => sql<{ integrity_check: string }>`PRAGMA integrity_check`)
        ).pipe(
          Effect.map((rows) => rows.map((row) => row.integrity_check).join("; ")),
          Effect.orElseSucceed(() => "could not run")
        )
        if (check !== "ok")
          violations.push({ key: "-", invariant: "no corruption", detail: `integrity_check: ${check}` })
        else notes.push("PRAGMA integrity_check: ok")
      }
      if (Object.keys(aimed).length > 0)
        notes.push(
          `kills aimed: ${Object.entries(aimed)
            .map(([aim, n]) => `${aim} ${n}`)
            .join(", ")}`
        )
      if (refused > 0)
        notes.push(`${refused} decisions were refused as already decided (two deciders raced; the table decided)`)

      return {
        scenario: options.scenario,
        engine: options.engine,
        runs: runs.size,
        kills,
        faults,
        asExpected,
        violations,
        seconds: (Date.now() - began) / 1000,
        killPoints,
        notes,
        recoveredByRestart
      } satisfies ScenarioReport
    })
  )
