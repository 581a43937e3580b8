/**
 * `npm run faults [-- --quick] [--seed N] [--only <scenario substring>]`: the
 * fault campaign. Runner processes are SIGKILLed at random points while runs
 * are in flight, the model misbehaves, the database goes away or fills up;
 * afterwards every run is checked against the invariants (see
 * `Invariants.ts`). Prints the summary table, whose last line is
 * `invariant violations: N`, and exits 1 if N > 0. The full run rewrites the
 * results section of docs/reliability.md.
 */
import { NodeRuntime } from "@effect/platform-node"
import { PgClient } from "@effect/sql-pg"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { Console, Duration, Effect, Layer, Redacted } from "effect"
import * as SqliteClient from "../../src/engine/SqliteClient.ts"
import { adminUrl, createDatabase, dropDatabase } from "../engine/TestDatabase.ts"
import * as FaultyModel from "./FaultyModel.ts"
import * as DatabaseFaults from "./DatabaseFaults.ts"
import * as KillCampaign from "./KillCampaign.ts"
import * as ModelFaults from "./ModelFaults.ts"
import { killPointsTable, type ScenarioReport, summaryTable } from "./Report.ts"

const args = process.argv.slice(2)
const option = (name: string) => {
  const i = args.indexOf(name)
  return i < 0 ? undefined : args[i + 1]
}
const quick = args.includes("--quick")
const seed = Number(option("--seed") ?? (quick ? 1 : Math.floor(Math.random() * 100_000)))
const only = option("--only")
const verbose = args.includes("--verbose")
// How long runs may make no progress before they count as stuck (investigations: try 700 to see Effect's 10-minute re-read).
const stallAfter = option("--stall-after") === undefined ? undefined : Duration.seconds(Number(option("--stall-after")))
const log = verbose ? (line: string) => console.log(`   ${new Date().toISOString().slice(11, 19)} ${line}`) : undefined
const root = Fs.mkdtempSync(Path.join(Os.tmpdir(), "fault-campaign-"))

const sqliteReader = (filename: string) => SqliteClient.layer({ filename, readonly: true })
const pgReader = (url: string) => PgClient.layer({ url: Redacted.make(url) })

const dirFor = (name: string) => {
  const dir = Path.join(root, name)
  Fs.mkdirSync(dir, { recursive: true })
  return dir
}

/** `KillCampaign.run`, with this run's `--verbose` and `--stall-after`. */
const campaign = (options: KillCampaign.Options) =>
  KillCampaign.run({
    ...options,
    ...(log === undefined ? {} : { log }),
    ...(stallAfter === undefined ? {} : { stallAfter })
  })

const withModel = <A>(options: Omit<FaultyModel.Options, "seed">, f: (model: KillCampaign.Model) => Effect.Effect<A>) =>
  Effect.scoped(Effect.flatMap(FaultyModel.make({ seed, ...options }), f))

const withPostgres = <A>(label: string, f: (url: string) => Effect.Effect<A>) =>
  Effect.acquireUseRelease(
    Effect.promise(() => createDatabase(label)),
    f,
    (url) => Effect.promise(() => dropDatabase(url))
  )

/** A Postgres database of its own with two runner processes of one cluster on it. */
const twoRunners = <A>(
  label: string,
  f: (cluster: Pick<KillCampaign.Options, "engine" | "database" | "reader" | "runners">) => Effect.Effect<A>
) =>
  withPostgres(label, (url) => {
    // Below Linux's ephemeral range (32768 and up): runners restart on these ports all campaign long, and an
    // outgoing connection could take one while its runner is down.
    const port = 20000 + Math.floor(Math.random() * 12000)
    return f({
      engine: "Postgres, two runners",
      database: url,
      reader: pgReader(url),
      runners: [{ port }, { port: port + 1 }]
    })
  })

const scale = (quickValue: number, fullValue: number) => (quick ? quickValue : fullValue)
// Restarting the Postgres server cuts off everyone using it: in the full run only, or when asked.
const restartPostgres = args.includes("--pg-restart") || (!quick && !args.includes("--no-pg-restart"))

const skipped = (scenario: string, engine: string, reason: string): ScenarioReport => ({
  scenario,
  engine,
  runs: 0,
  kills: 0,
  faults: {},
  asExpected: 0,
  violations: [],
  seconds: 0,
  killPoints: {},
  notes: [],
  skipped: reason
})

const postgresDown =
  /terminating connection|Connection terminated|ECONNREFUSED|ECONNRESET|the database system is (shutting down|starting up)/i

const agentModel = { faultRate: 0.15, maxFaultsPerStep: 2, hangs: !quick }

