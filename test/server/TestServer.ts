/**
 * The agent server as a user starts it: `src/server/main.ts` in a child
 * process on a free loopback port, with a private data directory and the
 * built-in scripted model (no ANTHROPIC_* variables reach it). Plus the
 * clients the tests talk to it with: `fetch`, and the Effect-derived typed
 * client of the API.
 */
import type { ChildProcess } from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { Context, Effect, Layer } from "effect"
import { FetchHttpClient, HttpClient, HttpClientRequest } from "effect/http"
import { HttpApiClient, HttpApiMiddleware } from "effect/http-api"
import { RpcClient, RpcSerialization } from "effect/rpc"
import * as WorkflowProxy from "effect/workflow/WorkflowProxy"
import { PlanAndAct } from "../../examples/PlanAndAct.ts"
import * as AgentApi from "../../src/api/AgentApi.ts"
import { exited, lineFrom, start } from "../engine/fixtures/Worker.ts"

export const main = Path.resolve(import.meta.dirname, "../../src/server/main.ts")

export interface Running {
  readonly child: ChildProcess
  readonly url: string
  readonly token: string
  readonly dataDir: string
  /** Everything the server printed so far. */
  readonly stdout: () => string
  readonly stderr: () => string
}

/** A fresh data directory. */
export const dataDir = () => Fs.mkdtempSync(Path.join(Os.tmpdir(), "agent-server-"))

/** The environment of a server child: no real API, a free port, the data directory. */
export const serverEnv = (dir: string, extra: Record<string, string> = {}): NodeJS.ProcessEnv => {
  const env: NodeJS.ProcessEnv = { ...process.env, AGENT_PORT: "0", AGENT_DATA_DIR: dir, ...extra }
  delete env.ANTHROPIC_API_KEY
  delete env.ANTHROPIC_BASE_URL
  delete env.AGENT_API_TOKEN
  delete env.AGENT_APPROVAL_SECRET
  delete env.AGENT_DATABASE_URL
  return { ...env, ...extra }
}

/** Starts a server (by default `main.ts`; `command` runs another script, e.g. the CLI's `serve`) and waits until it listens. */
export const startServer = (
  dir: string,
  extra: Record<string, string> = {},
  command: { readonly script: string; readonly args: ReadonlyArray<string> } = { script: main, args: [] }
) =>
  Effect.gen(function* () {
    const child = start(command.args, command.script, serverEnv(dir, extra))
    let out = ""
    let err = ""
    child.stdout!.on("data", (chunk: Buffer) => {
      out += chunk.toString()
    })
    child.stderr!.on("data", (chunk: Buffer) => {
      err += chunk.toString()
    })
    const url = (yield* lineFrom(child, "effect-claude-agent server listening on ")).trim()
    const token = extra.AGENT_API_TOKEN ?? Fs.readFileSync(Path.join(dir, "api-token"), "utf8").trim()
    return { child, url, token, dataDir: dir, stdout: () => out, stderr: () => err } satisfies Running
  })

/** Sends `signal` and resolves with the exit code; a server still alive 20 s later gets SIGKILL. */
export const stopServer = (server: Running, signal: NodeJS.Signals = "SIGTERM") =>
  Effect.gen(function* () {
    if (server.child.exitCode !== null) return server.child.exitCode
    server.child.kill(signal)
    yield* exited(server.child).pipe(
      Effect.timeoutOrElse({
        duration: "20 seconds",
        orElse: () =>
          Effect.andThen(
            Effect.sync(() => server.child.kill("SIGKILL")),
            exited(server.child)
          )
      })
    )
    return server.child.exitCode
  })

/** The server, for a whole test file. */
export class TestServer extends Context.Service<TestServer, Running>()("test/TestServer") {
  static readonly layer = (extra: Record<string, string> = {}) =>
    Layer.effect(TestServer)(
      Effect.acquireRelease(Effect.orDie(startServer(dataDir(), extra)), (server) =>
        Effect.asVoid(stopServer(server, "SIGKILL"))
      )
    )
}

