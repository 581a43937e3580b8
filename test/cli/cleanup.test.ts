/**
 * `effect-claude-agent cleanup`, run as a user runs it: a child process on a real database.
 */
import { assert, describe, it } from "@effect/vitest"
import { execFile } from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { DatabaseSync } from "node:sqlite"
import { Effect, Layer, Redacted, Schema } from "effect"
import * as Workflow from "effect/workflow/Workflow"
import * as AgentEngine from "../../src/engine/AgentEngine.ts"
import * as AgentRuntime from "../../src/workflow/AgentRuntime.ts"
import * as AgentWorkflow from "../../src/workflow/AgentWorkflow.ts"
import * as ApprovalToken from "../../src/workflow/ApprovalToken.ts"
import { Greet, unique, workflows } from "../engine/Conformance.ts"

const Steps = Workflow.make("Test/CleanupSteps", {
  payload: { id: Schema.String },
  success: Schema.String,
  idempotencyKey: ({ id }) => id
})

const stepsOn = (filename: string) =>
  AgentWorkflow.toLayer(Steps, ({ id }) =>
    AgentWorkflow.runStep("only", { execute: Effect.succeed(id), success: Schema.String })
  ).pipe(
    Layer.provideMerge(AgentRuntime.layer({ _tag: "Sqlite", filename })),
    Layer.provideMerge(ApprovalToken.ApprovalSecret.layer(Redacted.make("a-test-secret-that-is-long-enough-to-sign")))
  )

const cli = (args: ReadonlyArray<string>) =>
  Effect.callback<{ readonly code: number; readonly stdout: string; readonly stderr: string }>((resume) => {
    const child = execFile(
      process.execPath,
      ["src/cli/main.ts", ...args],
      { timeout: 60_000 },
      (error, stdout, stderr) =>
        resume(Effect.succeed({ code: error === null ? 0 : (child.exitCode ?? 1), stdout, stderr }))
    )
  })

describe("cli cleanup", () => {
  it.live("deletes finished runs from an SQLite engine's database", () =>
    Effect.gen(function* () {
      const filename = Path.join(Fs.mkdtempSync(Path.join(Os.tmpdir(), "cli-cleanup-")), "agent.db")
      yield* Effect.scoped(
        Effect.gen(function* () {
          yield* Effect.forEach([unique("a"), unique("b"), unique("c")], (name) => Greet.execute({ name }))
        }).pipe(Effect.provide(workflows.pipe(Layer.provideMerge(AgentEngine.layerSqlite({ filename })))))
      )

      const result = yield* cli(["cleanup", "--database-url", `sqlite:${filename}`, "--max-count", "1"])
      assert.strictEqual(result.code, 0, result.stderr)
      assert.include(result.stdout, "deleted 2 finished run(s)")
      const again = yield* cli(["cleanup", "--database-url", `sqlite:${filename}`, "--max-count", "1"])
      assert.include(again.stdout, "deleted 0 finished run(s)")
    })
  )

  it.live("deletes the runs' output, registry entries and requests with them", () =>
    Effect.gen(function* () {
      const filename = Path.join(Fs.mkdtempSync(Path.join(Os.tmpdir(), "cli-cleanup-")), "agent.db")
      yield* Effect.scoped(Effect.forEach(["x", "y"], (id) => Steps.execute({ id }))).pipe(
        Effect.provide(stepsOn(filename))
      )
      const count = (table: string) => {
        const db = new DatabaseSync(filename)
        const row = db.prepare(`SELECT COUNT(*) AS n FROM ${table}`).get() as { n: number }
        db.close()
        return row.n
      }
      assert.strictEqual(count("agent_runs"), 2)
      assert.isAbove(count("agent_output_events"), 0)

      const result = yield* cli(["cleanup", "--database-url", `sqlite:${filename}`, "--max-count", "0"])
      assert.include(result.stdout, "deleted 2 finished run(s)", result.stderr)
      for (const table of [
        "agent_runs",
        "agent_run_usage",
        "agent_output_events",
        "agent_output_runs",
        "agent_waits"
      ]) {
        assert.strictEqual(count(table), 0, table)
      }
    })
  )

  it.live.each([
    { args: ["cleanup"], says: "needs --max-age, --max-count or both" },
    { args: ["cleanup", "--max-age", "soon"], says: "max-age must be a duration" },
    { args: ["cleanup", "--max-count", "1", "--database-url", "mysql://x"], says: "sqlite:<path>" }
  ])("refuses $args with a reason", ({ args, says }) =>
    Effect.gen(function* () {
      const result = yield* cli(args)
      assert.notStrictEqual(result.code, 0)
      assert.include(result.stdout + result.stderr, says)
    })
  )
})
