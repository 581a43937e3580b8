/**
 * Restate: the server from npm (`@restatedev/restate-server`) as a child
 * process on free loopback ports with a temporary data directory, and the
 * workflow served by `@restatedev/restate-sdk` over HTTP/2 from this process.
 * Restate keeps its journal in its own storage, not in Postgres: each
 * `ctx.run` result is sent to the server, appended to its log (Bifrost, on
 * the embedded log server's RocksDB, WAL fsynced) and acknowledged before
 * the handler goes on.
 *
 * The server asks GitHub for its latest release at start, whatever the
 * telemetry setting; with no network here that fails at once and is harmless.
 */
import { type ChildProcess, spawn } from "node:child_process"
import * as Fs from "node:fs"
import * as Http2 from "node:http2"
import { createRequire } from "node:module"
import * as Net from "node:net"
import * as Os from "node:os"
import * as Path from "node:path"
import * as restate from "@restatedev/restate-sdk"
import { Effect } from "effect"
import { exited, freePorts } from "../../test/engine/fixtures/Worker.ts"
import { type Peer, PeerUnavailable, versionOf } from "./Peer.ts"

const Steps = restate.workflow({
  name: "BenchSteps",
  handlers: {
    run: async (ctx: restate.WorkflowContext, steps: number) => {
      let total = 0
      for (let i = 0; i < steps; i++) total += await ctx.run(`step-${i}`, async () => 1)
      return total
    }
  }
})

/** The binary comes from an optional dependency that exists only for linux and darwin on x64 and arm64. */
const binary = Effect.try({
  try: () =>
    createRequire(import.meta.url).resolve(
      `@restatedev/restate-server-${process.platform}-${process.arch}/bin/restate-server`
    ),
  catch: () =>
    new PeerUnavailable({
      reason: `no restate-server binary for ${process.platform}-${process.arch}: @restatedev/restate-server ships one for linux and darwin on x64 and arm64 only`
    })
})

/** SIGTERM, and SIGKILL if it has not exited 10 s later. */
const stop = (child: ChildProcess) =>
  Effect.sync(() => child.kill("SIGTERM")).pipe(
    Effect.andThen(exited(child)),
    Effect.timeout("10 seconds"),
    Effect.catch(() =>
      Effect.andThen(
        Effect.sync(() => child.kill("SIGKILL")),
        exited(child)
      )
    )
  )

/** The end of the server's output, to say why it failed. */
const tailOf = (child: ChildProcess) => {
  let tail = ""
  const keep = (chunk: Buffer) => {
    tail = (tail + chunk.toString()).slice(-2000)
  }
  child.stdout?.on("data", keep)
  child.stderr?.on("data", keep)
  return () => tail
}

const waitReady = (url: string, child: ChildProcess, tail: () => string) =>
  Effect.gen(function* () {
    const deadline = Date.now() + 60_000
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) {
        return yield* Effect.fail(new Error(`restate-server exited (${child.exitCode ?? child.signalCode}): ${tail()}`))
      }
      const ok = yield* Effect.promise(() =>
        fetch(url).then(
          (response) => response.ok,
          () => false
        )
      )
      if (ok) return
      if (Date.now() > deadline) return yield* Effect.fail(new Error(`${url} not ready after 60 s: ${tail()}`))
      yield* Effect.sleep("50 millis")
    }
  })

const post = (url: string, body: unknown) =>
  Effect.tryPromise(async () => {
    const response = await fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body)
    })
    const text = await response.text()
    if (!response.ok) throw new Error(`POST ${url}: ${response.status} ${text}`)
    return JSON.parse(text) as unknown
  })

export const peer: Peer = {
  key: "restate",
  name: `Restate ${versionOf("@restatedev/restate-server")} (SDK ${versionOf("@restatedev/restate-sdk")})`,
  storage: "its own log and RocksDB on local disk, not Postgres",
  postgres: false,
  start: () =>
    Effect.gen(function* () {
      const bin = yield* binary
      const dir = yield* Effect.acquireRelease(
        Effect.sync(() => Fs.mkdtempSync(Path.join(Os.tmpdir(), "bench-restate-"))),
        (made) => Effect.sync(() => Fs.rmSync(made, { recursive: true, force: true }))
      )
      const endpoint = yield* Effect.acquireRelease(
        Effect.callback<Http2.Http2Server, Error>((resume) => {
          const server = Http2.createServer(
            restate.createEndpointHandler({
              services: [Steps],
              // Keep errors; the per-invocation lines would drown the benchmark's output.
              // (RestateLogLevel is declared in the SDK's types but not exported at run time: compare its value.)
              logger: (meta, message, ...rest) => {
                if (`${meta.level}` === "error") console.error("[restate]", message, ...rest)
              }
            })
          )
          server.once("error", (error) => resume(Effect.fail(error)))
          server.listen(0, "127.0.0.1", () => resume(Effect.succeed(server)))
        }),
        (server) =>
          Effect.callback<void>((resume) => {
            server.close(() => resume(Effect.void))
          }).pipe(Effect.timeout("5 seconds"), Effect.ignore)
      )
      const [node, ingress, admin] = yield* freePorts(3)
      const child = yield* Effect.acquireRelease(
        Effect.sync(() =>
          spawn(bin, ["--no-logo", "--base-dir", dir, "--node-name", "bench"], {
            env: {
              ...process.env,
              RESTATE_DISABLE_TELEMETRY: "true",
              RESTATE_LISTEN_MODE: "tcp",
              RESTATE_BIND_ADDRESS: `127.0.0.1:${node}`,
              RESTATE_ADVERTISED_ADDRESS: `http://127.0.0.1:${node}/`,
              RESTATE_INGRESS__BIND_ADDRESS: `127.0.0.1:${ingress}`,
              RESTATE_ADMIN__BIND_ADDRESS: `127.0.0.1:${admin}`,
              RESTATE_LOG_FILTER: "warn",
              RESTATE_LOG_DISABLE_ANSI_CODES: "true"
            },
            stdio: ["ignore", "pipe", "pipe"]
          })
        ),
        stop
      )
      const tail = tailOf(child)
      yield* waitReady(`http://127.0.0.1:${admin}/health`, child, tail)
      yield* waitReady(`http://127.0.0.1:${ingress}/restate/health`, child, tail)
      const port = (endpoint.address() as Net.AddressInfo).port
      yield* post(`http://127.0.0.1:${admin}/deployments`, { uri: `http://127.0.0.1:${port}` })
      return {
        run: (id: string, steps: number) =>
          post(`http://127.0.0.1:${ingress}/BenchSteps/${encodeURIComponent(id)}/run`, steps).pipe(Effect.map(Number))
      }
    })
}
