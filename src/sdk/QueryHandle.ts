/**
 * A running agent query: one Claude Code process, owned by a `Scope`.
 *
 * The SDK's `Query` is an async generator that may be iterated once, throws
 * after an interrupt, rejects `interrupt()` once finished (unhandled, that
 * rejection crashes Node) and closes its process lazily. The handle turns all
 * of that into one `Stream`, a typed `result`, and a process that is gone, by
 * SIGKILL if it must be, when the scope closes.
 *
 * @since 0.1.0
 */
import type * as Sdk from "@anthropic-ai/claude-agent-sdk"
import type { ChildProcess } from "node:child_process"
import { Cause, Deferred, Duration, Effect, Option, Queue, Ref, Stream } from "effect"
import * as AgentMessage from "./AgentMessage.ts"
import * as AgentSdkError from "./AgentSdkError.ts"

/**
 * @category models
 */
export interface QueryHandle {
  /**
   * The SDK messages of this query, in order. Ends when the query ends (after
   * the first result, unless the query is multi-turn). It can be run once.
   */
  readonly stream: Stream.Stream<AgentMessage.AgentMessage, AgentSdkError.AgentSdkError>
  /**
   * The summary of the last finished turn, or the reason the query failed.
   * Drains the stream if nobody else is consuming it.
   */
  readonly result: Effect.Effect<AgentMessage.QueryResult, AgentSdkError.AgentSdkError>
  /** The session id, known once the stream has delivered the CLI's init message. */
  readonly sessionId: Effect.Effect<string, AgentSdkError.AgentSdkError>
  /** Stops the current turn; the query then ends with `InterruptedError`. */
  readonly interrupt: Effect.Effect<void>
  /** Sends another user message (multi-turn queries). */
  readonly send: (message: string | Sdk.SDKUserMessage) => Effect.Effect<void, AgentSdkError.AgentSdkError>
  /** Sends every message of a stream, in order (multi-turn queries). */
  readonly streamInput: <E, R>(
    input: Stream.Stream<string | Sdk.SDKUserMessage, E, R>
  ) => Effect.Effect<void, AgentSdkError.AgentSdkError | E, R>
  /** Ends the input: the CLI finishes the queued turns and exits. */
  readonly endInput: Effect.Effect<void>
  /** The operating-system process id of the CLI, once it has been spawned. */
  readonly pid: Effect.Effect<Option.Option<number>>
}

/**
 * What `make` needs from the SDK side; `AgentSdk` supplies it.
 *
 * @category models
 */
export interface MakeOptions {
  readonly prompt: string | Sdk.SDKUserMessage
  readonly multiTurn: boolean
  /** Time between SIGTERM and SIGKILL when the scope closes a live process. */
  readonly killGracePeriod: Duration.Duration
  /** Starts the SDK query reading from `input`; the spawn hook reports the child. */
  readonly start: (input: AsyncIterable<Sdk.SDKUserMessage>, onSpawn: (child: ChildProcess) => void) => Sdk.Query
  /** The last lines the CLI wrote to stderr, for error reports. */
  readonly stderrTail: () => string
}

const userMessage = (message: string | Sdk.SDKUserMessage): Sdk.SDKUserMessage =>
  typeof message === "string"
    ? { type: "user", message: { role: "user", content: message }, parent_tool_use_id: null }
    : message

const waitForExit = (child: ChildProcess): Effect.Effect<void> =>
  child.exitCode !== null || child.signalCode !== null
    ? Effect.void
    : Effect.callback<void>((resume) => {
        const onExit = () => resume(Effect.void)
        child.once("exit", onExit)
        return Effect.sync(() => child.off("exit", onExit))
      })

/**
 * Stops the process for good: SIGTERM, then SIGKILL after the grace period.
 */
const terminate = (child: ChildProcess, gracePeriod: Duration.Duration): Effect.Effect<void> =>
  Effect.gen(function* () {
    if (child.exitCode !== null || child.signalCode !== null) return
    child.kill("SIGTERM")
    const exited = yield* waitForExit(child).pipe(Effect.timeoutOption(gracePeriod))
    if (Option.isNone(exited)) {
      child.kill("SIGKILL")
      yield* waitForExit(child)
    }
  })

/**
 * Starts a query whose process lives as long as the current scope.
 *
 * @category constructors
 */
