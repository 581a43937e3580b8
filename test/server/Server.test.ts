/**
 * The HTTP API against a real server process on loopback: the example run end
 * to end with its output followed live, late attach, every client mistake,
 * authentication, and the typed endpoints derived from the workflow. On the
 * default engine and on the journal engine.
 */
import { assert, layer } from "@effect/vitest"
import * as Fs from "node:fs"
import * as Path from "node:path"
import { Effect, Fiber, Stream } from "effect"
import type * as Sse from "effect/encoding/Sse"
import { dataDir, ended, readSse, request, rpcClient, TestServer, typedClient, waitingToken } from "./TestServer.ts"

// The default engine, and the journal engine that may replace it (docs/deployment.md, section 4).
const engines = [
  ["the cluster engine (the default)", {}],
  ["the journal engine", { AGENT_DATABASE_URL: `sqlite+journal:${Path.join(dataDir(), "agent.db")}` }]
] as const

for (const [engine, env] of engines) {
  layer(TestServer.layer(env), { timeout: 120_000, excludeTestServices: true })(`agent server on ${engine}`, (it) => {
    it.effect(
      "runs PlanAndAct end to end: execute, wait, approve, complete, with the output followed live",
      () =>
        Effect.gen(function* () {
          const server = yield* TestServer
          const client = yield* typedClient(server)
          const { runId } = yield* client.runs.create({
            payload: { workflow: "PlanAndAct", input: { task: "Tidy the README" } }
          })

          // Follow from the first event, with the typed client, before anything is decided.
          const stream = yield* client.runs.events({ params: { runId }, query: {}, headers: {} })
          assert.isTrue(Stream.isStream(stream), "the default is an event stream")
          const follower = yield* Effect.forkChild(
            Stream.runCollect(stream as Stream.Stream<Sse.EventEncoded, unknown>).pipe(Effect.orDie)
          )

          const token = yield* waitingToken(server, runId)
          const waiting = yield* client.runs.get({ params: { runId } })
          assert.strictEqual(waiting.status, "waiting")
          assert.deepStrictEqual(
            waiting.waitingFor.map((w) => [w.kind, w.step]),
            [["approval", "review"]]
          )
          assert.include((waiting.waitingFor[0]!.request as { plan: string }).plan, "Tidy the README")

          const approvedAt = Date.now()
          const decided = yield* client.decisions.approve({
            params: { token },
            payload: { approved: true, comment: "Keep the tone" }
          })
          assert.deepStrictEqual(decided, { runId, step: "review" })

          const frames = yield* Fiber.join(follower)
          const end = frames[frames.length - 1]!
          assert.strictEqual(end.event, "end")
          assert.deepStrictEqual(JSON.parse(end.data), { runId, status: "completed" })
          const events = frames.slice(0, -1).map((f) => ({ id: f.id, kind: f.event, event: JSON.parse(f.data) }))
          assert.deepStrictEqual(
            events.map((e) => Number(e.id)),
            events.map((_, i) => i + 1),
            "SSE ids are the sequences, gapless"
          )
          assert.deepStrictEqual(
            events.map((e) => e.event.sequence),
            events.map((e) => Number(e.id))
          )
          const kinds = new Set(events.map((e) => e.kind))
          for (const kind of ["status", "text_delta", "approval_requested", "decided", "result"]) {
            assert.isTrue(kinds.has(kind), `a ${kind} event`)
          }
          const act = events.filter((e) => e.event.step === "act" && e.kind === "text_delta")
          assert.isNotEmpty(act, "the act step streamed")
          assert.isTrue(
            act.every((e) => e.event.timestamp >= approvedAt),
            "the act step's events reached the follower live, on the stream opened before the approval"
          )

          const run = yield* ended(server, runId)
          assert.strictEqual(run.status, "completed")
          assert.deepInclude(run.result, { approved: true, comment: "Keep the tone" })
          assert.include(run.result.outcome, "Done")
          assert.deepStrictEqual(run.waitingFor, [])
          // The token never reaches the output log, nor the server's own log.
          assert.notInclude(JSON.stringify(frames), token)
          assert.notInclude(server.stdout() + server.stderr(), token)
        }),
      { timeout: 120_000 }
    )

    it.effect(
      "attaches late from an offset, as JSON or SSE, with Last-Event-ID honoured",
      () =>
        Effect.gen(function* () {
          const server = yield* TestServer
          const { body } = yield* request(server, "/v1/runs", {
            method: "POST",
            json: { workflow: "PlanAndAct", input: { task: "Late" } }
          })
          const runId = body.runId as string
          const token = yield* waitingToken(server, runId)
          yield* request(server, `/v1/approvals/${token}`, { method: "POST", json: { approved: false, comment: "no" } })
          yield* ended(server, runId)

          const all = yield* request(server, `/v1/runs/${runId}/events`, { headers: { accept: "application/json" } })
          assert.strictEqual(all.status, 200)
          const total = (all.body as Array<unknown>).length
          assert.isAbove(total, 5)

          const fromFive = yield* request(server, `/v1/runs/${runId}/events?from=5`, {
            headers: { accept: "application/json" }
          })
          assert.deepStrictEqual(
            (fromFive.body as Array<{ sequence: number }>).map((e) => e.sequence),
            Array.from({ length: total - 4 }, (_, i) => i + 5)
          )

          const sse = yield* readSse(server, `/v1/runs/${runId}/events?from=2`, { "last-event-id": "3" })
          assert.strictEqual(sse.status, 200)
          assert.include(sse.contentType, "text/event-stream")
          const ids = sse.frames.filter((f) => f.id !== undefined).map((f) => Number(f.id))
          assert.deepStrictEqual(
            ids,
            Array.from({ length: total - 3 }, (_, i) => i + 4),
            "Last-Event-ID wins over ?from"
          )
          assert.deepStrictEqual(JSON.parse(sse.frames[sse.frames.length - 1]!.data!), { runId, status: "completed" })
        }),
      { timeout: 120_000 }
    )

    it.effect(
      "answers every client mistake with a 4xx JSON error that names it, and changes nothing",
      () =>
        Effect.gen(function* () {
          const server = yield* TestServer
          // A finished run and a waiting one to make mistakes against.
          const finished = (yield* request(server, "/v1/runs", {
            method: "POST",
            json: { workflow: "PlanAndAct", input: { task: "Finish me" } }
          })).body.runId as string
          const finishedToken = yield* waitingToken(server, finished)
          yield* request(server, `/v1/approvals/${finishedToken}`, { method: "POST", json: { approved: false } })
          yield* ended(server, finished)
          const waiting = (yield* request(server, "/v1/runs", {
            method: "POST",
            json: { workflow: "PlanAndAct", input: { task: "Wait for me" } }
          })).body.runId as string
          const token = yield* waitingToken(server, waiting)

          const before = yield* request(server, "/v1/runs?limit=100")
          const forged = token.slice(0, -3) + (token.endsWith("AAA") ? "BBB" : "AAA")
          const cases: ReadonlyArray<{
            readonly name: string
            readonly path: string
            readonly init: RequestInit & { readonly json?: unknown }
            readonly status: number
            readonly tag: string
            readonly says: string
          }> = [
            {
              name: "malformed JSON",
              path: "/v1/runs",
              init: {
                method: "POST",
                body: '{"workflow": "PlanAndAct", "input": ',
                headers: { "content-type": "application/json" }
              },
              status: 400,
              tag: "BadRequest",
              says: "not valid JSON"
            },
            {
              name: "a body that is not declared JSON",
              path: "/v1/runs",
              init: { method: "POST", body: "workflow=PlanAndAct", headers: { "content-type": "text/plain" } },
              status: 415,
              tag: "UnsupportedMediaType",
              says: "Content-Type: application/json"
            },
            {
              name: "a body of the wrong shape",
              path: "/v1/runs",
              init: { method: "POST", json: { input: { task: "x" } } },
              status: 400,
              tag: "BadRequest",
              says: "workflow"
            },
            {
              name: "an unknown workflow",
              path: "/v1/runs",
              init: { method: "POST", json: { workflow: "Nope", input: {} } },
              status: 404,
              tag: "NotFound",
              says: 'No workflow named "Nope"'
            },
            {
              name: "input failing the workflow's schema",
              path: "/v1/runs",
              init: { method: "POST", json: { workflow: "PlanAndAct", input: { task: 42 } } },
              status: 422,
              tag: "InvalidInput",
              says: "input.task"
            },
            {
              name: "an unknown run",
              path: "/v1/runs/no-such-run",
              init: {},
              status: 404,
              tag: "NotFound",
              says: "No run no-such-run"
            },
            {
              name: "the events of an unknown run",
              path: "/v1/runs/no-such-run/events",
              init: {},
              status: 404,
              tag: "NotFound",
              says: "No run no-such-run"
            },
            {
              name: "interrupting an unknown run",
              path: "/v1/runs/no-such-run/interrupt",
              init: { method: "POST" },
              status: 404,
              tag: "NotFound",
              says: "No run"
            },
            {
              name: "approving a finished run",
              path: `/v1/approvals/${finishedToken}`,
              init: { method: "POST", json: { approved: true } },
              status: 409,
              tag: "Conflict",
              says: "already been decided"
            },
            {
              name: "interrupting a finished run",
              path: `/v1/runs/${finished}/interrupt`,
              init: { method: "POST" },
              status: 409,
              tag: "Conflict",
              says: "has ended (completed)"
            },
            {
              name: "resuming a finished run",
              path: `/v1/runs/${finished}/resume`,
              init: { method: "POST" },
              status: 409,
              tag: "Conflict",
              says: "has ended (completed)"
            },
            {
              name: "a forged approval token",
              path: `/v1/approvals/${forged}`,
              init: { method: "POST", json: { approved: true } },
              status: 403,
              tag: "InvalidToken",
              says: "not valid"
            },
            {
              name: "an approval token used as an input token",
              path: `/v1/inputs/${token}`,
              init: { method: "POST", json: { value: "yes" } },
              status: 403,
              tag: "InvalidToken",
              says: "not valid"
            },
            {
              name: "a decision of the wrong shape",
              path: `/v1/approvals/${token}`,
              init: { method: "POST", json: { approved: "yes" } },
              status: 400,
              tag: "BadRequest",
              says: "approved"
            },
            {
              name: "an oversized body",
              path: "/v1/runs",
              init: { method: "POST", json: { workflow: "PlanAndAct", input: { task: "x".repeat(2 * 1024 * 1024) } } },
              status: 413,
              tag: "PayloadTooLarge",
              says: "larger than"
            },
            {
              name: "a bad query",
              path: "/v1/runs?limit=0",
              init: {},
              status: 400,
              tag: "BadRequest",
              says: "limit"
            },
            {
              name: "a cursor the server never handed out",
              path: "/v1/runs?cursor=bogus",
              init: {},
              status: 400,
              tag: "BadRequest",
              says: "cursor"
            },
            {
              name: "a bad Last-Event-ID",
              path: `/v1/runs/${finished}/events`,
              init: { headers: { "last-event-id": "abc" } },
              status: 400,
              tag: "BadRequest",
              says: "Last-Event-ID"
            },
            {
              name: "an unknown route",
              path: "/v1/nothing-here",
              init: {},
              status: 404,
              tag: "NotFound",
              says: "No route"
            }
          ]
          for (const c of cases) {
            const response = yield* request(server, c.path, c.init)
            assert.strictEqual(response.status, c.status, `${c.name}: ${response.text.slice(0, 300)}`)
            assert.include(response.headers.get("content-type") ?? "", "application/json", c.name)
            assert.strictEqual(response.body._tag, c.tag, c.name)
            assert.include(response.body.message, c.says, c.name)
          }

          const after = yield* request(server, "/v1/runs?limit=100")
          assert.deepStrictEqual(after.body, before.body, "no run was added or changed")
          // The waiting run still takes its real decision.
          const ok = yield* request(server, `/v1/approvals/${token}`, { method: "POST", json: { approved: true } })
          assert.strictEqual(ok.status, 200)
          assert.strictEqual((yield* ended(server, waiting)).status, "completed")
        }),
      { timeout: 120_000 }
    )

    it.effect(
      "requires the bearer token on every /v1 route and the RPC endpoint, not on /health",
      () =>
        Effect.gen(function* () {
          const server = yield* TestServer
          const routes: ReadonlyArray<readonly [string, string]> = [
            ["GET", "/v1/workflows"],
            ["GET", "/v1/runs"],
            ["POST", "/v1/runs"],
            ["GET", "/v1/runs/x"],
            ["GET", "/v1/runs/x/events"],
            ["POST", "/v1/runs/x/interrupt"],
            ["POST", "/v1/runs/x/resume"],
            ["POST", "/v1/approvals/x"],
            ["POST", "/v1/inputs/x"],
            ["POST", "/v1/workflows/planandact/discard"],
            ["POST", "/v1/rpc"]
          ]
          const before = yield* request(server, "/v1/runs?limit=100")
          for (const [method, path] of routes) {
            for (const authorization of ["", "Bearer not-the-token", `Basic ${server.token}`]) {
              const response = yield* request(server, path, {
                method,
                headers: { authorization },
                ...(method === "POST" ? { json: { workflow: "PlanAndAct", input: { task: "sneaky" } } } : {})
              })
              assert.strictEqual(response.status, 401, `${method} ${path} with "${authorization.slice(0, 12)}"`)
              assert.strictEqual(response.body._tag, "Unauthorized")
              assert.match(response.body.message, /bearer token/i)
            }
          }
          assert.deepStrictEqual((yield* request(server, "/v1/runs?limit=100")).body, before.body, "nothing started")

          const health = yield* request(server, "/health", { headers: { authorization: "" } })
          assert.deepStrictEqual([health.status, health.body], [200, { status: "ok", database: "ok" }])
          const openapi = yield* request(server, "/openapi.json", { headers: { authorization: "" } })
          assert.strictEqual(openapi.status, 200)
          assert.property(openapi.body.paths, "/v1/runs/{runId}/events")
          assert.property(openapi.body.paths, "/v1/workflows/planandact")

          const tokenFile = Path.join(server.dataDir, "api-token")
          assert.strictEqual(Fs.statSync(tokenFile).mode & 0o777, 0o600, "the generated token is owner-only")
          assert.include(server.stdout(), tokenFile, "start-up says where the token is")
          assert.notInclude(server.stdout(), server.token, "start-up never prints the token")
        }),
      { timeout: 120_000 }
    )

    it.effect(
      "lists registered workflows with the JSON Schema of their input, and runs by status",
      () =>
        Effect.gen(function* () {
          const server = yield* TestServer
          const client = yield* typedClient(server)
          const workflows = yield* client.runs.workflows()
          assert.deepStrictEqual(
            workflows.map((w) => w.name),
            ["PlanAndAct"]
          )
          assert.deepInclude(workflows[0]!.input as object, { type: "object", required: ["task"] })

          // The same idempotency key names the same run; two runs of one task are two runs.
          const a = yield* client.runs.create({
            payload: { workflow: "PlanAndAct", input: { task: "Same" }, idempotencyKey: "key-1" }
          })
          const b = yield* client.runs.create({
            payload: { workflow: "PlanAndAct", input: { task: "Same" }, idempotencyKey: "key-1" }
          })
          const c = yield* client.runs.create({ payload: { workflow: "PlanAndAct", input: { task: "Same" } } })
          assert.strictEqual(a.runId, b.runId)
          assert.notStrictEqual(a.runId, c.runId)
          yield* waitingToken(server, a.runId)
          yield* waitingToken(server, c.runId)

          const waitingRuns = yield* client.runs.list({ query: { status: "waiting", workflow: "PlanAndAct" } })
          assert.includeMembers(
            waitingRuns.runs.map((r) => r.runId),
            [a.runId, c.runId]
          )
          assert.isTrue(waitingRuns.runs.every((r) => r.status === "waiting"))
          const page = yield* client.runs.list({ query: { limit: 1 } })
          assert.lengthOf(page.runs, 1)
          assert.isDefined(page.nextCursor)
          const next = yield* client.runs.list({ query: { limit: 1, cursor: page.nextCursor! } })
          assert.notStrictEqual(next.runs[0]!.runId, page.runs[0]!.runId)

          // Interrupting a waiting run ends it; its token is refused from then on.
          const token = yield* waitingToken(server, c.runId)
          yield* client.runs.interrupt({ params: { runId: c.runId } })
          const interrupted = yield* ended(server, c.runId)
          assert.strictEqual(interrupted.status, "interrupted")
          const late = yield* request(server, `/v1/approvals/${token}`, { method: "POST", json: { approved: true } })
          assert.deepStrictEqual([late.status, late.body.reason], [409, "run_finished"])
        }),
      { timeout: 120_000 }
    )

    it.effect(
      "serves the workflow's typed endpoints derived with WorkflowProxy, over HTTP and RPC",
      () =>
        Effect.gen(function* () {
          const server = yield* TestServer
          const client = yield* typedClient(server)
          const runId = yield* client.workflows.PlanAndActDiscard({ payload: { task: "Typed" } })
          const token = yield* waitingToken(server, runId)
          const listed = yield* client.runs.get({ params: { runId } })
          assert.deepStrictEqual([listed.workflow, listed.input], ["PlanAndAct", { task: "Typed" }])
          yield* client.decisions.approve({ params: { token }, payload: { approved: true } })
          assert.strictEqual((yield* ended(server, runId)).status, "completed")
          yield* client.workflows.PlanAndActResume({ payload: { executionId: runId } })

          const rpc = yield* rpcClient(server)
          const viaRpc = yield* rpc.PlanAndActDiscard({ task: "Over RPC" })
          const rpcToken = yield* waitingToken(server, viaRpc)
          yield* client.decisions.approve({ params: { token: rpcToken }, payload: { approved: false, comment: "no" } })
          const rejected = yield* ended(server, viaRpc)
          assert.deepInclude(rejected.result, { approved: false, comment: "no" })
        }).pipe(Effect.scoped),
      { timeout: 120_000 }
    )
  })
}
