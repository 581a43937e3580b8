/**
 * The supervisor: bounded concurrent processes, and nothing left running after shutdown.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Layer, Option, Scope, Stream } from "effect"
import { AgentSdk } from "../../src/sdk/AgentSdk.ts"
import { PermissionPolicy } from "../../src/sdk/PermissionPolicy.ts"
import * as ScriptedModel from "../../src/testing/ScriptedModel.ts"
import { isAlive } from "./ProcessProbe.ts"

const setup = (script: ScriptedModel.Script, maxConcurrentQueries: number) =>
  ScriptedModel.layerAgentSdk({ maxRetries: 0, maxConcurrentQueries }).pipe(
    Layer.provideMerge(ScriptedModel.ScriptedModel.layer(script)),
    Layer.provide(PermissionPolicy.layerDenyAll)
  )

/** Starts a query whose model never answers and waits until the CLI has asked. */
const startHanging = (sdk: AgentSdk["Service"], model: ScriptedModel.ScriptedModel["Service"]) =>
  Effect.gen(function* () {
    const before = (yield* model.modelRequests).length
    const handle = yield* sdk.query("hang")
    yield* Effect.forkScoped(Stream.runDrain(handle.stream))
    yield* Effect.repeat(model.modelRequests, { until: (requests) => requests.length > before })
    return Option.getOrThrow(yield* handle.pid)
  })

describe("AgentSdk supervisor", () => {
  it.live("holds a query beyond the limit until a process is free", () =>
    Effect.gen(function* () {
      const sdk = yield* AgentSdk
      const model = yield* ScriptedModel.ScriptedModel
      const first = yield* Scope.make()
      yield* startHanging(sdk, model).pipe(Scope.provide(first))
      assert.strictEqual(yield* sdk.active, 1)

      const second = yield* Effect.forkChild(sdk.run("second"))
      // It cannot have started: the only permit is held by the hanging query.
      yield* Effect.yieldNow
      assert.isUndefined(second.pollUnsafe())
      assert.strictEqual((yield* model.modelRequests).length, 1)

      yield* Scope.close(first, Exit.void)
      const result = yield* Fiber.join(second)
      assert.strictEqual(result.text, "second answer")
      assert.strictEqual((yield* model.modelRequests).length, 2)
      assert.strictEqual(yield* sdk.active, 0)
    }).pipe(Effect.provide(setup([ScriptedModel.hang, ScriptedModel.text("second answer")], 1)))
  )

  it.live("stops every running process when the layer shuts down", () =>
    Effect.gen(function* () {
      const layerScope = yield* Scope.make()
      const context = yield* Layer.buildWithScope(
        setup(
          ScriptedModel.perSession(() => [ScriptedModel.hang]),
          4
        ),
        layerScope
      )
      const sdk = context.mapUnsafe.get(AgentSdk.key) as AgentSdk["Service"]
      const model = context.mapUnsafe.get(ScriptedModel.ScriptedModel.key) as ScriptedModel.ScriptedModel["Service"]
      // The queries' own scopes outlive the layer: only the supervisor can stop them.
      const callerScope = yield* Scope.make()
      const pids = [
        yield* startHanging(sdk, model).pipe(Scope.provide(callerScope)),
        yield* startHanging(sdk, model).pipe(Scope.provide(callerScope))
      ]
      assert.isTrue(pids.every(isAlive))
      yield* Scope.close(layerScope, Exit.void)
      assert.isFalse(pids.some(isAlive))
      yield* Scope.close(callerScope, Exit.void)
    })
  )
})
