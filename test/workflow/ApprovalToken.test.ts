import { assert, describe, it, layer } from "@effect/vitest"
import { Effect, Layer, Redacted } from "effect"
import { ApprovalSecret, Claims, sign, verify } from "../../src/workflow/ApprovalToken.ts"

const secret = "a-test-secret-that-is-long-enough-0123456789"
const claims = new Claims({ workflow: "PlanAndAct", executionId: "exec-1", step: "review", purpose: "approval" })

/** Re-encodes a token's claims part with changes, keeping the original signature. */
const tamper = (token: string, change: Record<string, unknown>) => {
  const [version, body, signature] = token.split(".") as [string, string, string]
  const json = { ...JSON.parse(Buffer.from(body, "base64url").toString()), ...change }
  return `${version}.${Buffer.from(JSON.stringify(json)).toString("base64url")}.${signature}`
}

const reasonOf = (token: string, purpose: "approval" | "input" = "approval") =>
  Effect.map(Effect.flip(verify(token, purpose)), (error) => error.reason)

layer(ApprovalSecret.layer(Redacted.make(secret)))("ApprovalToken", (scoped) => {
  scoped.effect("verifies what it signed, and signs the same claims the same way", () =>
    Effect.gen(function* () {
      const token = yield* sign(claims)
      assert.deepStrictEqual(yield* verify(token, "approval"), claims)
      assert.strictEqual(yield* sign(claims), token)
      assert.notInclude(token, secret)
    })
  )

  scoped.effect("rejects changed claims as forged: another run, another step", () =>
    Effect.gen(function* () {
      const token = yield* sign(claims)
      assert.strictEqual(yield* reasonOf(tamper(token, { executionId: "exec-2" })), "forged")
      assert.strictEqual(yield* reasonOf(tamper(token, { step: "other" })), "forged")
    })
  )

  scoped.effect("rejects a changed or truncated signature as forged", () =>
    Effect.gen(function* () {
      const token = yield* sign(claims)
      const last = token.at(-2) === "A" ? "B" : "A"
      assert.strictEqual(yield* reasonOf(`${token.slice(0, -2)}${last}${token.at(-1)}`), "forged")
      assert.strictEqual(yield* reasonOf(token.slice(0, -4)), "forged")
    })
  )

  scoped.effect("rejects other spellings of a real signature, which Node's base64url decoder accepts", () =>
    Effect.gen(function* () {
      const token = yield* sign(claims)
      const signature = token.slice(token.lastIndexOf(".") + 1)
      // 32 bytes in 43 characters: the last one carries 4 bits and 2 unused ones.
      const last = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
      const sibling = last[last.indexOf(signature.at(-1)!) ^ 1]!
      const spellings = [
        `${token.slice(0, -1)}${sibling}`, // the unused low bit set
        `${token}=`, // padding
        `${token.slice(0, -5)}!${token.slice(-5)}`, // a character outside the alphabet, skipped
        `${token.slice(0, -5)}+${token.slice(-4)}` // base64's '+' for base64url's '-', decoded alike
      ]
      for (const spelling of spellings) {
        assert.deepStrictEqual(
          Buffer.from(spelling.slice(spelling.lastIndexOf(".") + 1), "base64url").subarray(0, 32).length,
          32
        )
        assert.strictEqual(yield* reasonOf(spelling), "forged", spelling)
      }
    })
  )

  scoped.effect("rejects a token for another purpose", () =>
    Effect.gen(function* () {
      const token = yield* sign(claims)
      assert.strictEqual(yield* reasonOf(token, "input"), "wrong_purpose")
    })
  )

  scoped.effect("rejects what is not a token, and Effect's own unsigned tokens", () =>
    Effect.gen(function* () {
      assert.strictEqual(yield* reasonOf(""), "malformed")
      assert.strictEqual(yield* reasonOf("not-a-token"), "malformed")
      assert.strictEqual(yield* reasonOf("eca2.abc.def"), "malformed")
      const effectStyle = Buffer.from(JSON.stringify(["PlanAndAct", "exec-1", "approval/review"])).toString("base64url")
      assert.strictEqual(yield* reasonOf(effectStyle), "malformed")
    })
  )

  scoped.effect("rejects a token signed with another secret", () =>
    Effect.gen(function* () {
      const foreign = yield* sign(claims).pipe(
        Effect.provide(ApprovalSecret.layer(Redacted.make("another-secret-that-is-also-long-enough!!")))
      )
      assert.strictEqual(yield* reasonOf(foreign), "forged")
    })
  )
})

describe("ApprovalSecret", () => {
  it.effect("refuses a secret shorter than 32 characters", () =>
    Effect.gen(function* () {
      const error = yield* Effect.flip(Layer.build(ApprovalSecret.layer(Redacted.make("short"))))
      assert.strictEqual(error._tag, "InvalidSecret")
      assert.notInclude(error.message, "short")
    }).pipe(Effect.scoped)
  )
})
