/**
 * Tokens handed to people who approve a step or answer a question.
 *
 * Effect's own `DurableDeferred` tokens are base64 of `[workflow, executionId,
 * name]`: anyone who knows those can complete the deferred. Ours carry the
 * same facts plus the step and purpose, and an HMAC-SHA256 over them with a
 * server secret, checked in constant time. A token is bound to one run, one
 * step and one purpose; a token for an approval cannot answer an input
 * request, and a changed byte makes it a forgery.
 *
 * Whether a valid token may still be used (the run finished, the step was
 * already decided) is the workflow layer's question, not the token's.
 *
 * @since 0.1.0
 */
import { createHmac, timingSafeEqual } from "node:crypto"
import { Config, Context, Effect, Layer, Redacted, Schema } from "effect"

/**
 * The secret is too short to sign with.
 *
 * @category errors
 */
export class InvalidSecret extends Schema.TaggedError<InvalidSecret>()("InvalidSecret", { length: Schema.Int }) {
  override get message(): string {
    return `The approval secret must be at least 32 characters; it has ${this.length}`
  }
}

const checkSecret = (secret: Redacted.Redacted<string>) =>
  Redacted.value(secret).length >= 32
    ? Effect.succeed(secret)
    : Effect.fail(new InvalidSecret({ length: Redacted.value(secret).length }))

/**
 * The server secret tokens are signed with. At least 32 characters.
 *
 * @category services
 */
export class ApprovalSecret extends Context.Service<ApprovalSecret, Redacted.Redacted<string>>()(
  "effect-claude-agent/workflow/ApprovalSecret"
) {
  /** @category layers */
  static readonly layer = (secret: Redacted.Redacted<string>): Layer.Layer<ApprovalSecret, InvalidSecret> =>
    Layer.effect(ApprovalSecret)(checkSecret(secret))

  /**
   * Reads `AGENT_APPROVAL_SECRET`.
   *
   * @category layers
   */
  static readonly layerConfig: Layer.Layer<ApprovalSecret, InvalidSecret | Config.ConfigError> = Layer.effect(
    ApprovalSecret
  )(Effect.flatMap(Config.Redacted("AGENT_APPROVAL_SECRET"), checkSecret))
}

/**
 * What a token is for.
 *
 * @category schemas
 */
export const Purpose = Schema.Literals(["approval", "input"])

/** @category models */
export type Purpose = typeof Purpose.Type

/**
 * What a token says.
 *
 * @category schemas
 */
export class Claims extends Schema.Class<Claims>("effect-claude-agent/ApprovalToken/Claims")({
  workflow: Schema.String,
  executionId: Schema.String,
  step: Schema.String,
  purpose: Purpose
}) {}

/**
 * The token is not one of ours, was changed, or is for something else. The
 * reason is for logs; a client is told only that the token is invalid.
 *
 * @category errors
 */
export class InvalidToken extends Schema.TaggedError<InvalidToken>()("InvalidToken", {
  reason: Schema.Literals(["malformed", "forged", "wrong_purpose"])
}) {
  override get message(): string {
    return "The token is not valid"
  }
}

const version = "eca1"
const ClaimsJson = Schema.fromJsonString(Claims)

const mac = (secret: Redacted.Redacted<string>, body: string): Buffer =>
  createHmac("sha256", Redacted.value(secret)).update(body).digest()

/**
 * Signs claims: `eca1.<claims>.<mac>`, both parts base64url. Deterministic, so
 * a workflow replaying the step hands out the same token.
 *
 * @category signing
 */
export const sign = (claims: Claims): Effect.Effect<string, never, ApprovalSecret> =>
  Effect.map(ApprovalSecret, (secret) => {
    const body = `${version}.${Buffer.from(Schema.encodeSync(ClaimsJson)(claims)).toString("base64url")}`
    return `${body}.${mac(secret, body).toString("base64url")}`
  })

/**
 * Checks a token's signature and purpose and returns its claims.
 *
 * @category signing
 */
export const verify = (token: string, purpose: Purpose): Effect.Effect<Claims, InvalidToken, ApprovalSecret> =>
  Effect.gen(function* () {
    const secret = yield* ApprovalSecret
    const parts = token.split(".")
    if (parts.length !== 3 || parts[0] !== version) return yield* new InvalidToken({ reason: "malformed" })
    const body = `${parts[0]}.${parts[1]}`
    const given = Buffer.from(parts[2]!, "base64url")
    const expected = mac(secret, body)
    // Node's base64url decoder skips characters outside the alphabet and the last character's unused
    // bits, so other spellings of a real signature decode to it: only the one spelling `sign` writes
    // passes. The comparison is of the caller's own string with its re-encoding, so it leaks nothing.
    // timingSafeEqual needs equal lengths; a wrong length is a forgery anyway.
    if (
      given.toString("base64url") !== parts[2] ||
      given.length !== expected.length ||
      !timingSafeEqual(given, expected)
    ) {
      return yield* new InvalidToken({ reason: "forged" })
    }
    const claims = yield* Schema.decodeUnknownEffect(ClaimsJson)(Buffer.from(parts[1]!, "base64url").toString()).pipe(
      Effect.mapError(() => new InvalidToken({ reason: "malformed" }))
    )
    if (claims.purpose !== purpose) return yield* new InvalidToken({ reason: "wrong_purpose" })
    return claims
  })
