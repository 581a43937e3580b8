/**
 * Sessions in the database: a session started by one CLI home is resumed by
 * another that never saw its transcript, as on two machines.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { AgentSdk } from "../../src/sdk/AgentSdk.ts"
import { PermissionPolicy } from "../../src/sdk/PermissionPolicy.ts"
import { SessionStore } from "../../src/sdk/SessionStore.ts"
import * as ScriptedModel from "../../src/testing/ScriptedModel.ts"

// Each layerAgentSdk has a private HOME and CLAUDE_CONFIG_DIR: two "machines".
const machine = ScriptedModel.layerAgentSdk({ maxRetries: 0 }).pipe(Layer.provide(PermissionPolicy.layerDenyAll))

describe("SessionStore", () => {
  it.effect("stores entries in order, skips a uuid seen before, and keeps sub-transcripts apart", () =>
    Effect.gen(function* () {
      const store = yield* SessionStore
      const key = { projectKey: "p", sessionId: "s1" }
      assert.isNull(yield* store.load(key))
      yield* store.append(key, [
        { type: "user", uuid: "a" },
        { type: "title", value: "t" }
      ])
      yield* store.append(key, [
        { type: "user", uuid: "a" },
        { type: "assistant", uuid: "b" }
      ])
      yield* store.append({ ...key, subpath: "subagents/x" }, [{ type: "user", uuid: "c" }])
      assert.deepStrictEqual(yield* store.load(key), [
        { type: "user", uuid: "a" },
        { type: "title", value: "t" },
        { type: "assistant", uuid: "b" }
      ])
      // The project key differs between machines; the session id decides.
      assert.strictEqual((yield* store.load({ projectKey: "elsewhere", sessionId: "s1" }))?.length, 3)
      assert.deepStrictEqual(yield* store.listSubkeys(key), ["subagents/x"])
      yield* store.delete(key)
      assert.isNull(yield* store.load(key))
      assert.isNull(yield* store.load({ ...key, subpath: "subagents/x" }))
    }).pipe(Effect.provide(SessionStore.layerMemory))
  )

  it.live("resumes on another machine a session whose transcript only the store has", () =>
    Effect.gen(function* () {
      const model = yield* ScriptedModel.ScriptedModel
      const store = yield* SessionStore
      const options = { sessionStore: store.adapter }
      const first = yield* Effect.flatMap(AgentSdk, (sdk) => sdk.run("Remember the word: pelican", options)).pipe(
        Effect.provide(machine)
      )
      const second = yield* Effect.flatMap(AgentSdk, (sdk) =>
        sdk.run("Which word did I ask you to remember?", { ...options, resume: first.sessionId })
      ).pipe(Effect.provide(machine))
      assert.strictEqual(second.text, "pelican")
      const resumed = ScriptedModel.conversationText((yield* model.modelRequests).at(-1)!)
      assert.isTrue(resumed.some((t) => t.includes("Remember the word: pelican")))
      assert.isTrue(resumed.some((t) => t.includes("Noted.")))
    }).pipe(
      Effect.provide(
        Layer.mergeAll(
          SessionStore.layerMemory,
          ScriptedModel.ScriptedModel.layer([ScriptedModel.text("Noted."), ScriptedModel.text("pelican")])
        )
      )
    )
  )
})
