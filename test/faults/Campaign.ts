/**
 * The workflows of the fault campaign, and what each run is expected to do.
 *
 * Everything a run does is derived from its key by a hash, so the runner
 * processes (which run and decide) and the campaign (which answers as the
 * model and checks the outcome) agree without talking: whether the draft
 * streams slowly, whether the run has parallel parts, whether the reviewer
 * approves and how soon, whether the model always fails its first step.
 *
 * - `Campaign`: agent step (slow streaming for some runs), an effect step, an
 *   in-memory sleep, a durable clock, an approval, parallel agent steps, and a
 *   last agent step that continues the first one's session.
 * - `Gates`: approvals only, several in a row, decided as soon as they are
 *   requested, some with a 1 MiB comment, with short durable clocks between
 *   them: the shapes in which Effect's engine once lost a resume.
 * - `ModelFault`: one agent step, for the model-fault scenarios.
 */
import * as Fs from "node:fs"
import { Duration, Effect, Schema } from "effect"
import * as DurableClock from "effect/workflow/DurableClock"
import * as Workflow from "effect/workflow/Workflow"
import * as AgentSdkError from "../../src/sdk/AgentSdkError.ts"
import * as AgentWorkflow from "../../src/workflow/AgentWorkflow.ts"

/** A fraction in [0, 1) from a string (FNV-1a, then murmur3's finalizer): the same in every process. */
export const unit = (key: string): number => {
  let hash = 2166136261
  for (let i = 0; i < key.length; i++) {
    hash ^= key.charCodeAt(i)
    hash = Math.imul(hash, 16777619)
  }
  hash ^= hash >>> 16
  hash = Math.imul(hash, 0x85ebca6b)
  hash ^= hash >>> 13
  hash = Math.imul(hash, 0xc2b2ae35)
  hash ^= hash >>> 16
  return (hash >>> 0) / 2 ** 32
}

/** What a `Campaign` run does, derived from its key. */
export interface Profile {
  /** The draft streams slowly (about two seconds), so that kills land mid-stream. */
  readonly slow: boolean
  /** Two agent steps in parallel after the approval. */
  readonly parts: boolean
  readonly approve: boolean
  /** How long the reviewer takes; 0 decides as soon as the request is seen. */
  readonly decideAfterMs: number
  /** Every request of the draft fails with 529: the run must fail with a typed error after its retries. */
  readonly doomed: boolean
}

export const profile = (key: string): Profile => {
  const decide = unit(`${key}/decide`)
  return {
    slow: unit(`${key}/slow`) < 0.6,
    parts: unit(`${key}/parts`) < 0.5,
    approve: unit(`${key}/approve`) < 0.85,
    decideAfterMs: decide < 0.25 ? 0 : Math.round(200 + 2800 * unit(`${key}/delay`)),
    doomed: unit(`${key}/doomed`) < 0.06
  }
}

/** The prompt of a step: the tag lets the model, and the checks, tell every request apart. */
export const prompt = (key: string, step: string): string =>
  `[fault-campaign key=${key} step=${step}] Answer with the scripted text for this step.`

/** Reads the tag back from a request's last user text. */
export const parsePrompt = (text: string): { readonly key: string; readonly step: string } | undefined => {
  const match = /\[fault-campaign key=(\S+) step=(\S+)\]/.exec(text)
  return match === null ? undefined : { key: match[1]!, step: match[2]! }
}

const words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"]

/** What the model answers to a step: 60 to 150 characters that name the run and the step. */
export const answer = (key: string, step: string): string => {
  const length = 60 + Math.floor(90 * unit(`${key}/${step}/length`))
  let text = `${key}:${step}`
  for (let i = 0; text.length < length; i++) text += ` ${words[Math.floor(10 * unit(`${key}/${step}/${i}`))]}`
  return text
}

/** The retry policy of the campaign's agent steps: short backoffs, so that runs end within the campaign. */
export const retry = { times: 3, base: Duration.millis(600), max: Duration.seconds(3) } as const

export class CampaignResult extends Schema.Class<CampaignResult>("faults/CampaignResult")({
  draft: Schema.String,
  tally: Schema.String,
  approved: Schema.Boolean,
  parts: Schema.Array(Schema.String),
  final: Schema.optional(Schema.String)
}) {}

export const Campaign = Workflow.make("Faults/Campaign", {
  payload: { key: Schema.String },
  success: CampaignResult,
  error: AgentSdkError.AgentSdkError,
  idempotencyKey: ({ key }) => key
})

/** The result a `Campaign` run must end with (unless it is doomed). */
export const expectedCampaign = (key: string) => {
  const p = profile(key)
  return {
    draft: answer(key, "draft"),
    tally: `tally ${key}`,
    approved: p.approve,
    parts: p.approve && p.parts ? [answer(key, "part#0"), answer(key, "part#1")] : [],
    ...(p.approve ? { final: answer(key, "final") } : {})
  }
}

