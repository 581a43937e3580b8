/**
 * What a scenario reports, and the summary table of a campaign.
 */
import type { Violation } from "./Invariants.ts"

export interface ScenarioReport {
  readonly scenario: string
  readonly engine: string
  readonly runs: number
  readonly kills: number
  /** Faults injected, by kind (kills included). */
  readonly faults: Readonly<Record<string, number>>
  /** Runs that reached their expected end. */
  readonly asExpected: number
  readonly violations: ReadonlyArray<Violation>
  readonly seconds: number
  /** For each phase, how many (kill, run in flight) pairs found a run there. */
  readonly killPoints: Readonly<Record<string, number>>
  /** Observations that are not violations: errors the runners logged, exits they made on their own. */
  readonly notes: ReadonlyArray<string>
  /** Runs stuck after a database fault that ended once their runners were restarted. */
  readonly recoveredByRestart?: number
  /** Set when the scenario could not run here (e.g. no permission to mount a tmpfs). */
  readonly skipped?: string
}

// When each fault counted in a record was injected: a step may re-run once per fault.
const injectedAt = new WeakMap<Record<string, number>, Array<number>>()

export const count = (record: Record<string, number>, key: string, by = 1) => {
  record[key] = (record[key] ?? 0) + by
  const times = injectedAt.get(record) ?? []
  for (let i = 0; i < by; i++) times.push(Date.now())
  injectedAt.set(record, times)
}

/** The times (epoch ms) of the faults counted in `record`, in order. */
export const faultTimes = (record: Record<string, number>): ReadonlyArray<number> => injectedAt.get(record) ?? []

const total = (faults: Readonly<Record<string, number>>) => Object.values(faults).reduce((a, b) => a + b, 0)

const describeFaults = (faults: Readonly<Record<string, number>>) =>
  Object.entries(faults)
    .filter(([, n]) => n > 0)
    .map(([kind, n]) => `${kind} ${n}`)
    .join(", ")

/** The summary table, in Markdown; its last line is `invariant violations: N`. */
export const summaryTable = (reports: ReadonlyArray<ScenarioReport>): string => {
  const lines = [
    "| scenario | engine | runs | as expected | needed a restart | kills | faults injected | violations | time |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
  ]
  for (const r of reports) {
    if (r.skipped !== undefined) {
      lines.push(`| ${r.scenario} | ${r.engine} | – | – | – | – | could not run: ${r.skipped} | – | – |`)
      continue
    }
    lines.push(
      `| ${r.scenario} | ${r.engine} | ${r.runs} | ${r.asExpected} | ${r.recoveredByRestart ?? 0} | ${r.kills} | ${total(r.faults)} (${describeFaults(r.faults)}) | ${r.violations.length} | ${r.seconds.toFixed(0)} s |`
    )
  }
  const sum = (f: (r: ScenarioReport) => number) => reports.reduce((a, r) => a + (r.skipped ? 0 : f(r)), 0)
  const faults = sum((r) => total(r.faults))
  const violations = sum((r) => r.violations.length)
  lines.push(
    `| **total** |  | ${sum((r) => r.runs)} | ${sum((r) => r.asExpected)} | ${sum((r) => r.recoveredByRestart ?? 0)} | ${sum((r) => r.kills)} | ${faults} | ${violations} | ${sum((r) => r.seconds).toFixed(0)} s |`,
    "",
    `invariant violations: ${violations}`
  )
  return lines.join("\n")
}

/** Where the kills landed: for each phase, the (kill, run) pairs, over all scenarios. */
export const killPointsTable = (reports: ReadonlyArray<ScenarioReport>): string => {
  const phases = new Map<string, number>()
  for (const r of reports)
    for (const [phase, n] of Object.entries(r.killPoints)) phases.set(phase, (phases.get(phase) ?? 0) + n)
  const lines = ["| a run was … when its runner was killed | times |", "| --- | --- |"]
  for (const [phase, n] of [...phases].toSorted((a, b) => b[1] - a[1])) lines.push(`| ${phase} | ${n} |`)
  return lines.join("\n")
}
