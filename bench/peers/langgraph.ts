/**
 * LangGraph.js (`@langchain/langgraph`) with its Postgres checkpointer
 * (`@langchain/langgraph-checkpoint-postgres`), on a database of its own.
 * The workflow is a graph of N nodes in sequence; each node is one
 * super-step, after which LangGraph saves the node's writes (`putWrites`,
 * one transaction) and a new checkpoint (`put`, another). With
 * `durability: "sync"` the checkpoint is saved before the next node starts,
 * the guarantee the other systems give; the default, "async", saves it while
 * the next node runs.
 */
import { Annotation, START, StateGraph } from "@langchain/langgraph"
import { PostgresSaver } from "@langchain/langgraph-checkpoint-postgres"
import { Effect } from "effect"
import { type Peer, versionOf } from "./Peer.ts"

const State = Annotation.Root({ total: Annotation<number>() })

const graphOf = (steps: number, checkpointer: PostgresSaver) =>
  new StateGraph(State)
    .addSequence(
      Array.from({ length: steps }, (_, i) => [
        `step-${i}`,
        (state: typeof State.State) => ({ total: state.total + 1 })
      ])
    )
    .addEdge(START, "step-0")
    .compile({ checkpointer })

export const peer: Peer = {
  key: "langgraph",
  name: `LangGraph.js ${versionOf("@langchain/langgraph")} (PostgresSaver ${versionOf("@langchain/langgraph-checkpoint-postgres")}, durability "sync")`,
  storage: "Postgres: the node's writes and a new checkpoint, two transactions",
  postgres: true,
  start: (url) =>
    Effect.gen(function* () {
      const checkpointer = yield* Effect.acquireRelease(
        Effect.sync(() => PostgresSaver.fromConnString(url)),
        (saver) => Effect.promise(() => saver.end())
      )
      yield* Effect.tryPromise(() => checkpointer.setup())
      const graphs = new Map<number, ReturnType<typeof graphOf>>()
      const graph = (steps: number) => {
        const compiled = graphs.get(steps) ?? graphOf(steps, checkpointer)
        graphs.set(steps, compiled)
        return compiled
      }
      return {
        run: (id: string, steps: number) =>
          Effect.tryPromise(async () => {
            const state = await graph(steps).invoke(
              { total: 0 },
              // One super-step per node; the default limit of 25 would stop longer workflows.
              { configurable: { thread_id: id }, durability: "sync", recursionLimit: steps + 10 }
            )
            return state.total
          })
      }
    })
}