interface Scenario {
  readonly name: string
  readonly run: Effect.Effect<ScenarioReport>
  /** Only in the full run. */
  readonly full?: boolean
  /** False: not in this run at all. */
  readonly enabled?: boolean
}

const gateAims = ["waiting for approval", "waiting for approval", "resuming after a decision", "durable sleep"]

const scenarios: ReadonlyArray<Scenario> = [
  { name: "model faults", run: ModelFaults.run({ seed, quick, dir: dirFor("model-faults") }) },
  {
    name: "lost resume: gates on SQLite",
    run: withModel(agentModel, (model) => {
      const dir = dirFor("gates-sqlite")
      const filename = Path.join(dir, "agent.db")
      return campaign({
        scenario: "lost resume: eager decisions",
        engine: "SQLite, one runner",
        database: `sqlite:${filename}`,
        reader: sqliteReader(filename),
        runners: [{}],
        workflow: "Gates",
        kills: scale(2, 15),
        inFlight: 30,
        maxRuns: scale(30, 90),
        seed: seed + 10,
        aimMs: 5000,
        aims: gateAims,
        stallAfter: Duration.seconds(20),
        model,
        dir
      })
    })
  },
  {
    name: "lost resume: gates on Postgres, one runner",
    run: withModel(agentModel, (model) =>
      withPostgres("faults_gates", (url) =>
        campaign({
          scenario: "lost resume: eager decisions",
          engine: "Postgres, one runner (SingleRunner)",
          database: url,
          reader: pgReader(url),
          runners: [{}],
          workflow: "Gates",
          kills: 0,
          inFlight: 30,
          maxRuns: scale(30, 60),
          seed: seed + 11,
          aimMs: 5000,
          aims: gateAims,
          stallAfter: Duration.seconds(20),
          model,
          dir: dirFor("gates-postgres")
        })
      )
    )
  },
  {
    name: "lost resume: gates on Postgres, two runners, client-only decider",
    run: withModel(agentModel, (model) =>
      twoRunners("faults_gates_cluster", (cluster) =>
        campaign({
          ...cluster,
          scenario: "lost resume: decisions from a client",
          workflow: "Gates",
          kills: scale(3, 20),
          inFlight: 24,
          maxRuns: scale(24, 72),
          seed: seed + 12,
          aimMs: 5000,
          aims: gateAims,
          decider: true,
          stallAfter: Duration.seconds(30),
          model,
          dir: dirFor("gates-cluster")
        })
      )
    )
  },
  {
    name: "kills: agent runs on SQLite",
    run: withModel(agentModel, (model) => {
      const dir = dirFor("kills-sqlite")
      const filename = Path.join(dir, "agent.db")
      return campaign({
        scenario: "kills: agent runs",
        engine: "SQLite, one runner",
        database: `sqlite:${filename}`,
        reader: sqliteReader(filename),
        runners: [{}],
        workflow: "Campaign",
        kills: scale(8, 80),
        inFlight: 3,
        maxRuns: scale(10, 120),
        seed,
        aimMs: 8000,
        model,
        dir
      })
    })
  },
  {
    name: "kills: agent runs on SQLite, journal engine",
    run: withModel(agentModel, (model) => {
      const dir = dirFor("kills-journal")
      const filename = Path.join(dir, "agent.db")
      return campaign({
        scenario: "kills: agent runs",
        engine: "SQLite, journal engine",
        database: `sqlite+journal:${filename}`,
        reader: sqliteReader(filename),
        runners: [{}],
        workflow: "Campaign",
        kills: scale(0, 25),
        inFlight: 3,
        maxRuns: scale(0, 40),
        seed: seed + 2,
        aimMs: 8000,
        model,
        dir
      })
    }),
    full: true
  },
  {
    name: "kills: agent runs on Postgres, two runners",
    run: withModel(agentModel, (model) =>
      twoRunners("faults_kills", (cluster) =>
        campaign({
          ...cluster,
          scenario: "kills: agent runs",
          workflow: "Campaign",
          kills: scale(6, 70),
          inFlight: 4,
          maxRuns: scale(10, 110),
          seed: seed + 1,
          aimMs: 8000,
          model,
          dir: dirFor("kills-postgres")
        })
      )
    )
  },
  {
    name: "database: Postgres connections dropped",
    run: withModel(agentModel, (model) =>
      twoRunners("faults_drops", (cluster) =>
        campaign({
          ...cluster,
          scenario: "database: connections dropped",
          workflow: "Campaign",
          kills: scale(2, 6),
          inFlight: 3,
          maxRuns: scale(4, 12),
          seed: seed + 20,
          aimMs: 6000,
          model,
          dir: dirFor("db-drops"),
          disturb: DatabaseFaults.dropConnections(cluster.database, {
            times: scale(3, 8),
            every: Duration.seconds(3),
            after: Duration.seconds(4)
          }),
          reportedAs: postgresDown,
          restartIfStuck: true,
          stallAfter: Duration.seconds(scale(20, 60))
        })
      )
    )
  },
  {
    name: "database: Postgres restarted",
    run: Effect.suspend(() => {
      const unavailable = DatabaseFaults.postgresRestartUnavailable()
      if (unavailable !== undefined)
        return Effect.succeed(skipped("database: server restarted", "Postgres", unavailable))
      return withModel(agentModel, (model) =>
        twoRunners("faults_restart", (cluster) =>
          campaign({
            ...cluster,
            scenario: "database: server restarted",
            workflow: "Campaign",
            kills: 0,
            inFlight: 4,
            maxRuns: 4,
            seed: seed + 21,
            aimMs: 6000,
            model,
            dir: dirFor("db-restart"),
            disturb: DatabaseFaults.restartPostgres({ after: Duration.seconds(8) }),
            reportedAs: postgresDown,
            restartIfStuck: true,
            stallAfter: Duration.seconds(scale(20, 60))
          })
        )
      )
    }),
    enabled: restartPostgres
  },
  ...(["cluster", "journal"] as const).flatMap((engine): Array<Scenario> => {
    // The same SQLite faults on both engines: the cluster engine is the default, the journal engine the
    // candidate to replace it (docs/deployment.md, section 4); full run only for the journal engine.
    const suffix = engine === "journal" ? ", journal engine" : ""
    const url = (filename: string) => `sqlite${engine === "journal" ? "+journal" : ""}:${filename}`
    const label = engine === "journal" ? "SQLite, journal engine" : "SQLite, one runner"
    return [
      {
        name: `database: SQLite disk full${suffix}`,
        full: engine === "journal",
        run: Effect.suspend(() => {
          const mount = Path.join(dirFor(`db-disk-full-${engine}`), "mnt")
          const unavailable = DatabaseFaults.mountTmpfs(mount, 64)
          if (unavailable !== undefined) return Effect.succeed(skipped("database: disk full", label, unavailable))
          const filename = Path.join(mount, "agent.db")
          return withModel(agentModel, (model) =>
            campaign({
              scenario: "database: disk full",
              engine: label,
              database: url(filename),
              reader: sqliteReader(filename),
              runners: [{}],
              workflow: "Campaign",
              kills: 0,
              inFlight: scale(3, 5),
              maxRuns: scale(3, 5),
              seed: seed + 22,
              aimMs: 6000,
              model,
              dir: dirFor(`db-disk-full-${engine}`),
              disturb: DatabaseFaults.fillDisk(mount, { after: Duration.seconds(6), hold: Duration.seconds(5) }),
              restartIfStuck: true,
              // Stuck after a database fault means stuck until a restart: no need to wait a minute to see it.
              stallAfter: Duration.seconds(scale(20, 60)),
              reportedAs: /database or disk is full|SQLITE_FULL|ENOSPC|no space left on device/i,
              integrity: true
            })
          ).pipe(
            // Kept for a post-mortem: the tmpfs goes with the unmount.
            Effect.ensuring(
              Effect.sync(() =>
                Fs.cpSync(mount, Path.join(Path.dirname(mount), "after"), {
                  recursive: true,
                  filter: (f) => !f.endsWith("filler")
                })
              ).pipe(Effect.ignore)
            ),
            Effect.ensuring(DatabaseFaults.unmount(mount))
          )
        })
      },
      {
        name: `database: SQLite read-only${suffix}`,
        full: engine === "journal",
        run: Effect.suspend(() => {
          const dir = dirFor(`db-read-only-${engine}`)
          const unavailable = DatabaseFaults.immutableUnavailable(dir)
          if (unavailable !== undefined) return Effect.succeed(skipped("database: read-only", label, unavailable))
          const filename = Path.join(dir, "db", "agent.db")
          Fs.mkdirSync(Path.dirname(filename), { recursive: true })
          return withModel(agentModel, (model) =>
            campaign({
              scenario: "database: read-only",
              engine: label,
              database: url(filename),
              reader: sqliteReader(filename),
              runners: [{}],
              workflow: "Campaign",
              kills: 0,
              inFlight: scale(3, 5),
              maxRuns: scale(3, 5),
              seed: seed + 23,
              aimMs: 6000,
              model,
              dir,
              disturb: DatabaseFaults.makeReadOnly(filename, {
                after: Duration.seconds(6),
                hold: Duration.seconds(5)
              }),
              restartIfStuck: true,
              stallAfter: Duration.seconds(scale(20, 60)),
              reportedAs:
                /readonly|read-only|EPERM|operation not permitted|disk I\/O error|SQLITE_IOERR|SQLITE_READONLY/i,
              integrity: true
            })
          )
        })
      }
    ]
  })
]

