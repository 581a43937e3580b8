/**
 * One benchmark's samples, and how they read as a line of docs/benchmarks.md.
 */

/** The goal: a ratio of the baseline's median, or a bound on this median. */
export type Target =
  | { readonly ratio: number; readonly text: string }
  | { readonly below: number; readonly text: string; readonly of?: "median" | "max" }
  | { readonly above: number; readonly text: string }

export interface Measurement {
  readonly group: string
  readonly name: string
  readonly unit: string
  readonly samples: ReadonlyArray<number>
  /** The name of a measurement of the same run to show this one as a ratio of. */
  readonly baseline?: string
  readonly target?: Target
  /**
   * Why there are no samples. `expected` marks a case documented as unable to
   * run on some machines (a peer with no binary for this platform); any other
   * missing number fails the run.
   */
  readonly couldNotRun?: { readonly reason: string; readonly expected: boolean }
}

/** Whether the benchmark produced a number. */
export const measured = (m: Measurement): boolean => m.samples.length > 0 && m.samples.every(Number.isFinite)

export const summary = (samples: ReadonlyArray<number>) => {
  const sorted = samples.toSorted((a, b) => a - b)
  const median =
    sorted.length % 2 === 1
      ? sorted[(sorted.length - 1) / 2]!
      : (sorted[sorted.length / 2 - 1]! + sorted[sorted.length / 2]!) / 2
  return { min: sorted[0]!, median, max: sorted.at(-1)!, n: sorted.length }
}

/** The `p`-th percentile (0–100) of the samples, nearest-rank. */
export const percentile = (samples: ReadonlyArray<number>, p: number): number => {
  const sorted = samples.toSorted((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!
}

/** A figure with the precision worth reading. */
export const format = (value: number) =>
  Math.abs(value) >= 100 ? value.toFixed(0) : Math.abs(value) >= 1 ? value.toFixed(1) : value.toFixed(3)

/**
 * "<target>: met", or by how much it was missed. `ratio` is this median over
 * the baseline's, for a ratio target; without one a ratio target is not judged.
 */
export const verdict = (m: Measurement, ratio: number | undefined): string => {
  if (m.target === undefined || !measured(m)) return ""
  const s = summary(m.samples)
  if ("below" in m.target) {
    const judged = m.target.of === "max" ? s.max : s.median
    const which = m.target.of === "max" ? " (every run)" : ""
    return `${m.target.text}${which}: ${
      judged < m.target.below ? "met" : `missed by ${((judged / m.target.below - 1) * 100).toFixed(1)} %`
    }`
  }
  if ("above" in m.target) {
    return `${m.target.text}: ${s.median >= m.target.above ? "met" : `missed by ${((1 - s.median / m.target.above) * 100).toFixed(1)} %`}`
  }
  if (ratio === undefined) return ""
  return `${m.target.text}: ${ratio <= m.target.ratio ? "met" : `missed by ${((ratio / m.target.ratio - 1) * 100).toFixed(1)} %`}`
}
