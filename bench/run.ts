/**
 * `npm run bench [-- --quick]`: runs every benchmark and writes
 * docs/benchmarks.md with the machine, date, versions and command.
 */
import { NodeRuntime } from "@effect/platform-node"
import * as Fs from "node:fs"
import * as Os from "node:os"
import { Console, Effect } from "effect"
import * as Agent from "./agent.ts"
import * as Engine from "./engine.ts"
import * as Failover from "./failover.ts"
import * as Output from "./output.ts"
import { type Measurement, summary } from "./Measurement.ts"

const quick = process.argv.includes("--quick")
const output = quick ? "docs/benchmarks-quick.md" : "docs/benchmarks.md"

const version = (name: string): string =>
  JSON.parse(Fs.readFileSync(`node_modules/${name}/package.json`, "utf8")).version

const format = (value: number) => (value >= 100 ? value.toFixed(0) : value >= 1 ? value.toFixed(1) : value.toFixed(3))

const render = (measurements: ReadonlyArray<Measurement>, seconds: number): string => {
  const byName = new Map(measurements.map((m) => [m.name, m]))
  const lines = [
    "# Benchmarks",
    "",
    `Written by \`npm run bench${quick ? " -- --quick" : ""}\` (bench/run.ts) on ${new Date().toISOString()}, in ${seconds.toFixed(0)} s.`,
    "",
    `- Machine: ${Os.cpus().length} × ${Os.cpus()[0]?.model ?? "unknown CPU"}, ${(Os.totalmem() / 2 ** 30).toFixed(0)} GiB, ${Os.platform()} ${Os.release()}; shared and noisy, so compare ratios within one run.`,
    `- Node ${process.versions.node}; effect ${version("effect")}; @anthropic-ai/claude-agent-sdk ${version("@anthropic-ai/claude-agent-sdk")}.`,
    "- The agent path runs the real Claude Code CLI against the scripted model on 127.0.0.1; variants are interleaved.",
    "- Engines: a durable step is one trivial activity inside a workflow of N sequential ones; its baseline is one",
    "  autocommitted INSERT through the same SQL client on the same database. Resume latency runs from",
    "  `DurableDeferred.done` to the joined `execute` returning. Heap per parked run is the growth of `heapUsed`",
    "  after a forced GC, divided by the number of runs waiting on a deferred.",
    "- Output channel: throughput publishes batches of 1000 events; one-node latency runs from `publish` to the",
    "  subscriber's stream emitting the event (same process, performance.now); across processes the publisher is a",
    "  separate Node process on the same Postgres and the wall clock stamps the event.",
    "",
    "| group | measurement | n | min | median | max | vs baseline (median) | target |",
    "| --- | --- | --- | --- | --- | --- | --- | --- |"
  ]
  for (const m of measurements) {
    const s = summary(m.samples)
    const base = m.baseline === undefined ? undefined : byName.get(m.baseline)
    const ratio = base === undefined ? undefined : s.median / summary(base.samples).median
    const verdict =
      m.target === undefined
        ? ""
        : "below" in m.target
          ? (() => {
              const judged = m.target.of === "max" ? s.max : s.median
              const which = m.target.of === "max" ? " (every run)" : ""
              return `${m.target.text}${which}: ${
                judged < m.target.below ? "met" : `missed by ${((judged / m.target.below - 1) * 100).toFixed(1)} %`
              }`
            })()
          : "above" in m.target
            ? `${m.target.text}: ${s.median >= m.target.above ? "met" : `missed by ${((1 - s.median / m.target.above) * 100).toFixed(1)} %`}`
            : ratio === undefined
              ? ""
              : `${m.target.text}: ${ratio <= m.target.ratio ? "met" : `missed by ${((ratio / m.target.ratio - 1) * 100).toFixed(1)} %`}`
    lines.push(
      `| ${m.group} | ${m.name} | ${s.n} | ${format(s.min)} ${m.unit} | ${format(s.median)} ${m.unit} | ${format(s.max)} ${m.unit} | ${ratio === undefined ? "" : `${ratio.toFixed(3)}× ${m.baseline}`} | ${verdict} |`
    )
  }
  return lines.join("\n") + "\n"
}

const program = Effect.gen(function* () {
  const started = performance.now()
  const measurements: Array<Measurement> = []
  yield* Console.log(`agent path (${quick ? 3 : 20} iterations)…`)
  measurements.push(...(yield* Agent.run(quick ? 3 : 20)))
  yield* Console.log("engines…")
  measurements.push(...(yield* Engine.run(quick)))
  yield* Console.log("output channel…")
  measurements.push(...(yield* Output.run(quick)))
  yield* Console.log("failover…")
  measurements.push(...(yield* Failover.run(quick ? 1 : 5)))
  for (const m of measurements) {
    if (m.samples.length === 0 || m.samples.some((x) => !Number.isFinite(x))) {
      return yield* Effect.die(new Error(`benchmark "${m.name}" produced no number`))
    }
  }
  const markdown = render(measurements, (performance.now() - started) / 1000)
  Fs.writeFileSync(output, markdown)
  yield* Console.log(markdown)
  yield* Console.log(`written to ${output}`)
})

NodeRuntime.runMain(program)
