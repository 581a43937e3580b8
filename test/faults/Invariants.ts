/**
 * The invariants every run must keep however often its runners are killed,
 * checked on what the database, the engine and the model's request log say.
 *
 * - The run reaches its expected end: the engine's result, the registry's
 *   status and the output log's end agree with what the run's key says.
 * - No completed step ran again: after a step's `result` event was stored,
 *   the model received at most one more request for it (a kill between
 *   storing the result and journaling the step re-runs it once), or one per
 *   fault injected while the step was under way; an effect step's
 *   executions, likewise, from the activity log.
 * - The output has no gap and no duplicate: sequences 1..n; within each
 *   (step, attempt), indices 0..k; each execution of an agent step a number
 *   of its own (1..E), its text a prefix of the scripted answer, all of it
 *   when it completed.
 * - Retries waited their durable backoff, and stayed within the budget.
 * - Decisions: recorded once, delivered, with the reviewer's answer.
 */
import { Duration } from "effect"
import * as AgentActivity from "../../src/workflow/AgentActivity.ts"
import { answer, expectedCampaign, expectedGates, gateCount, profile, retry } from "./Campaign.ts"
import type { LoggedRequest } from "./FaultyModel.ts"
import type { EventRecord, RunRecord } from "./RunRecords.ts"

export interface Violation {
  readonly key: string
  readonly invariant: string
  readonly detail: string
}

/** How a run ended, as its runner reported it from the engine. */
export type End =
  | { readonly ok: unknown }
  | { readonly error: { readonly tag: string; readonly reason?: string; readonly message?: string } }

const sameJson = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b)

/** Sequences 1..n; within each (step, attempt), indices 0..k. */
export const checkOutputLog = (key: string, events: ReadonlyArray<EventRecord>): Array<Violation> => {
  const violations: Array<Violation> = []
  events.forEach((event, i) => {
    if (event.sequence !== i + 1 && violations.length === 0) {
      violations.push({
        key,
        invariant: "output: gapless sequence",
        detail: `event #${i + 1} has sequence ${event.sequence}`
      })
    }
  })
  const groups = new Map<string, Array<number>>()
  for (const event of events) {
    const group = `${event.step}/${event.attempt}`
    groups.set(group, [...(groups.get(group) ?? []), event.index])
  }
  for (const [group, indices] of groups) {
    // Status events of effect steps use sparse indices (2·attempt − 1, 2·attempt) by design.
    if (group.endsWith("/0")) {
      if (new Set(indices).size !== indices.length) {
        violations.push({ key, invariant: "output: no duplicate", detail: `${group}: indices ${indices.join(",")}` })
      }
      continue
    }
    if (!indices.every((index, i) => index === i)) {
      violations.push({
        key,
        invariant: "output: no gap or duplicate per attempt",
        detail: `${group}: indices ${indices.slice(0, 40).join(",")}`
      })
    }
  }
  return violations
}

const agentSteps = (key: string) => {
  const p = profile(key)
  if (p.doomed) return ["draft"]
  return ["draft", ...(p.approve && p.parts ? ["part#0", "part#1"] : []), ...(p.approve ? ["final"] : [])]
}

