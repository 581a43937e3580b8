/**
 * `effect-claude-agent cleanup`, run as a user runs it: a child process on a real database.
 */
import { assert, describe, it } from "@effect/vitest"
import { execFile } from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { Effect, Layer } from "effect"
import * as AgentEngine from "../../src/engine/AgentEngine.ts"
import { Greet, unique, workflows } from "../engine/Conformance.ts"

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
