/**
 * One benchmark's samples, and how they read as a line of docs/benchmarks.md.
 */

export interface Measurement {
  readonly group: string
  readonly name: string
  readonly unit: string
  readonly samples: ReadonlyArray<number>
  /** The name of a measurement of the same run to show this one as a ratio of. */
  readonly baseline?: string
  /** The goal: a ratio of the baseline's median, or a bound on this median. */
  readonly target?:
    | { readonly ratio: number; readonly text: string }
    | { readonly below: number; readonly text: string; readonly of?: "median" | "max" }
    | { readonly above: number; readonly text: string }
}

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
