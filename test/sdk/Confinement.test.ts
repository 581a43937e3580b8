/**
 * Safety defaults: no skipped permission checks and no working directory
 * outside the workspace root, unless the operator allowed them.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { Cause, Effect, Exit, Layer } from "effect"
import { AgentSdk } from "../../src/sdk/AgentSdk.ts"
import * as Confinement from "../../src/sdk/Confinement.ts"
import { PermissionPolicy } from "../../src/sdk/PermissionPolicy.ts"
import * as ScriptedModel from "../../src/testing/ScriptedModel.ts"

const root = Fs.mkdtempSync(Path.join(Os.tmpdir(), "workspace-"))
Fs.mkdirSync(Path.join(root, "run-1"))
const outside = Fs.mkdtempSync(Path.join(Os.tmpdir(), "elsewhere-"))
Fs.symlinkSync(outside, Path.join(root, "escape"))

const refused = (result: unknown) => (result instanceof Confinement.UnsafeQueryOptions ? result.reason : "allowed")

describe("Confinement.check", () => {
  it("refuses skipping permission checks unless allowed", () => {
    assert.strictEqual(refused(Confinement.check({}, { permissionMode: "bypassPermissions" })), "bypass_permissions")
    assert.strictEqual(refused(Confinement.check({}, { allowDangerouslySkipPermissions: true })), "bypass_permissions")
    assert.strictEqual(refused(Confinement.check({}, { permissionMode: "default" })), "allowed")
    assert.strictEqual(
      refused(Confinement.check({ allowBypassPermissions: true }, { permissionMode: "bypassPermissions" })),
      "allowed"
    )
  })

  it("keeps working directories under the root, through .. and symlinks alike", () => {
    const policy = { workspaceRoot: root }
    assert.deepInclude(Confinement.check(policy, {}), { cwd: Fs.realpathSync(root) })
    assert.deepInclude(Confinement.check(policy, { cwd: "run-1" }), { cwd: Fs.realpathSync(Path.join(root, "run-1")) })
    assert.strictEqual(refused(Confinement.check(policy, { cwd: "../" })), "outside_workspace")
    assert.strictEqual(refused(Confinement.check(policy, { cwd: outside })), "outside_workspace")
    assert.strictEqual(refused(Confinement.check(policy, { cwd: "escape" })), "outside_workspace")
    assert.strictEqual(
      refused(Confinement.check(policy, { cwd: "run-1", additionalDirectories: ["../../"] })),
      "outside_workspace"
    )
    // Without a root, any directory goes.
    assert.deepInclude(Confinement.check({}, { cwd: outside }), { cwd: outside })
  })
})

const setup = (script: ScriptedModel.Script) =>
  Layer.unwrap(
    Effect.map(ScriptedModel.ScriptedModel, (model) =>
      AgentSdk.layer({
        env: ScriptedModel.sdkEnv(model.url, { home: Fs.mkdtempSync(Path.join(Os.tmpdir(), "home-")) }),
        workspaceRoot: root
      })
    )
  ).pipe(Layer.provideMerge(ScriptedModel.ScriptedModel.layer(script)), Layer.provide(PermissionPolicy.layerDenyAll))

describe("AgentSdk with a workspace root", () => {
  it.live("refuses a query outside the root before any process starts, and runs one inside", () =>
    Effect.gen(function* () {
      const sdk = yield* AgentSdk
      const model = yield* ScriptedModel.ScriptedModel
      for (const options of [{ cwd: outside }, { permissionMode: "bypassPermissions" as const }]) {
        const exit = yield* Effect.exit(sdk.run("Delete everything", options))
        assert.isTrue(Exit.isFailure(exit) && Cause.squash(exit.cause) instanceof Confinement.UnsafeQueryOptions)
      }
      assert.strictEqual((yield* model.modelRequests).length, 0)
      assert.strictEqual((yield* sdk.run("Hello", { cwd: "run-1" })).text, "Hi.")
    }).pipe(Effect.provide(setup([ScriptedModel.text("Hi.")])))
  )
})
