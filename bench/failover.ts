/**
 * Failover: two runner processes on one Postgres; the one running a workflow
 * is SIGKILLed and the other finishes the run. Measured from the kill to the
 * survivor reporting the result (its poll adds up to 50 ms).
 */
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { Effect } from "effect"
import { failover } from "../test/engine/fixtures/Worker.ts"
import { createDatabase, dropDatabase } from "../test/engine/TestDatabase.ts"
import type { Measurement } from "./Measurement.ts"

export const run = (trials: number) =>
  Effect.gen(function*() {
    const url = yield* Effect.promise(() => createDatabase("bench_failover"))
    const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "bench-failover-"))
    const samples: Array<number> = []
    for (let i = 0; i < trials; i++) {
      const { millis, outcome } = yield* failover({ url, log: Path.join(dir, `${i}.log`), id: `failover-${i}` })
      if (JSON.stringify(outcome) !== JSON.stringify({ ok: "first done, second done" })) {
        return yield* Effect.die(new Error(`failover trial ${i} ended with ${JSON.stringify(outcome)}`))
      }
      samples.push(millis)
    }
    yield* Effect.promise(() => dropDatabase(url))
    return [{
      group: "Engine: postgres, two runners",
      name: "failover: SIGKILL of the runner to the run finishing on the other",
      unit: "ms",
      samples,
      // Every failover counts: a user waits for the worst one.
      target: { below: 5000, text: "failover < 5 s", of: "max" }
    }] satisfies ReadonlyArray<Measurement>
  })
