/**
 * The campaign's checks catch what they are there to catch: a checker that
 * never fires would make every campaign pass. Each case breaks one invariant
 * in an otherwise good run record and expects exactly that violation.
 */
import { assert, describe, it } from "@effect/vitest"
import { Option } from "effect"
import { answer, expectedCampaign, profile } from "./Campaign.ts"
import type { LoggedRequest } from "./FaultyModel.ts"
import { checkCampaignRun, checkOutputLog, type Violation } from "./Invariants.ts"
import type { EventRecord, RunRecord } from "./RunRecords.ts"

// A key whose run is approved, has no parallel parts and is not doomed: draft, tally, review, final.
const key = Array.from({ length: 500 }, (_, i) => `invariants-${i}`).find((k) => {
  const p = profile(k)
  return p.approve && !p.parts && !p.doomed
})!

/** The events a clean run stores, one execution per step, each second apart from the last. */
const cleanEvents = (): Array<EventRecord> => {
  const events: Array<Omit<EventRecord, "sequence" | "timestamp">> = []
  const agentStep = (step: string) => {
    const text = answer(key, step)
    events.push({ step, attempt: 1, index: 0, kind: "status", payload: { state: "attempt_started", attempt: 1 } })
    events.push({ step, attempt: 1, index: 1, kind: "text_delta", payload: { text: text.slice(0, 10) } })
    events.push({ step, attempt: 1, index: 2, kind: "text_delta", payload: { text: text.slice(10) } })
    events.push({ step, attempt: 1, index: 3, kind: "assistant_message", payload: { text } })
    events.push({ step, attempt: 1, index: 4, kind: "result", payload: { text } })
  }
  agentStep("draft")
  events.push({ step: "pause", attempt: 0, index: 0, kind: "status", payload: { state: "sleeping" } })
  events.push({ step: "tally", attempt: 0, index: 1, kind: "status", payload: { state: "step_started" } })
  events.push({ step: "tally", attempt: 0, index: 2, kind: "status", payload: { state: "step_completed" } })
  events.push({ step: "review", attempt: 1, index: 0, kind: "approval_requested", payload: {} })
  events.push({ step: "review", attempt: 1, index: 1, kind: "decided", payload: {} })
  agentStep("final")
  return events.map((event, i) => ({ ...event, sequence: i + 1, timestamp: 1_000_000 + i * 1000 }))
}

const record = (events: ReadonlyArray<EventRecord>): RunRecord => ({
  runId: "run-1",
  events,
  outputEnded: true,
  waits: [{ step: "review", state: "decided", response: { approved: true }, delivered: true }],
  registry: Option.some({ status: "completed" })
})

const requestsFor = (events: ReadonlyArray<EventRecord>): Array<LoggedRequest> =>
  events
    .filter((e) => e.kind === "status" && e.payload.state === "attempt_started")
    .map((e) => ({ at: e.timestamp + 10, key, step: e.step, served: "ok" as const }))

const check = (
  events: ReadonlyArray<EventRecord>,
  changes: {
    readonly requests?: ReadonlyArray<LoggedRequest>
    readonly tallies?: ReadonlyArray<number>
    readonly faultTimes?: ReadonlyArray<number>
  } = {}
): Array<Violation> =>
  checkCampaignRun({
    key,
    record: record(events),
    end: { ok: expectedCampaign(key) },
    requests: changes.requests ?? requestsFor(events),
    tallies: changes.tallies ?? [events.find((e) => e.step === "tally")!.timestamp - 1],
    faultTimes: changes.faultTimes ?? []
  })

const invariants = (violations: ReadonlyArray<Violation>) => [...new Set(violations.map((v) => v.invariant))]

const resequence = (events: ReadonlyArray<EventRecord>) => events.map((e, i) => ({ ...e, sequence: i + 1 }))

