/**
 * The `effect-claude-agent` commands that talk to a server, run as a user
 * runs them: child processes of `src/cli/main.ts` against a real server
 * process on loopback.
 */
import { assert, layer } from "@effect/vitest"
import { execFile } from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { Effect, Fiber } from "effect"
import {
  dataDir,
  ended,
  eventually,
  request,
  startServer,
  stopServer,
  TestServer,
  type Running,
  waitingToken
} from "../server/TestServer.ts"

const main = Path.resolve(import.meta.dirname, "../../src/cli/main.ts")

interface Result {
  readonly code: number
  readonly stdout: string
  readonly stderr: string
}

/** Runs the CLI in an empty directory, with only the environment given (no token file to find). */
const cli = (args: ReadonlyArray<string>, env: Record<string, string> = {}) =>
  Effect.callback<Result>((resume) => {
    const cwd = Fs.mkdtempSync(Path.join(Os.tmpdir(), "cli-cwd-"))
    const base: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: cwd, ...env }
    const child = execFile(
      process.execPath,
      [main, ...args],
      { cwd, env: base, timeout: 90_000 },
      (error, stdout, stderr) =>
        resume(Effect.succeed({ code: error === null ? 0 : (child.exitCode ?? 1), stdout, stderr }))
    )
  })

/** The CLI pointed at the test server, by flags. */
const against = (server: Running, args: ReadonlyArray<string>, env: Record<string, string> = {}) =>
  cli([...args, "--url", server.url, "--token", server.token], env)

const start = (server: Running, task: string) =>
  Effect.map(
    request(server, "/v1/runs", { method: "POST", json: { workflow: "PlanAndAct", input: { task } } }),
    (r) => r.body.runId as string
  )