/** `fetch` with the server's token (unless `headers` says otherwise). */
export const request = (server: Running, path: string, init: RequestInit & { readonly json?: unknown } = {}) =>
  Effect.promise(async () => {
    const headers = new Headers(init.headers)
    if (!headers.has("authorization")) headers.set("authorization", `Bearer ${server.token}`)
    if (init.json !== undefined) headers.set("content-type", "application/json")
    const response = await fetch(server.url + path, {
      ...init,
      headers,
      ...(init.json !== undefined ? { body: JSON.stringify(init.json) } : {})
    })
    const text = await response.text()
    let body: any = text
    try {
      body = JSON.parse(text)
    } catch {
      // not JSON: keep the text
    }
    return { status: response.status, headers: response.headers, body, text }
  })

/** The API with the example's typed endpoints, as the typed client sees it. */
export const Api = AgentApi.withWorkflows([PlanAndAct])

/** The typed client, authenticated with `token`. */
export const typedClient = (server: Running, token = server.token) =>
  HttpApiClient.make(Api, { baseUrl: server.url }).pipe(
    Effect.provide(
      HttpApiMiddleware.layerClient(AgentApi.Authorization, ({ next, request: outgoing }) =>
        next(HttpClientRequest.bearerToken(outgoing, token))
      )
    ),
    Effect.provide(FetchHttpClient.layer)
  )

/** The RPC client of the example's workflows (`WorkflowProxy.toRpcGroup`), authenticated with `token`. */
export const rpcClient = (server: Running, token = server.token) =>
  RpcClient.make(WorkflowProxy.toRpcGroup([PlanAndAct])).pipe(
    Effect.provide(
      RpcClient.layerProtocolHttp({
        url: `${server.url}/v1/rpc`,
        transformClient: HttpClient.mapRequest(HttpClientRequest.bearerToken(token))
      }).pipe(Layer.provide([RpcSerialization.layerNdjson, FetchHttpClient.layer]))
    )
  )

export interface Frame {
  readonly id?: string
  readonly event?: string
  readonly data?: string
  readonly retry?: number
}

/** Reads an SSE response to its end with `fetch`, frame by frame. */
export const readSse = (server: Running, path: string, headers: Record<string, string> = {}) =>
  Effect.promise(async () => {
    const response = await fetch(server.url + path, {
      headers: { authorization: `Bearer ${server.token}`, ...headers }
    })
    const text = await response.text()
    const frames: Array<Frame> = []
    for (const block of text.split("\n\n")) {
      const frame: Record<string, string | number> = {}
      for (const line of block.split("\n")) {
        const colon = line.indexOf(":")
        if (colon <= 0) continue
        const field = line.slice(0, colon)
        const value = line.slice(colon + 1).trimStart()
        frame[field] = field === "retry" ? Number(value) : value
      }
      if (Object.keys(frame).length > 0) frames.push(frame as Frame)
    }
    return { status: response.status, contentType: response.headers.get("content-type"), frames }
  })

/** Polls until `check` returns a value. */
export const eventually = <A, E, R>(effect: Effect.Effect<A | undefined, E, R>, what: string, timeoutMs = 60_000) =>
  Effect.gen(function* () {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const value = yield* effect
      if (value !== undefined) return value
      if (Date.now() > deadline) return yield* Effect.die(new Error(`timed out waiting for ${what}`))
      yield* Effect.sleep("100 millis")
    }
  })

/** The token of the request a run waits for, once it waits. */
export const waitingToken = (server: Running, runId: string) =>
  eventually(
    Effect.map(request(server, `/v1/runs/${runId}`), (r) =>
      r.body.status === "waiting" ? (r.body.waitingFor[0].token as string) : undefined
    ),
    `run ${runId} to wait for a person`
  )

/** The run, once it has ended. */
export const ended = (server: Running, runId: string) =>
  eventually(
    Effect.map(request(server, `/v1/runs/${runId}`), (r) =>
      ["completed", "failed", "interrupted"].includes(r.body.status) ? r.body : undefined
    ),
    `run ${runId} to end`
  )