describe("fault campaign invariants", () => {
  it("a clean run passes every check", () => {
    assert.deepStrictEqual(check(cleanEvents()), [])
  })

  it("a gap in the sequence is caught", () => {
    const events = cleanEvents().map((e) => (e.sequence > 5 ? { ...e, sequence: e.sequence + 1 } : e))
    assert.include(invariants(checkOutputLog(key, events)), "output: gapless sequence")
  })

  it("a duplicated or missing index within an execution is caught", () => {
    const events = cleanEvents()
    const duplicated = resequence([...events.slice(0, 2), events[1]!, ...events.slice(2)])
    assert.include(invariants(checkOutputLog(key, duplicated)), "output: no gap or duplicate per attempt")
    const missing = resequence(events.filter((e) => !(e.step === "draft" && e.index === 2)))
    assert.include(invariants(checkOutputLog(key, missing)), "output: no gap or duplicate per attempt")
  })

  it("a decision stored before its request is caught", () => {
    const events = cleanEvents()
    const i = events.findIndex((e) => e.kind === "approval_requested")
    const swapped = resequence([...events.slice(0, i), events[i + 1]!, events[i]!, ...events.slice(i + 2)])
    assert.include(invariants(checkOutputLog(key, swapped)), "output: no gap or duplicate per attempt")
  })

  it("a completed step sent to the model twice more is caught, once more is allowed", () => {
    const events = cleanEvents()
    const result = events.find((e) => e.step === "draft" && e.kind === "result")!
    const again = (n: number) => [
      ...requestsFor(events),
      ...Array.from({ length: n }, (_, i) => ({
        at: result.timestamp + 1 + i,
        key,
        step: "draft",
        served: "ok" as const
      }))
    ]
    assert.deepStrictEqual(check(events, { requests: again(1) }), [])
    assert.include(invariants(check(events, { requests: again(2) })), "no completed step re-ran")
    // One more per fault injected while the step was under way; faults before it or after it explain nothing.
    const during = [result.timestamp, result.timestamp + 1]
    assert.deepStrictEqual(check(events, { requests: again(2), faultTimes: during }), [])
    assert.include(invariants(check(events, { requests: again(3), faultTimes: during })), "no completed step re-ran")
    const elsewhere = [0, result.timestamp + 60_000]
    assert.include(invariants(check(events, { requests: again(2), faultTimes: elsewhere })), "no completed step re-ran")
  })

  it("an effect step executed twice after it completed is caught", () => {
    const events = cleanEvents()
    const completed = events.find((e) => e.step === "tally" && e.payload.state === "step_completed")!
    const tallies = [completed.timestamp - 1, completed.timestamp + 5, completed.timestamp + 9]
    assert.include(invariants(check(events, { tallies })), "no completed step re-ran")
  })

  it("text that is not the model's, or repeated, is caught", () => {
    const events = cleanEvents()
    const repeated = events.map((e) =>
      e.step === "draft" && e.index === 2 ? { ...e, payload: { text: answer(key, "draft") } } : e
    )
    assert.include(invariants(check(repeated)), "output: the streamed text is the model's, once")
    const wrong = events.map((e) => (e.step === "final" && e.kind === "result" ? { ...e, payload: { text: "x" } } : e))
    assert.include(invariants(check(wrong)), "output: the message is the model's")
  })

  it("a retry that did not wait its backoff is caught", () => {
    const events = cleanEvents()
    const first = events.filter((e) => e.step === "draft")
    const failed = [
      { ...first[0]!, attempt: 1 },
      { ...first[0]!, attempt: 1, index: 1, kind: "error", payload: { reason: "OverloadedError" } }
    ]
    const retried = first.map((e) => ({
      ...e,
      attempt: 2,
      payload: e.index === 0 ? { state: "attempt_started", attempt: 2 } : e.payload,
      // The second attempt starts 1 ms after the failure: far below any backoff.
      timestamp: first[0]!.timestamp + 2 + e.index
    }))
    const rest = events.filter((e) => e.step !== "draft")
    const all = resequence([...failed, ...retried, ...rest])
    assert.include(invariants(check(all)), "retries wait their backoff")
  })

  it("a wrong end, a registry that disagrees and an undelivered decision are caught", () => {
    const events = cleanEvents()
    const wrongEnd = checkCampaignRun({
      key,
      record: {
        ...record(events),
        registry: Option.some({ status: "running" }),
        waits: [{ step: "review", state: "decided", response: { approved: true }, delivered: false }]
      },
      end: { ok: { ...expectedCampaign(key), approved: false } },
      requests: requestsFor(events),
      tallies: [0]
    })
    assert.includeMembers(invariants(wrongEnd), [
      "run: expected end",
      "run: registry agrees",
      "decision recorded and delivered"
    ])
  })
})
