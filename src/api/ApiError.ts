/**
 * The errors of the HTTP API, one class per status, each with a `message`
 * that says what was wrong. A client's mistake is always one of these (a 4xx
 * with a JSON body), never a 500, and it never changes anything stored.
 *
 * @since 0.1.0
 */
import { Schema } from "effect"

/**
 * One problem found in a request: where, and what.
 *
 * @category schemas
 */
export const Issue = Schema.Struct({
  path: Schema.Array(Schema.Union([Schema.String, Schema.Number])),
  message: Schema.String
})

/** @category models */
export type Issue = typeof Issue.Type

/**
 * The request is malformed: not JSON, or not the shape the endpoint takes.
 *
 * @category errors
 */
export class BadRequest extends Schema.TaggedError<BadRequest>()(
  "BadRequest",
  { message: Schema.String, issues: Schema.optional(Schema.Array(Issue)) },
  { httpApiStatus: 400 }
) {}

/**
 * No bearer token, or not the server's.
 *
 * @category errors
 */
export class Unauthorized extends Schema.TaggedError<Unauthorized>()(
  "Unauthorized",
  { message: Schema.String },
  { httpApiStatus: 401 }
) {}

/**
 * An approval or input token that this server did not sign, or one for the
 * other purpose. Which of those it is stays in the server's log.
 *
 * @category errors
 */
export class InvalidToken extends Schema.TaggedError<InvalidToken>()(
  "InvalidToken",
  { message: Schema.String },
  { httpApiStatus: 403 }
) {}

/**
 * No such run, workflow, request or route.
 *
 * @category errors
 */
export class NotFound extends Schema.TaggedError<NotFound>()(
  "NotFound",
  { message: Schema.String, resource: Schema.Literals(["run", "workflow", "request", "route"]) },
  { httpApiStatus: 404 }
) {}

/**
 * The request is valid but the run is in the wrong state for it.
 *
 * @category errors
 */
export class Conflict extends Schema.TaggedError<Conflict>()(
  "Conflict",
  {
    message: Schema.String,
    reason: Schema.Literals(["already_decided", "timed_out", "run_finished", "idempotency_key_reused"])
  },
  { httpApiStatus: 409 }
) {}

/**
 * The body is larger than the server accepts.
 *
 * @category errors
 */
export class PayloadTooLarge extends Schema.TaggedError<PayloadTooLarge>()(
  "PayloadTooLarge",
  { message: Schema.String, limitBytes: Schema.Number },
  { httpApiStatus: 413 }
) {}

/**
 * The body is not JSON by its `Content-Type`.
 *
 * @category errors
 */
export class UnsupportedMediaType extends Schema.TaggedError<UnsupportedMediaType>()(
  "UnsupportedMediaType",
  { message: Schema.String },
  { httpApiStatus: 415 }
) {}

/**
 * The input does not satisfy the workflow's payload schema.
 *
 * @category errors
 */
export class InvalidInput extends Schema.TaggedError<InvalidInput>()(
  "InvalidInput",
  { message: Schema.String, workflow: Schema.String, issues: Schema.Array(Issue) },
  { httpApiStatus: 422 }
) {}

/**
 * The server is shutting down; try again (another instance) shortly.
 *
 * @category errors
 */
export class Unavailable extends Schema.TaggedError<Unavailable>()(
  "Unavailable",
  { message: Schema.String },
  { httpApiStatus: 503 }
) {}
