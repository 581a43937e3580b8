/**
 * Graceful shutdown: SIGTERM while an agent step streams ends the live
 * followers with a retry hint and exits 0; the restarted server finishes the
 * run, and a follower resumes from its Last-Event-ID with nothing lost.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import { dataDir, eventually, readSse, request, startServer, stopServer } from "./TestServer.ts"

describe("agent server shutdown", () => {
  it.live(
    "SIGTERM mid-step: streams get a retry hint, the process exits 0, and the restarted server completes the run",
    () =>
      Effect.gen(function* () {
        const dir = dataDir()
        // A slow model, so that the plan step is still streaming when the signal arrives.
        const first = yield* startServer(dir, { AGENT_SCRIPTED_DELAY_MS: "150" })
        const { body } = yield* request(first, "/v1/runs", {
          method: "POST",
          json: { workflow: "PlanAndAct", input: { task: "Survive a restart" } }
        })
        const runId = body.runId as string
        const follower = yield* Effect.forkChild(readSse(first, `/v1/runs/${runId}/events`))
        yield* eventually(
          Effect.map(request(first, `/v1/runs/${runId}/events`, { headers: { accept: "application/json" } }), (r) =>
            (r.body as Array<{ kind: string }>).some((e) => e.kind === "text_delta") ? true : undefined
          ),
          "the plan step to stream"
        )

        const code = yield* stopServer(first, "SIGTERM")
        assert.strictEqual(code, 0, first.stdout())
        assert.include(first.stdout(), "shutting down")
        const cut = yield* Fiber.join(follower)
        const last = cut.frames[cut.frames.length - 1]!
        assert.isNumber(last.retry, "the stream ends with a retry hint, not an end event")
        const seen = cut.frames.filter((f) => f.id !== undefined).map((f) => Number(f.id))
        assert.isNotEmpty(seen)

        const second = yield* startServer(dir)
        assert.strictEqual(second.token, first.token, "the generated token survives the restart")
        const token = yield* eventually(
          Effect.map(request(second, `/v1/runs/${runId}`), (r) =>
            r.body.status === "waiting" ? (r.body.waitingFor[0].token as string) : undefined
          ),
          "the run to reach its approval after the restart"
        )
        // The follower reconnects where it stopped.
        const resumed = yield* Effect.forkChild(
          readSse(second, `/v1/runs/${runId}/events`, { "last-event-id": String(seen[seen.length - 1]) })
        )
        const approved = yield* request(second, `/v1/approvals/${token}`, {
          method: "POST",
          json: { approved: true }
        })
        assert.strictEqual(approved.status, 200, approved.text)
        const rest = yield* Fiber.join(resumed)
        const ids = [...seen, ...rest.frames.filter((f) => f.id !== undefined).map((f) => Number(f.id))]
        assert.deepStrictEqual(
          ids,
          ids.map((_, i) => i + 1),
          "nothing lost or repeated across the restart"
        )
        assert.deepStrictEqual(JSON.parse(rest.frames[rest.frames.length - 1]!.data!), { runId, status: "completed" })

        const run = (yield* request(second, `/v1/runs/${runId}`)).body
        assert.strictEqual(run.status, "completed")
        assert.include(run.result.plan, "Survive a restart")
        assert.include(run.result.outcome, "Done")
        assert.strictEqual(yield* stopServer(second, "SIGTERM"), 0)
      }),
    { timeout: 180_000 }
  )
})