/** Appends a line to the activity log the campaign reads: every execution of an effect step. */
const logActivity = (line: string) =>
  Effect.sync(() => {
    const log = process.env.FAULTS_ACTIVITY_LOG
    if (log !== undefined) Fs.appendFileSync(log, `${Date.now()} ${line}\n`)
  })

export const CampaignLayer = AgentWorkflow.toLayer(Campaign, ({ key }) =>
  Effect.gen(function* () {
    const p = profile(key)
    const draft = yield* AgentWorkflow.runStep("draft", { prompt: prompt(key, "draft"), retry })
    yield* AgentWorkflow.sleep("pause", Duration.millis(800))
    const tally = yield* AgentWorkflow.runStep("tally", {
      execute: Effect.as(logActivity(`${key} tally`), `tally ${key}`),
      success: Schema.String
    })
    // A real durable clock (AgentWorkflow.sleep keeps waits under a minute in memory).
    yield* DurableClock.sleep({ name: "cool-down", duration: Duration.millis(1500), inMemoryThreshold: Duration.zero })
    const decision = yield* AgentWorkflow.awaitApproval("review", { request: { key, draft: draft.text } })
    if (!decision.approved) return new CampaignResult({ draft: draft.text, tally, approved: false, parts: [] })
    const parts = p.parts
      ? yield* Effect.forEach(
          [0, 1],
          (i) => {
            const step = AgentWorkflow.iteration("part", i)
            return AgentWorkflow.runStep(step, { prompt: prompt(key, step), retry })
          },
          { concurrency: 2 }
        )
      : []
    const final = yield* AgentWorkflow.runStep("final", {
      prompt: prompt(key, "final"),
      session: draft.sessionId,
      retry
    })
    return new CampaignResult({
      draft: draft.text,
      tally,
      approved: true,
      parts: parts.map((part) => part.text),
      final: final.text
    })
  })
)

/** How many approvals a `Gates` run waits for, one after the other. */
export const gateCount = 4

/** The comment a `Gates` decision carries: 1 MiB for one run in ten, as in Effect issue #8238. */
export const gateComment = (key: string, gate: number): string =>
  unit(`${key}/large`) < 0.1 && gate === 0 ? "x".repeat(1024 * 1024) : `gate ${gate} of ${key}`

export class GatesResult extends Schema.Class<GatesResult>("faults/GatesResult")({
  approvals: Schema.Number,
  commentBytes: Schema.Number
}) {}

export const Gates = Workflow.make("Faults/Gates", {
  payload: { key: Schema.String },
  success: GatesResult,
  idempotencyKey: ({ key }) => key
})

export const expectedGates = (key: string) => {
  let commentBytes = 0
  for (let gate = 0; gate < gateCount; gate++) commentBytes += gateComment(key, gate).length
  return { approvals: gateCount, commentBytes }
}

export const GatesLayer = AgentWorkflow.toLayer(Gates, ({ key }) =>
  Effect.gen(function* () {
    let approvals = 0
    let commentBytes = 0
    for (let gate = 0; gate < gateCount; gate++) {
      const decision = yield* AgentWorkflow.awaitApproval(AgentWorkflow.iteration("gate", gate), {
        request: { key, gate }
      })
      if (decision.approved) approvals++
      commentBytes += decision.comment?.length ?? 0
      if (gate % 2 === 1) {
        yield* DurableClock.sleep({
          name: `nap-${gate}`,
          duration: Duration.millis(300),
          inMemoryThreshold: Duration.zero
        })
      }
    }
    return new GatesResult({ approvals, commentBytes })
  })
)

/** What the reviewer answers to a request of either workflow. */
export const decisionFor = (workflow: string, key: string, step: string) =>
  workflow === Gates._tag
    ? { approved: true, comment: gateComment(key, Number(step.split("#")[1])) }
    : { approved: profile(key).approve, comment: `reviewed ${key}` }

export const ModelFault = Workflow.make("Faults/ModelFault", {
  payload: { key: Schema.String, times: Schema.Number, cliRetries: Schema.Number },
  success: Schema.String,
  error: AgentSdkError.AgentSdkError,
  idempotencyKey: ({ key }) => key
})

/** The retry policy of the model-fault scenarios. */
export const modelFaultRetry = (times: number) => ({ times, base: Duration.millis(500), max: Duration.seconds(2) })

export const ModelFaultLayer = AgentWorkflow.toLayer(ModelFault, ({ key, times, cliRetries }) =>
  Effect.map(
    AgentWorkflow.runStep("ask", {
      prompt: prompt(key, "ask"),
      retry: modelFaultRetry(times),
      // 0: every model error reaches the durable layer at once; more: the CLI retries first (and honours retry-after).
      query: { env: { CLAUDE_CODE_MAX_RETRIES: String(cliRetries) } }
    }),
    (result) => result.text
  )
)
