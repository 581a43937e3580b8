/**
 * Following a run from the command line: its output events as they happen,
 * coloured by kind, the agent's text streamed inline, a spinner while the
 * agent works, and the token to answer with when the run waits for a person.
 *
 * A follower survives a server restart: a stream that ends with a `retry:`
 * hint is reopened after the hinted delay with `Last-Event-ID`, so nothing is
 * shown twice or skipped.
 *
 * @since 0.1.0
 */
import { Duration, Effect, Fiber, Predicate, Schedule, Stream } from "effect"
import * as Sse from "effect/encoding/Sse"
import type { OutputEvent } from "../output/OutputEvent.ts"
import { AgentClient, CliFailure, describeFailure } from "./AgentClient.ts"

/**
 * How output is written: to a terminal (colours, spinner) or not.
 *
 * @category models
 */
export interface Terminal {
  readonly write: (text: string) => void
  readonly writeStatus: (text: string) => void
  readonly colour: boolean
  readonly interactive: boolean
}

/**
 * The process's own stdout and stderr. Colour follows `NO_COLOR` / `FORCE_COLOR`
 * and whether stdout is a terminal.
 *
 * @category constructors
 */
export const processTerminal = (): Terminal => {
  const tty = process.stdout.isTTY === true
  const colour = process.env.NO_COLOR === undefined && (tty || (process.env.FORCE_COLOR ?? "0") !== "0")
  return {
    write: (text) => void process.stdout.write(text),
    writeStatus: (text) => void process.stderr.write(text),
    colour,
    interactive: tty && process.stderr.isTTY === true
  }
}

const codes = {
  dim: 2,
  bold: 1,
  red: 31,
  green: 32,
  yellow: 33,
  blue: 34,
  magenta: 35,
  cyan: 36
} as const

const paint = (terminal: Terminal, colour: keyof typeof codes, text: string) =>
  terminal.colour ? `\u001b[${codes[colour]}m${text}\u001b[0m` : text

class Reconnect {
  readonly _tag = "Reconnect"
}

const reconnect = (after: Duration.Duration) => Effect.andThen(Effect.sleep(after), Effect.fail(new Reconnect()))

const isTransportError = (error: unknown) =>
  Predicate.isTagged(error, "HttpClientError") &&
  Predicate.hasProperty(error, "reason") &&
  Predicate.isTagged(error.reason, "TransportError")

const frames = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"]

/**
 * How the run ended, from the stream's `end` event.
 *
 * @category models
 */
export interface End {
  readonly runId: string
  readonly status: string
}

/**
 * Follows a run from `from` until it ends, printing each event; with `json`,
 * one JSON object per line (the events, then `{"end": …}`).
 *
 * @category following
 */
