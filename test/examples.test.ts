/**
 * The examples run as a user runs them: as child processes, on the scripted model.
 */
import { assert, describe, it } from "@effect/vitest"
import { execFile } from "node:child_process"
import { Effect } from "effect"

const runExample = (file: string, args: ReadonlyArray<string> = []) =>
  Effect.callback<{ readonly code: number | null; readonly stdout: string; readonly stderr: string }>((resume) => {
    const env = { ...process.env }
    delete env.ANTHROPIC_API_KEY
    delete env.ANTHROPIC_BASE_URL
    const child = execFile(process.execPath, [file, ...args], { env, timeout: 60_000 }, (error, stdout, stderr) =>
      resume(Effect.succeed({ code: error === null ? 0 : (child.exitCode ?? 1), stdout, stderr }))
    )
  })

describe("examples", () => {
  it.live("query.ts streams an answer from the scripted model and exits 0", () =>
    Effect.gen(function* () {
      const { code, stdout, stderr } = yield* runExample("examples/query.ts", ["Why durable?"])
      assert.strictEqual(code, 0, stderr)
      assert.include(stdout, "using the built-in scripted model")
      assert.include(stdout, "> Why durable?")
      assert.include(stdout, "A durable workflow records each step once")
      assert.match(stdout, /1 turn\(s\) · 24 in \/ 38 out tokens/)
    })
  )
})
