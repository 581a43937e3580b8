/**
 * One event of a run's output: what an agent said, did and was told, in order.
 *
 * `sequence` is the event's offset in its run: 1, 2, 3, … with no gaps, so a
 * consumer that saw offset N resumes from N + 1. `(step, attempt, index)` is
 * the producer's own key: appending the same key twice stores it once, which
 * makes a retried publish harmless, and a retried step publishes under a new
 * `attempt`, so its events never pass for the earlier attempt's.
 *
 * @since 0.1.0
 */
import { Schema } from "effect"

/**
 * @category schemas
 */
export const Kind = Schema.Literals([
  "text_delta",
  "assistant_message",
  "tool_use",
  "tool_result",
  "status",
  "approval_requested",
  "input_requested",
  "decided",
  "result",
  "error"
])

/** @category models */
export type Kind = typeof Kind.Type

/**
 * A stored event.
 *
 * @category schemas
 */
export class OutputEvent extends Schema.Class<OutputEvent>("effect-claude-agent/OutputEvent")({
  runId: Schema.String,
  sequence: Schema.Int,
  step: Schema.String,
  attempt: Schema.Int,
  index: Schema.Int,
  kind: Kind,
  /** JSON. Over the size limit it is `{ blob: <id>, bytes: <size> }`; see `AgentOutput.readBlob`. */
  payload: Schema.Unknown,
  /** Milliseconds since the epoch, when it was stored. */
  timestamp: Schema.Number
}) {}

/**
 * An event as a producer hands it over; the log assigns `sequence` and `timestamp`.
 *
 * @category schemas
 */
export const NewEvent = Schema.Struct({
  step: Schema.String,
  attempt: Schema.Int,
  index: Schema.Int,
  kind: Kind,
  payload: Schema.Unknown
})

/** @category models */
export type NewEvent = typeof NewEvent.Type

/**
 * A payload that was moved to the blob table.
 *
 * @category schemas
 */
export const BlobRef = Schema.Struct({ blob: Schema.String, bytes: Schema.Int })

/** @category models */
export type BlobRef = typeof BlobRef.Type
