/**
 * Failover: two runner processes on one Postgres; the one running a workflow
 * is SIGKILLed and the other finishes the run. Measured from the kill to the
 * survivor reporting the result (its poll adds up to 50 ms), over trials in
 * which the run was still on the killed runner.
 */
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { Effect } from "effect"
import { failover } from "../test/engine/fixtures/Worker.ts"
import { createDatabase, dropDatabase } from "../test/engine/TestDatabase.ts"
import type { Measurement } from "./Measurement.ts"

export const run = (trials: number) =>
  Effect.gen(function* () {
    const url = yield* Effect.promise(() => createDatabase("bench_failover"))
    const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "bench-failover-"))
    const samples: Array<number> = []
    // Only real takeovers count: a run that rebalancing had already moved to
    // the survivor before the kill measures nothing.
    for (let attempt = 0; samples.length < trials; attempt++) {
      if (attempt >= trials * 4)
        return yield* Effect.die(new Error(`only ${samples.length} takeovers in ${attempt} attempts`))
      const { millis, outcome, takeover } = yield* failover({
        url,
        log: Path.join(dir, `${attempt}.log`),
        id: `failover-${attempt}`
      })
      if (JSON.stringify(outcome) !== JSON.stringify({ ok: "first done, second done" })) {
        return yield* Effect.die(new Error(`failover attempt ${attempt} ended with ${JSON.stringify(outcome)}`))
      }
      if (takeover) samples.push(millis)
    }
    yield* Effect.promise(() => dropDatabase(url))
    return [
      {
        group: "Engine: postgres, two runners",
        name: "failover: SIGKILL of the runner to the run finishing on the other",
        unit: "ms",
        samples,
        // Every failover counts: a user waits for the worst one.
        target: { below: 5000, text: "failover < 5 s", of: "max" }
      }
    ] satisfies ReadonlyArray<Measurement>
  })
