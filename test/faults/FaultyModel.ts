/**
 * The campaign's model: `ScriptedModel` with a script that answers each
 * request by its prompt and injects faults.
 *
 * Every request carries its run's key and step in the prompt (see
 * `Campaign.prompt`). The answer is the step's scripted text; before it, a
 * step may be served up to `maxFaultsPerStep` faults (429 with retry-after,
 * 529, 500, a stream cut mid-message, a hung connection), drawn from a hash
 * of the seed, the step and the request's number within the step, so the
 * plan of every step is the same in every run of a seed whatever the timing.
 * Two faults per step stay within the steps' retry budget; a run whose
 * profile is `doomed` gets 529 on every request of its draft instead.
 *
 * The log records every request with its arrival time: it outlives every
 * runner process and is the proof of what was (and was not) sent again.
 */
import { Effect, type Scope } from "effect"
import * as ScriptedModel from "../../src/testing/ScriptedModel.ts"
import { answer, parsePrompt, profile, unit } from "./Campaign.ts"

export type Served = "ok" | "429" | "529" | "500" | "cut" | "hang" | "untagged"

export interface LoggedRequest {
  readonly at: number
  readonly key: string
  readonly step: string
  readonly served: Served
}

export interface Options {
  readonly seed: number
  /** Chance that a request of a step gets a fault (until the step has had `maxFaultsPerStep`). */
  readonly faultRate: number
  readonly maxFaultsPerStep: number
  /** Whether hung connections are among the faults (each costs the CLI's 10 s watchdog). */
  readonly hangs: boolean
  /** Fixed plans by key, for the model-fault scenarios: request n gets plan[n], the last entry repeating. */
  readonly plans?: ReadonlyMap<string, ReadonlyArray<Served | { readonly retryAfterSeconds: number }>>
}

const streamed = (key: string, step: string): ScriptedModel.Turn & { readonly _tag: "Message" } =>
  step === "draft" && profile(key).slow
    ? ScriptedModel.text(answer(key, step), { chunkSize: 3, chunkDelayMs: 45 })
    : ScriptedModel.text(answer(key, step), { chunkSize: 6, chunkDelayMs: 12 })

const faultTurn = (
  served: Exclude<Served, "ok" | "untagged">,
  turn: ScriptedModel.Turn & { readonly _tag: "Message" },
  draw: number,
  retryAfterSeconds = 1
): ScriptedModel.Turn => {
  switch (served) {
    case "429":
      return ScriptedModel.error(429, { retryAfterSeconds })
    case "529":
      return ScriptedModel.error(529)
    case "500":
      return ScriptedModel.error(500)
    case "hang":
      return ScriptedModel.hang
    case "cut": {
      // Somewhere inside the text, after the message has started.
      const events = ScriptedModel.streamEvents(turn, "model", "id").length
      return ScriptedModel.cut(turn, 3 + Math.floor(draw * Math.max(1, events - 6)))
    }
  }
}

export const make = (
  options: Options
): Effect.Effect<
  {
    readonly url: string
    readonly log: ReadonlyArray<LoggedRequest>
    readonly requestsOf: (key: string) => ReadonlyArray<LoggedRequest>
  },
  never,
  Scope.Scope
> =>
  Effect.gen(function* () {
    const log: Array<LoggedRequest> = []
    const byKey = new Map<string, Array<LoggedRequest>>()
    const faultsByStep = new Map<string, number>()
    const kinds: ReadonlyArray<Exclude<Served, "ok" | "untagged">> = options.hangs
      ? ["429", "529", "500", "cut", "cut", "hang"]
      : ["429", "529", "500", "cut", "cut"]

    const record = (key: string, step: string, served: Served) => {
      const entry = { at: Date.now(), key, step, served }
      log.push(entry)
      const list = byKey.get(key) ?? []
      list.push(entry)
      byKey.set(key, list)
    }

    const script: ScriptedModel.Script = (request) => {
      const tag = parsePrompt(ScriptedModel.lastUserText(request))
      if (tag === undefined) {
        record("?", "?", "untagged")
        return ScriptedModel.text("untagged request")
      }
      const { key, step } = tag
      const n = (byKey.get(key) ?? []).filter((r) => r.step === step).length
      const turn = streamed(key, step)
      const plan = options.plans?.get(key)
      if (plan !== undefined) {
        const entry = plan[Math.min(n, plan.length - 1)]!
        const served: Served = typeof entry === "string" ? entry : "429"
        record(key, step, served)
        if (served === "ok" || served === "untagged") return turn
        return faultTurn(
          served,
          turn,
          unit(`${options.seed}/${key}/${step}/${n}/cut`),
          typeof entry === "string" ? 1 : entry.retryAfterSeconds
        )
      }
      if (step === "draft" && profile(key).doomed) {
        record(key, step, "529")
        return ScriptedModel.error(529)
      }
      const id = `${key}/${step}`
      const faults = faultsByStep.get(id) ?? 0
      if (faults < options.maxFaultsPerStep && unit(`${options.seed}/${id}/${n}`) < options.faultRate) {
        faultsByStep.set(id, faults + 1)
        const kind = kinds[Math.floor(unit(`${options.seed}/${id}/${n}/kind`) * kinds.length)]!
        record(key, step, kind)
        return faultTurn(kind, turn, unit(`${options.seed}/${id}/${n}/cut`))
      }
      record(key, step, "ok")
      return turn
    }

    const model = yield* ScriptedModel.make(script)
    return { url: model.url, log, requestsOf: (key: string) => byKey.get(key) ?? [] }
  })
