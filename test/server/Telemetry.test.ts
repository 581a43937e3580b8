/**
 * With the standard OTEL_* variables set, the server exports its runs, steps,
 * tokens and cost as spans and metrics over OTLP/HTTP; here to a collector
 * that lives in the test process.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Http from "node:http"
import type { AddressInfo } from "node:net"
import { Effect } from "effect"
import { dataDir, eventually, request, startServer, stopServer } from "./TestServer.ts"

/** An OTLP/HTTP JSON collector on loopback: it keeps every request body by path. */
const collector = Effect.acquireRelease(
  Effect.callback<{ readonly url: string; readonly bodies: Map<string, Array<string>>; readonly server: Http.Server }>(
    (resume) => {
      const bodies = new Map<string, Array<string>>()
      const server = Http.createServer((req, res) => {
        let body = ""
        req.on("data", (chunk: Buffer) => (body += chunk.toString()))
        req.on("end", () => {
          bodies.set(req.url ?? "", [...(bodies.get(req.url ?? "") ?? []), body])
          res.writeHead(200, { "content-type": "application/json" })
          res.end("{}")
        })
      })
      server.listen(0, "127.0.0.1", () => {
        resume(Effect.succeed({ url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, bodies, server }))
      })
    }
  ),
  ({ server }) =>
    Effect.callback<void>((resume) => {
      server.close(() => resume(Effect.void))
    })
)

const spansOf = (bodies: ReadonlyArray<string>) =>
  bodies.flatMap((body) =>
    (JSON.parse(body).resourceSpans ?? []).flatMap((rs: any) =>
      rs.scopeSpans.flatMap((ss: any) =>
        ss.spans.map((span: any) => ({
          name: span.name as string,
          attributes: Object.fromEntries(
            (span.attributes ?? []).map((a: any) => [a.key, Object.values(a.value)[0]])
          ) as Record<string, unknown>
        }))
      )
    )
  )

const metricNamesOf = (bodies: ReadonlyArray<string>) =>
  new Set(
    bodies.flatMap((body) =>
      (JSON.parse(body).resourceMetrics ?? []).flatMap((rm: any) =>
        rm.scopeMetrics.flatMap((sm: any) => sm.metrics.map((m: any) => m.name as string))
      )
    )
  )

describe("agent server telemetry", () => {
  it.live(
    "exports runs, steps, tokens and cost as spans and metrics when OTEL_EXPORTER_OTLP_ENDPOINT is set",
    () =>
      Effect.gen(function* () {
        const otlp = yield* collector
        const server = yield* startServer(dataDir(), {
          OTEL_EXPORTER_OTLP_ENDPOINT: otlp.url,
          OTEL_SERVICE_NAME: "agent-under-test",
          OTEL_BSP_SCHEDULE_DELAY: "200",
          OTEL_METRIC_EXPORT_INTERVAL: "500"
        })
        assert.include(server.stdout(), `telemetry: OTLP to ${otlp.url}`)
        const { body } = yield* request(server, "/v1/runs", {
          method: "POST",
          json: { workflow: "PlanAndAct", input: { task: "Trace me" } }
        })
        const runId = body.runId as string
        const token = yield* eventually(
          Effect.map(request(server, `/v1/runs/${runId}`), (r) =>
            r.body.status === "waiting" ? (r.body.waitingFor[0].token as string) : undefined
          ),
          "the run to wait"
        )
        yield* request(server, `/v1/approvals/${token}`, { method: "POST", json: { approved: true } })
        yield* eventually(
          Effect.map(request(server, `/v1/runs/${runId}`), (r) => (r.body.status === "completed" ? true : undefined)),
          "the run to complete"
        )
        // Shutting down flushes what is left.
        assert.strictEqual(yield* stopServer(server, "SIGTERM"), 0)

        const traces = otlp.bodies.get("/v1/traces") ?? []
        assert.isNotEmpty(traces, "traces were exported")
        assert.include(traces[0], '"agent-under-test"', "OTEL_SERVICE_NAME names the service")
        const spans = spansOf(traces)
        assert.isTrue(
          spans.some((s) => s.name === "AgentWorkflow.run PlanAndAct" && s.attributes["run.id"] === runId),
          "a span for the run"
        )
        const attempts = spans.filter((s) => s.name === "AgentActivity.attempt" && s.attributes["run.id"] === runId)
        assert.sameMembers(
          attempts.map((s) => s.attributes.step),
          ["plan", "act"]
        )
        for (const attempt of attempts) {
          assert.strictEqual(Number(attempt.attributes["agent.input_tokens"]), 40)
          assert.strictEqual(Number(attempt.attributes["agent.output_tokens"]), 30)
          assert.isAbove(Number(attempt.attributes["agent.cost_usd"]), 0)
        }

        const metrics = metricNamesOf(otlp.bodies.get("/v1/metrics") ?? [])
        for (const name of [
          "agent_runs_started_total",
          "agent_runs_ended_total",
          "agent_steps_total",
          "agent_tokens_total",
          "agent_cost_usd_total"
        ]) {
          assert.isTrue(metrics.has(name), `the ${name} metric`)
        }
        const everything = [...otlp.bodies.values()].flat().join("\n")
        assert.notInclude(everything, server.token, "the API token is never exported")
        assert.notInclude(everything, token, "approval tokens are never exported")
        assert.notInclude(server.stdout() + server.stderr(), token, "nor logged")
        assert.include(server.stdout(), "/v1/approvals/<token>", "the access log shows the route, redacted")
      }).pipe(Effect.scoped),
    { timeout: 120_000 }
  )
})
