/**
 * The server's graceful shutdown, as a signal the request handlers watch.
 *
 * Once `begin` runs, new requests are refused with 503 and live event streams
 * end with an SSE `retry:` hint, so followers reconnect (with `Last-Event-ID`)
 * to the next server instead of holding this one open. Only then does the
 * HTTP server stop listening and the engine stop its runs: a run is either
 * suspended at a durable point or interrupted mid-step, and the restarted
 * engine resumes it from its journal.
 *
 * @since 0.1.0
 */
import { Context, Deferred, Effect, Layer } from "effect"

/**
 * @category services
 */
export class Shutdown extends Context.Service<
  Shutdown,
  {
    /** Starts draining; idempotent. */
    readonly begin: Effect.Effect<void>
    readonly isDraining: Effect.Effect<boolean>
    /** Completes when draining starts. */
    readonly draining: Effect.Effect<void>
  }
>()("effect-claude-agent/server/Shutdown") {
  /** @category layers */
  static readonly layer: Layer.Layer<Shutdown> = Layer.effect(Shutdown)(
    Effect.map(Deferred.make<void>(), (signal) =>
      Shutdown.of({
        begin: Effect.asVoid(Deferred.succeed(signal, undefined)),
        isDraining: Deferred.isDone(signal),
        draining: Deferred.await(signal)
      })
    )
  )
}