layer(TestServer.layer(), { timeout: 180_000, excludeTestServices: true })("cli against a server", (it) => {
  it.effect(
    "run --follow shows the plan, the request with its token, the decision and the outcome live",
    () =>
      Effect.gen(function* () {
        const server = yield* TestServer
        const input = Path.join(Fs.mkdtempSync(Path.join(Os.tmpdir(), "cli-input-")), "input.json")
        Fs.writeFileSync(input, JSON.stringify({ task: "Follow me" }))
        // By environment this time: AGENT_URL and AGENT_API_TOKEN.
        const follower = yield* Effect.forkChild(
          cli(["run", "PlanAndAct", "--input", `@${input}`, "--follow"], {
            AGENT_URL: server.url,
            AGENT_API_TOKEN: server.token
          })
        )
        const waiting = yield* eventually(
          Effect.map(against(server, ["list", "--status", "waiting", "--json"]), (r) =>
            (JSON.parse(r.stdout).runs as Array<{ runId: string; input: { task: string } }>).find(
              (run) => run.input.task === "Follow me"
            )
          ),
          "the followed run to wait"
        )
        const status = yield* against(server, ["status", waiting.runId])
        assert.strictEqual(status.code, 0, status.stderr)
        assert.include(status.stdout, "status    waiting")
        const token = /effect-claude-agent approve (\S+)/.exec(status.stdout)?.[1]
        assert.isDefined(token, "status shows the command that approves, with the token")

        const approved = yield* against(server, ["approve", token!, "--comment", "Go ahead"])
        assert.strictEqual(approved.code, 0, approved.stderr)
        assert.include(approved.stdout, `approved "review" of run ${waiting.runId}`)

        const followed = yield* Fiber.join(follower)
        assert.strictEqual(followed.code, 0, followed.stderr)
        const out = followed.stdout
        assert.include(out, `run ${waiting.runId} started`)
        assert.include(out, 'Read what "Follow me" asks for')
        assert.include(out, "waiting for approval")
        assert.include(out, `effect-claude-agent approve ${token}`)
        assert.include(out, "approved (Go ahead)")
        assert.include(out, "Done. I followed the approved plan")
        assert.include(out, `run ${waiting.runId} completed`)
        assert.isBelow(out.indexOf("waiting for approval"), out.indexOf("approved (Go ahead)"))
        assert.notInclude(out, "\u001b[", "no colour when stdout is not a terminal")
      }),
    { timeout: 120_000 }
  )

  it.effect(
    "tail --from N --json replays from the offset and ends with the run; colour on request",
    () =>
      Effect.gen(function* () {
        const server = yield* TestServer
        const runId = yield* start(server, "Tail me")
        yield* request(server, `/v1/approvals/${yield* waitingToken(server, runId)}`, {
          method: "POST",
          json: { approved: true }
        })
        yield* ended(server, runId)
        const tail = yield* against(server, ["tail", runId, "--from", "4", "--json"])
        assert.strictEqual(tail.code, 0, tail.stderr)
        const lines = tail.stdout
          .trim()
          .split("\n")
          .map((l) => JSON.parse(l))
        const events = lines.slice(0, -1) as Array<{ sequence: number }>
        assert.deepStrictEqual(
          events.map((e) => e.sequence),
          events.map((_, i) => i + 4)
        )
        assert.deepStrictEqual(lines[lines.length - 1], { end: { runId, status: "completed" } })

        const coloured = yield* against(server, ["tail", runId], { FORCE_COLOR: "1" })
        assert.strictEqual(coloured.code, 0, coloured.stderr)
        assert.include(coloured.stdout, "\u001b[36m", "agent text in cyan")
        assert.include(coloured.stdout, "\u001b[35m", "the request in magenta")
        assert.include(coloured.stdout, "\u001b[32m", "the approval and the completed run in green")
      }),
    { timeout: 120_000 }
  )

  it.effect(
    "list, status, interrupt and resume, with --json",
    () =>
      Effect.gen(function* () {
        const server = yield* TestServer
        const runId = yield* start(server, "Interrupt me")
        yield* waitingToken(server, runId)
        const list = yield* against(server, ["list", "--json", "--limit", "100"])
        assert.strictEqual(list.code, 0, list.stderr)
        assert.include(
          JSON.parse(list.stdout).runs.map((r: { runId: string }) => r.runId),
          runId
        )
        const human = yield* against(server, ["list"])
        assert.match(human.stdout, new RegExp(`${runId}\\s+PlanAndAct\\s+waiting`))

        const interrupted = yield* against(server, ["interrupt", runId, "--json"])
        assert.strictEqual(interrupted.code, 0, interrupted.stderr)
        assert.deepStrictEqual(JSON.parse(interrupted.stdout), { runId })
        assert.strictEqual((yield* ended(server, runId)).status, "interrupted")
        const status = yield* against(server, ["status", runId, "--json"])
        assert.strictEqual(JSON.parse(status.stdout).status, "interrupted")

        const resumed = yield* against(server, ["resume", runId])
        assert.strictEqual(resumed.code, 1)
        assert.strictEqual(resumed.stderr.trim(), `effect-claude-agent: Run ${runId} has ended (interrupted)`)
      }),
    { timeout: 120_000 }
  )

  it.effect(
    "run without --follow prints the run id; reject and input take their tokens",
    () =>
      Effect.gen(function* () {
        const server = yield* TestServer
        const started = yield* against(server, ["run", "PlanAndAct", "--input", '{"task":"Reject me"}', "--json"])
        assert.strictEqual(started.code, 0, started.stderr)
        const { runId } = JSON.parse(started.stdout) as { runId: string }
        const token = yield* waitingToken(server, runId)
        const asInput = yield* against(server, ["input", token, "an answer"])
        assert.strictEqual(asInput.code, 1)
        assert.include(asInput.stderr, "The token is not valid")
        const rejected = yield* against(server, ["approve", token, "--reject", "--comment", "Too risky"])
        assert.strictEqual(rejected.code, 0, rejected.stderr)
        assert.include(rejected.stdout, "rejected")
        assert.deepInclude((yield* ended(server, runId)).result, { approved: false, comment: "Too risky" })
      }),
    { timeout: 120_000 }
  )

  it.effect(
    "exits 1 with a one-line reason on every error",
    () =>
      Effect.gen(function* () {
        const server = yield* TestServer
        const cases: ReadonlyArray<readonly [ReadonlyArray<string>, Record<string, string>, string]> = [
          [["status", "no-such-run", "--url", server.url, "--token", server.token], {}, "No run no-such-run"],
          [["run", "Nope", "--url", server.url, "--token", server.token], {}, 'No workflow named "Nope"'],
          [
            ["run", "PlanAndAct", "--input", "{not json", "--url", server.url, "--token", server.token],
            {},
            "--input must be JSON"
          ],
          [
            ["run", "PlanAndAct", "--input", '{"task":1}', "--url", server.url, "--token", server.token],
            {},
            "input.task"
          ],
          [["list", "--url", server.url, "--token", "wrong"], {}, "not this server's API token"],
          [["list", "--url", server.url], {}, "no API token"],
          [
            ["list", "--url", "http://127.0.0.1:1", "--token", "x"],
            {},
            "cannot reach the server at http://127.0.0.1:1"
          ],
          [["approve", "forged", "--url", server.url, "--token", server.token], {}, "The token is not valid"]
        ]
        for (const [args, env, says] of cases) {
          const result = yield* cli(args, env)
          assert.strictEqual(result.code, 1, `${args.join(" ")}: ${result.stdout}`)
          const lines = result.stderr.trim().split("\n")
          assert.lengthOf(lines, 1, `one line for ${args.join(" ")}: ${result.stderr}`)
          assert.include(lines[0], says)
        }
      }),
    { timeout: 120_000 }
  )

  it.effect(
    "serve starts the server, and SIGTERM stops it with exit code 0",
    () =>
      Effect.gen(function* () {
        const server = yield* startServer(dataDir(), {}, { script: main, args: ["serve"] })
        assert.match(server.stdout(), /engine: {4}SQLite \S+agent\.db, journal engine/)
        assert.include(server.stdout(), "the built-in scripted model")
        const health = yield* request(server, "/health")
        assert.strictEqual(health.status, 200)
        assert.strictEqual(yield* stopServer(server, "SIGTERM"), 0)
      }),
    { timeout: 120_000 }
  )
})