const program = Effect.gen(function* () {
  const began = Date.now()
  yield* Console.log(`fault campaign: ${quick ? "quick" : "full"} run, seed ${seed}, work in ${root}`)
  const reports: Array<ScenarioReport> = []
  for (const scenario of scenarios) {
    if (
      scenario.enabled === false ||
      (only !== undefined ? !scenario.name.includes(only) : quick && scenario.full === true)
    )
      continue
    yield* Console.log(`\n== ${scenario.name}`)
    const report = yield* scenario.run
    reports.push(report)
    for (const note of report.notes) yield* Console.log(`   note: ${note}`)
    for (const violation of report.violations.slice(0, 30)) {
      yield* Console.log(`   VIOLATION ${violation.key}: ${violation.invariant}: ${violation.detail}`)
    }
    yield* Console.log(
      `   ${report.runs} runs, ${report.asExpected} as expected, ${report.kills} kills, ${report.violations.length} violations, ${report.seconds.toFixed(0)} s`
    )
  }
  const seconds = (Date.now() - began) / 1000
  yield* Console.log(`\nWhere the kills landed:\n\n${killPointsTable(reports)}`)
  yield* Console.log(`\nFault campaign, seed ${seed}, ${seconds.toFixed(0)} s:\n\n${summaryTable(reports)}`)
  if (!quick && only === undefined) {
    yield* Effect.sync(() => writeResults(reports, seconds))
    yield* Console.log("\nWrote the results to docs/reliability.md")
  }
  const violations = reports.reduce((n, r) => n + r.violations.length, 0)
  if (violations > 0) process.exitCode = 1
})

