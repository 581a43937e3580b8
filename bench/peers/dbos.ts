/**
 * DBOS Transact (`@dbos-inc/dbos-sdk`), launched in this process on a
 * database of its own. Its steps are `DBOS.runStep` calls in a workflow
 * registered with `DBOS.registerWorkflow`; each step looks up an earlier
 * result of itself (one SELECT on `operation_outputs`), runs, and records its
 * output as one row of `operation_outputs` in one transaction.
 */
import { DBOS } from "@dbos-inc/dbos-sdk"
import { Effect } from "effect"
import { type Peer, versionOf } from "./Peer.ts"

export const peer: Peer = {
  key: "dbos",
  name: `DBOS Transact ${versionOf("@dbos-inc/dbos-sdk")}`,
  storage: "Postgres: a row of operation_outputs in its system database",
  postgres: true,
  start: (url) =>
    Effect.gen(function* () {
      // DBOS is one global per process: register before launch, deregister at shutdown.
      const workflow = yield* Effect.acquireRelease(
        Effect.sync(() => {
          const registered = DBOS.registerWorkflow(
            async (steps: number) => {
              let total = 0
              for (let i = 0; i < steps; i++) total += await DBOS.runStep(async () => 1, { name: `step-${i}` })
              return total
            },
            { name: "benchSteps" }
          )
          DBOS.setConfig({ name: "bench", systemDatabaseUrl: url, logLevel: "error" })
          return registered
        }),
        () => Effect.promise(() => DBOS.shutdown({ deregister: true }))
      )
      yield* Effect.tryPromise(() => DBOS.launch())
      return {
        run: (id: string, steps: number) =>
          Effect.tryPromise(async () => (await DBOS.startWorkflow(workflow, { workflowID: id })(steps)).getResult())
      }
    })
}