/** The checks of one agent step's executions, requests and retries. */
const checkAgentStep = (
  key: string,
  runId: string,
  step: string,
  events: ReadonlyArray<EventRecord>,
  requests: ReadonlyArray<LoggedRequest>,
  mustComplete: boolean,
  faultTimes: ReadonlyArray<number>
): Array<Violation> => {
  const violations: Array<Violation> = []
  const own = events.filter((e) => e.step === step)
  const executions = [...new Set(own.map((e) => e.attempt))].toSorted((a, b) => a - b)
  if (!executions.every((execution, i) => execution === i + 1)) {
    violations.push({
      key,
      invariant: "output: executions numbered 1..E",
      detail: `${step}: ${executions.join(",")}`
    })
  }
  const expected = answer(key, step)
  for (const execution of executions) {
    const list = own.filter((e) => e.attempt === execution)
    const first = list.find((e) => e.index === 0)
    if (first === undefined || first.kind !== "status" || first.payload?.state !== "attempt_started") {
      violations.push({ key, invariant: "output: execution starts", detail: `${step}/${execution}` })
    }
    // A stream cut mid-message is retried by the CLI without streaming: the deltas stop, the message is whole.
    const text = list
      .filter((e) => e.kind === "text_delta")
      .map((e) => String(e.payload?.text ?? ""))
      .join("")
    if (!expected.startsWith(text)) {
      violations.push({
        key,
        invariant: "output: the streamed text is the model's, once",
        detail: `${step}/${execution}: "${text.slice(0, 160)}"`
      })
    }
    for (const whole of list.filter((e) => e.kind === "assistant_message" || e.kind === "result")) {
      if (whole.payload?.text !== expected) {
        violations.push({
          key,
          invariant: "output: the message is the model's",
          detail: `${step}/${execution} ${whole.kind}: "${String(whole.payload?.text).slice(0, 160)}"`
        })
      }
    }
  }
  const results = own.filter((e) => e.kind === "result")
  if (mustComplete && results.length === 0) {
    violations.push({ key, invariant: "run: completed steps have a result", detail: step })
  }
  if (results.length > 0) {
    // A fault between storing a result and journaling the step re-runs the step once: one request more
    // per fault injected while the step was under way (several only where faults come thick and fast).
    const storedAt = Math.min(...results.map((e) => e.timestamp))
    const sent = requests.filter((r) => r.step === step)
    const after = sent.filter((r) => r.at > storedAt)
    const began = Math.min(...sent.map((r) => r.at))
    const faults = faultTimes.filter((at) => at >= began && at <= Math.max(...after.map((r) => r.at))).length
    if (after.length > Math.max(1, faults)) {
      violations.push({
        key,
        invariant: "no completed step re-ran",
        detail: `${step}: ${after.length} requests after its result was stored at ${storedAt}, ${faults} faults in between`
      })
    }
  }
  violations.push(...checkRetries(key, runId, step, own, retry))
  return violations
}

/**
 * The retries of an agent step: attempts 1..n within the budget, and each one
 * begun no sooner than its durable backoff after the failure before it.
 */
export const checkRetries = (
  key: string,
  runId: string,
  step: string,
  events: ReadonlyArray<EventRecord>,
  policy: AgentActivity.RetryPolicy & { readonly times: number }
): Array<Violation> => {
  const violations: Array<Violation> = []
  const own = events.filter((e) => e.step === step)
  const starts = own.filter((e) => e.kind === "status" && e.payload?.state === "attempt_started")
  const retries = [...new Set(starts.map((e) => Number(e.payload.attempt)))].toSorted((a, b) => a - b)
  if (retries.some((attempt, i) => attempt !== i + 1) || retries.length > policy.times + 1) {
    violations.push({ key, invariant: "retries within budget", detail: `${step}: attempts ${retries.join(",")}` })
  }
  for (const attempt of retries.slice(1)) {
    const failures = own.filter(
      (e) => e.kind === "error" && starts.some((s) => s.attempt === e.attempt && s.payload.attempt === attempt - 1)
    )
    const next = Math.min(...starts.filter((s) => s.payload.attempt === attempt).map((s) => s.timestamp))
    const failedAt = Math.max(...failures.map((e) => e.timestamp))
    const wait = Duration.toMillis(AgentActivity.backoff(policy, attempt - 1, `${runId}/${step}`))
    if (failures.length > 0 && next - failedAt < wait - 5) {
      violations.push({
        key,
        invariant: "retries wait their backoff",
        detail: `${step}: attempt ${attempt} began ${next - failedAt} ms after the failure, backoff ${wait} ms`
      })
    }
  }
  return violations
}

