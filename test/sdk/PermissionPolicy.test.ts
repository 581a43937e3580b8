import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import * as PermissionPolicy from "../../src/sdk/PermissionPolicy.ts"

const decide = (layer: Layer.Layer<PermissionPolicy.PermissionPolicy>, toolName: string) =>
  PermissionPolicy.PermissionPolicy.use((policy) => policy.decide({ toolName, input: {} })).pipe(Effect.provide(layer))

class Reviewer extends Context.Service<Reviewer, { readonly allows: (tool: string) => boolean }>()("test/Reviewer") {}

describe("PermissionPolicy", () => {
  it.effect("denies by default", () =>
    Effect.gen(function* () {
      const decision = yield* decide(PermissionPolicy.PermissionPolicy.layerDenyAll, "Bash")
      assert.strictEqual(decision._tag, "Deny")
    })
  )

  it.effect("allows exact names and prefixes, and nothing else", () =>
    Effect.gen(function* () {
      const layer = PermissionPolicy.PermissionPolicy.layerAllow(["Read", "mcp__tools__*"])
      assert.strictEqual((yield* decide(layer, "Read"))._tag, "Allow")
      assert.strictEqual((yield* decide(layer, "mcp__tools__add"))._tag, "Allow")
      assert.strictEqual((yield* decide(layer, "ReadFile"))._tag, "Deny")
      assert.strictEqual((yield* decide(layer, "mcp__other__add"))._tag, "Deny")
    })
  )

  it.effect("runs an Effect policy with the services it needs", () =>
    Effect.gen(function* () {
      const layer = PermissionPolicy.PermissionPolicy.layer((request) =>
        Effect.gen(function* () {
          const reviewer = yield* Reviewer
          return reviewer.allows(request.toolName) ? PermissionPolicy.allow() : PermissionPolicy.deny("no")
        })
      ).pipe(Layer.provide(Layer.succeed(Reviewer)({ allows: (tool) => tool === "Write" })))
      assert.strictEqual((yield* decide(layer, "Write"))._tag, "Allow")
      assert.strictEqual((yield* decide(layer, "Bash"))._tag, "Deny")
    })
  )

  it.effect("denies when the policy itself fails", () =>
    Effect.gen(function* () {
      const layer = PermissionPolicy.PermissionPolicy.layer(() => Effect.fail("database down"))
      const decision = yield* decide(layer, "Write")
      assert.strictEqual(decision._tag, "Deny")
    })
  )
})