export const follow = (
  runId: string,
  options: { readonly from?: number; readonly json: boolean },
  terminal: Terminal
) =>
  Effect.gen(function* () {
    const { api, url } = yield* AgentClient
    let lastId = Math.max(0, (options.from ?? 1) - 1)
    let end: End | undefined
    let atLineStart = true
    let working = false
    let spinnerShown = false
    let lastEventAt = Date.now()
    const streamed = new Set<string>()
    let currentStep: string | undefined

    const clearSpinner = () => {
      if (spinnerShown) terminal.writeStatus("\r\u001b[K")
      spinnerShown = false
    }
    const line = (text: string) => {
      clearSpinner()
      terminal.write((atLineStart ? "" : "\n") + text + "\n")
      atLineStart = true
    }
    const tokenFor = (step: string) =>
      api.runs.get({ params: { runId } }).pipe(
        Effect.map((run) => run.waitingFor.find((w) => w.step === step)?.token),
        Effect.orElseSucceed(() => undefined)
      )

    const render = (event: OutputEvent) =>
      Effect.gen(function* () {
        lastEventAt = Date.now()
        if (options.json) return terminal.write(JSON.stringify(event) + "\n")
        const tag = paint(terminal, "dim", `[${event.step}]`)
        const payload = event.payload as Record<string, any>
        switch (event.kind) {
          case "text_delta": {
            clearSpinner()
            if (currentStep !== event.step || atLineStart) {
              if (!atLineStart) terminal.write("\n")
              terminal.write(`${tag} `)
            }
            currentStep = event.step
            streamed.add(`${event.step}/${event.attempt}`)
            terminal.write(paint(terminal, "cyan", String(payload.text ?? "")))
            atLineStart = false
            working = true
            return
          }
          case "assistant_message":
            // Already shown as it streamed.
            if (!streamed.has(`${event.step}/${event.attempt}`)) {
              line(`${tag} ${paint(terminal, "cyan", String(payload.text ?? ""))}`)
            }
            return
          case "status": {
            const state = String(payload.state ?? "")
            working = state.endsWith("_started")
            const detail = state === "step_failed" ? `: ${String(payload.error ?? "")}` : ""
            return line(`${tag} ${paint(terminal, state === "step_failed" ? "red" : "dim", `${state}${detail}`)}`)
          }
          case "tool_use":
            return line(
              `${tag} ${paint(terminal, "yellow", `tool ${String(payload.name)} ${JSON.stringify(payload.input)}`)}`
            )
          case "tool_result":
            return line(`${tag} ${paint(terminal, payload.isError === true ? "red" : "dim", "tool result")}`)
          case "approval_requested":
          case "input_requested": {
            working = false
            const what = event.kind === "approval_requested" ? "approval" : "an answer"
            line(
              `${tag} ${paint(terminal, "magenta", `waiting for ${what}: ${JSON.stringify(payload.request ?? null)}`)}`
            )
            const token = yield* tokenFor(event.step)
            if (token !== undefined) {
              line(
                paint(
                  terminal,
                  "magenta",
                  event.kind === "approval_requested"
                    ? `  effect-claude-agent approve ${token}   (or --reject)`
                    : `  effect-claude-agent input ${token} <answer>`
                )
              )
            }
            return
          }
          case "decided": {
            const response = payload.response as { approved?: boolean; comment?: string } | string | undefined
            const text =
              typeof response === "object" && response !== null
                ? `${response.approved === true ? "approved" : "rejected"}${response.comment === undefined ? "" : ` (${response.comment})`}`
                : `answered: ${JSON.stringify(response)}`
            const rejected = typeof response === "object" && response?.approved !== true
            return line(
              `${tag} ${paint(terminal, rejected ? "red" : "green", `${payload.timedOut === true ? "timed out, " : ""}${text}`)}`
            )
          }
          case "result": {
            working = false
            const usage = payload.usage ?? {}
            return line(
              `${tag} ${paint(terminal, "blue", `done: ${usage.inputTokens ?? 0} in / ${usage.outputTokens ?? 0} out tokens, $${Number(payload.costUsd ?? 0).toFixed(5)}`)}`
            )
          }
          case "error":
            return line(`${tag} ${paint(terminal, "red", `error: ${JSON.stringify(payload)}`)}`)
        }
      })

    // The spinner: only on a terminal, only while a step works and nothing arrives.
    const spinner = terminal.interactive
      ? yield* Effect.forkChild(
          Effect.repeat(
            Effect.sync(() => {
              if (!working || !atLineStart || Date.now() - lastEventAt < 300) return
              const frame = frames[Math.floor(Date.now() / 100) % frames.length]!
              terminal.writeStatus(
                `\r${paint(terminal, "cyan", frame)} ${paint(terminal, "dim", "the agent is working…")}`
              )
              spinnerShown = true
            }),
            Schedule.spaced("100 millis")
          )
        )
      : undefined

    const attach = Effect.gen(function* () {
      const stream = yield* api.runs.events({
        params: { runId },
        query: {},
        headers: lastId > 0 ? { "last-event-id": String(lastId) } : {}
      })
      if (!Stream.isStream(stream)) return yield* Effect.fail(new CliFailure("the server did not send an event stream"))
      yield* Stream.runForEach(stream, (frame) =>
        Effect.gen(function* () {
          if (frame.event === "end") {
            end = JSON.parse(frame.data) as End
            return
          }
          const event = JSON.parse(frame.data) as OutputEvent
          lastId = event.sequence
          yield* render(event)
        })
      )
    })

    // A server that shuts down sends a retry hint: reconnect after it, from the last
    // event shown, and keep trying while the server restarts.
    let reconnecting = false
    yield* attach.pipe(
      Effect.catch((error): Effect.Effect<never, unknown> => {
        if (Sse.Retry.is(error)) {
          reconnecting = true
          return reconnect(Duration.max(error.duration, Duration.millis(200)))
        }
        return reconnecting && isTransportError(error) ? reconnect(Duration.seconds(1)) : Effect.fail(error)
      }),
      Effect.retry({ while: (error) => error instanceof Reconnect, schedule: Schedule.recurs(120) }),
      Effect.mapError((error) => describeFailure(url, error))
    )
    if (spinner !== undefined) yield* Fiber.interrupt(spinner)
    clearSpinner()
    if (!atLineStart) terminal.write("\n")
    const ended = end ?? { runId, status: "ended" }
    if (options.json) terminal.write(JSON.stringify({ end: ended }) + "\n")
    else {
      const colour = ended.status === "completed" ? "green" : "red"
      terminal.write(paint(terminal, colour, paint(terminal, "bold", `run ${runId} ${ended.status}`)) + "\n")
    }
    return ended
  })