const version = (name: string): string =>
  JSON.parse(Fs.readFileSync(`node_modules/${name}/package.json`, "utf8")).version

/** Replaces the results section of docs/reliability.md with this run's. */
const writeResults = (reports: ReadonlyArray<ScenarioReport>, seconds: number) => {
  const doc = "docs/reliability.md"
  const [start, end] = ["<!-- faults:results:start -->", "<!-- faults:results:end -->"]
  const text = Fs.readFileSync(doc, "utf8")
  const notes = reports.flatMap((r) => r.notes.map((note) => `- ${r.scenario} (${r.engine}): ${note}`))
  const violations = reports.flatMap((r) =>
    r.violations.map((v) => `- ${r.scenario} (${r.engine}), ${v.key}: ${v.invariant}: ${v.detail}`)
  )
  const section = [
    start,
    `Written by \`npm run faults\` (test/faults/run.ts) on ${new Date().toISOString()}, seed ${seed}, in ${(seconds / 60).toFixed(0)} min.`,
    "",
    `- Machine: ${Os.cpus().length} × ${Os.cpus()[0]?.model ?? "unknown CPU"}, ${(Os.totalmem() / 2 ** 30).toFixed(0)} GiB, ${Os.platform()} ${Os.release()}, shared with other work.`,
    `- Node ${process.versions.node}; effect ${version("effect")}; @anthropic-ai/claude-agent-sdk ${version("@anthropic-ai/claude-agent-sdk")}; Postgres at ${adminUrl.replace(/\/[^/]*$/, "")}.`,
    `- Reproduce: \`npm run faults -- --seed ${seed}\` (the kills' timing depends on the machine; the faults each step gets do not).`,
    "",
    summaryTable(reports),
    "",
    "Where the kills landed: for each kill, where every run in flight was (from its last output event).",
    "",
    killPointsTable(reports),
    "",
    ...(violations.length === 0 ? [] : ["Violations:", "", ...violations, ""]),
    "Notes from the scenarios:",
    "",
    ...notes,
    end
  ].join("\n")
  const from = text.indexOf(start)
  const to = text.indexOf(end)
  Fs.writeFileSync(
    doc,
    from < 0 || to < 0
      ? `${text}\n## Results\n\n${section}\n`
      : text.slice(0, from) + section + text.slice(to + end.length)
  )
}

NodeRuntime.runMain(program.pipe(Effect.provide(Layer.empty), Effect.timeout(Duration.hours(3)), Effect.orDie))
