/**
 * docs/api.md is runnable: its `sh` blocks, in order, in one bash with
 * `set -euo pipefail`, against a real server whose data directory is
 * `./data` of the directory they run in, as for a user who ran `npm start`.
 */
import { assert, describe, it } from "@effect/vitest"
import { execFile } from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { Effect } from "effect"
import { startServer, stopServer } from "../server/TestServer.ts"

const doc = Path.resolve(import.meta.dirname, "../../docs/api.md")

/** The contents of the ```sh blocks. */
const shellBlocks = (markdown: string) => [...markdown.matchAll(/^```sh\n([\s\S]*?)^```$/gm)].map((match) => match[1]!)

describe("docs/api.md", () => {
  it.live(
    "every curl example runs and says what the page says",
    () =>
      Effect.gen(function* () {
        const blocks = shellBlocks(Fs.readFileSync(doc, "utf8"))
        assert.isAtLeast(blocks.length, 8)
        const cwd = Fs.mkdtempSync(Path.join(Os.tmpdir(), "api-doc-"))
        const server = yield* startServer(Path.join(cwd, "data"))
        const result = yield* Effect.callback<{ code: number; stdout: string; stderr: string }>((resume) => {
          const child = execFile(
            "bash",
            ["-c", ["set -euo pipefail", ...blocks].join("\n")],
            { cwd, env: { PATH: process.env.PATH, AGENT_URL: server.url }, timeout: 120_000 },
            (error, stdout, stderr) =>
              resume(Effect.succeed({ code: error === null ? 0 : (child.exitCode ?? 1), stdout, stderr }))
          )
        }).pipe(Effect.ensuring(Effect.ignore(stopServer(server))))
        assert.strictEqual(result.code, 0, `${result.stderr}\n${result.stdout}`)
        const out = result.stdout
        assert.include(out, '{"status":"ok","database":"ok"}')
        assert.include(out, '"PlanAndAct"')
        assert.include(out, '"status": "waiting"')
        assert.include(out, '"step":"review"')
        assert.include(out, "event: end")
        assert.include(out, '"status":"completed"')
        assert.include(out, 'Read what \\"Tidy the README\\" asks for')
        assert.include(out, '"reason":"run_finished"')
        assert.include(out, '"_tag": "InvalidInput"')
        assert.include(out, '"_tag":"NotFound"')
        assert.include(out, "401")
        assert.include(out, '"workflow": "PlanAndAct"')
      }),
    { timeout: 180_000 }
  )
})