/** Every invariant of a `Campaign` run that has ended (or should have). */
export const checkCampaignRun = (options: {
  readonly key: string
  readonly record: RunRecord
  readonly end: End | undefined
  readonly requests: ReadonlyArray<LoggedRequest>
  /** Times at which the effect step `tally` began executing. */
  readonly tallies: ReadonlyArray<number>
  /** When faults (kills, database faults) were injected, epoch ms. */
  readonly faultTimes?: ReadonlyArray<number>
}): Array<Violation> => {
  const { key, record, end, requests } = options
  const p = profile(key)
  const violations: Array<Violation> = [...checkOutputLog(key, record.events)]
  if (end === undefined) return violations
  if (p.doomed) {
    if (!("error" in end) || end.error.reason !== "OverloadedError") {
      violations.push({
        key,
        invariant: "run: expected end",
        detail: `expected OverloadedError, got ${JSON.stringify(end).slice(0, 300)}`
      })
    }
  } else if (!("ok" in end) || !sameJson(end.ok, expectedCampaign(key))) {
    violations.push({ key, invariant: "run: expected end", detail: JSON.stringify(end).slice(0, 300) })
  }
  const status = p.doomed ? "failed" : "completed"
  if (record.registry._tag === "None" || record.registry.value.status !== status) {
    violations.push({
      key,
      invariant: "run: registry agrees",
      detail: `${record.registry._tag === "Some" ? record.registry.value.status : "missing"}, expected ${status}`
    })
  }
  if (!record.outputEnded) violations.push({ key, invariant: "run: output ended", detail: "open" })
  for (const step of agentSteps(key)) {
    violations.push(
      ...checkAgentStep(key, record.runId, step, record.events, requests, !p.doomed, options.faultTimes ?? [])
    )
  }
  if (p.doomed) {
    const attempts = new Set(
      record.events
        .filter((e) => e.step === "draft" && e.kind === "status" && e.payload?.state === "attempt_started")
        .map((e) => e.payload.attempt)
    )
    if (attempts.size !== retry.times + 1) {
      violations.push({
        key,
        invariant: "retries within budget",
        detail: `doomed draft made ${attempts.size} attempts`
      })
    }
    return violations
  }
  const tallyDone = record.events.find(
    (e) => e.step === "tally" && e.kind === "status" && e.payload?.state === "step_completed"
  )
  if (tallyDone === undefined || options.tallies.length === 0) {
    violations.push({ key, invariant: "run: effect step ran", detail: `${options.tallies.length} executions` })
  } else if (options.tallies.filter((at) => at > tallyDone.timestamp).length > 1) {
    violations.push({ key, invariant: "no completed step re-ran", detail: `tally executed again after it completed` })
  }
  const review = record.waits.find((w) => w.step === "review")
  if (
    review === undefined ||
    review.state !== "decided" ||
    !review.delivered ||
    review.response?.approved !== p.approve
  ) {
    violations.push({ key, invariant: "decision recorded and delivered", detail: JSON.stringify(review ?? null) })
  }
  const announced = record.events.filter((e) => e.step === "review").map((e) => `${e.index}:${e.kind}`)
  if (!sameJson(announced, ["0:approval_requested", "1:decided"])) {
    violations.push({ key, invariant: "decision announced once", detail: announced.join(",") })
  }
  return violations
}

/** Every invariant of a `Gates` run. */
export const checkGatesRun = (options: {
  readonly key: string
  readonly record: RunRecord
  readonly end: End | undefined
}): Array<Violation> => {
  const { key, record, end } = options
  const violations: Array<Violation> = [...checkOutputLog(key, record.events)]
  if (end === undefined) return violations
  if (!("ok" in end) || !sameJson(end.ok, expectedGates(key))) {
    violations.push({ key, invariant: "run: expected end", detail: JSON.stringify(end).slice(0, 300) })
  }
  if (record.registry._tag === "None" || record.registry.value.status !== "completed") {
    violations.push({ key, invariant: "run: registry agrees", detail: JSON.stringify(record.registry) })
  }
  if (!record.outputEnded) violations.push({ key, invariant: "run: output ended", detail: "open" })
  for (let gate = 0; gate < gateCount; gate++) {
    const wait = record.waits.find((w) => w.step === `gate#${gate}`)
    if (wait === undefined || wait.state !== "decided" || !wait.delivered) {
      violations.push({ key, invariant: "decision recorded and delivered", detail: `gate#${gate}: ${wait?.state}` })
    }
  }
  return violations
}