export const make = Effect.fnUntraced(function* (options: MakeOptions) {
  const input = yield* Queue.unbounded<Sdk.SDKUserMessage, Cause.Done>()
  yield* Queue.offer(input, userMessage(options.prompt))

  const child = yield* Ref.make(Option.none<ChildProcess>())
  const interrupted = yield* Ref.make(false)
  const started = yield* Ref.make(false)
  const lastAssistant = yield* Ref.make(Option.none<AgentMessage.AssistantMessage>())
  const lastResult = yield* Ref.make(Option.none<AgentMessage.ResultMessage>())
  const sessionId = yield* Deferred.make<string, AgentSdkError.AgentSdkError>()
  const result = yield* Deferred.make<AgentMessage.QueryResult, AgentSdkError.AgentSdkError>()

  const sdkQuery = options.start(Stream.toAsyncIterable(Stream.fromQueue(input)), (spawned) =>
    Effect.runSync(Ref.set(child, Option.some(spawned)))
  )

  yield* Effect.addFinalizer(() =>
    Effect.gen(function* () {
      yield* Queue.end(input)
      // close() ends the SDK's transports; the process itself we stop ourselves,
      // because close() waits before it signals and never escalates.
      yield* Effect.sync(() => sdkQuery.close())
      const spawned = yield* Ref.get(child)
      if (Option.isSome(spawned)) yield* terminate(spawned.value, options.killGracePeriod)
    })
  )

  const processFailure = (cause: unknown) =>
    Effect.gen(function* () {
      const spawned = yield* Ref.get(child)
      const exitCode = Option.match(spawned, { onNone: () => undefined, onSome: (c) => c.exitCode })
      return AgentSdkError.make(
        new AgentSdkError.ProcessError({
          description: cause instanceof Error ? cause.message : String(cause),
          exitCode,
          stderr: options.stderrTail()
        })
      )
    })

  const observe = (message: AgentMessage.AgentMessage) =>
    Effect.gen(function* () {
      switch (message.type) {
        case "system":
          if (message.subtype === "init") yield* Deferred.succeed(sessionId, message.session_id)
          return
        case "assistant":
          return yield* Ref.set(lastAssistant, Option.some(message))
        case "result": {
          yield* Ref.set(lastResult, Option.some(message))
          if (!options.multiTurn || message.subtype !== "success") yield* Queue.end(input)
          return
        }
      }
    })

  // Settles `result` from the last result message, once the stream is over.
  const settle = (exit: "done" | AgentSdkError.AgentSdkError) =>
    Effect.gen(function* () {
      const last = yield* Ref.get(lastResult)
      const wasInterrupted = yield* Ref.get(interrupted)
      const outcome = Option.isSome(last)
        ? AgentMessage.toResult(last.value, {
            lastAssistant: yield* Ref.get(lastAssistant),
            interrupted: wasInterrupted
          })
        : Effect.fail(
            exit === "done" || wasInterrupted ? AgentSdkError.make(new AgentSdkError.InterruptedError()) : exit
          )
      yield* Deferred.completeWith(result, outcome)
      // A query that died before its init message has no session id but its failure.
      yield* Deferred.completeWith(
        sessionId,
        Effect.map(Deferred.await(result), (r) => r.sessionId)
      )
    })

  const messages: Stream.Stream<AgentMessage.AgentMessage, AgentSdkError.AgentSdkError> = Stream.fromAsyncIterable(
    sdkQuery,
    (cause) => cause
  ).pipe(
    // After our own interrupt the SDK throws once the result is out: that is the
    // expected end of the stream, not a failure.
    Stream.catch((cause) =>
      Effect.gen(function* () {
        const wasInterrupted = yield* Ref.get(interrupted)
        const last = yield* Ref.get(lastResult)
        if (wasInterrupted || Option.isSome(last)) return Stream.empty
        return Stream.fail(yield* processFailure(cause))
      }).pipe(Stream.unwrap)
    ),
    Stream.mapEffect(AgentMessage.decode),
    Stream.tap(observe),
    Stream.onExit((exit) =>
      settle(
        exit._tag === "Success"
          ? "done"
          : Option.getOrElse(Cause.findErrorOption(exit.cause), () =>
              AgentSdkError.make(new AgentSdkError.InterruptedError())
            )
      )
    )
  )

  const once = Ref.getAndSet(started, true)

  const stream: QueryHandle["stream"] = Stream.unwrap(
    Effect.map(once, (already) =>
      already ? Stream.die(new Error("QueryHandle.stream can be run only once")) : messages
    )
  )

  const handle: QueryHandle = {
    stream,
    result: Effect.gen(function* () {
      if (!(yield* once)) yield* Stream.runDrain(messages).pipe(Effect.ignore)
      return yield* Deferred.await(result)
    }),
    sessionId: Deferred.await(sessionId),
    interrupt: Effect.gen(function* () {
      yield* Ref.set(interrupted, true)
      // Rejects once the query has finished; that is not our caller's problem.
      yield* Effect.tryPromise(() => sdkQuery.interrupt()).pipe(Effect.ignore)
    }),
    send: (message) =>
      Queue.offer(input, userMessage(message)).pipe(
        Effect.flatMap((accepted) =>
          accepted ? Effect.void : Effect.fail(AgentSdkError.make(new AgentSdkError.InputClosedError()))
        )
      ),
    streamInput: (more) => Stream.runForEach(more, handle.send),
    endInput: Effect.asVoid(Queue.end(input)),
    pid: Effect.map(
      Ref.get(child),
      Option.flatMapNullishOr((c) => c.pid)
    )
  }
  return handle
})
