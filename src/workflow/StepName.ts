/**
 * Step names are journal keys.
 *
 * Effect records an activity's result under its name: a second step with the
 * same name in one run silently gets the first one's result. Every step of the
 * workflow layer claims its name here first, so a repeated name is a clear
 * defect instead, raised before anything runs.
 *
 * @since 0.1.0
 */
import { Effect, Schema } from "effect"
import { WorkflowInstance } from "effect/workflow/WorkflowEngine"

/**
 * Two steps of one run used the same name, or a name the layer reserves.
 *
 * @category errors
 */
export class InvalidStepName extends Schema.TaggedError<InvalidStepName>()("InvalidStepName", {
  step: Schema.String,
  reason: Schema.Literals(["duplicate", "reserved"])
}) {
  override get message(): string {
    return this.reason === "duplicate"
      ? `The step name "${this.step}" is used twice in one run; name loop iterations with iteration(name, i)`
      : `The step name "${this.step}" contains "/", which the workflow layer reserves for its own journal keys`
  }
}

// Per workflow instance: a replay gets a new instance, so the set is rebuilt
// as the body replays, in the same order.
const claimed = new WeakMap<WorkflowInstance["Service"], Set<string>>()

/**
 * Claims `name` for the current run; a repeated or reserved name is a defect.
 *
 * @category steps
 */
export const claim = (name: string) =>
  Effect.flatMap(WorkflowInstance, (instance) => {
    if (name.includes("/")) return Effect.die(new InvalidStepName({ step: name, reason: "reserved" }))
    const names = claimed.get(instance) ?? new Set<string>()
    claimed.set(instance, names)
    if (names.has(name)) return Effect.die(new InvalidStepName({ step: name, reason: "duplicate" }))
    names.add(name)
    return Effect.void
  })

/**
 * The names this execution of the body has claimed so far.
 *
 * @category steps
 */
export const claimedSoFar = Effect.map(
  WorkflowInstance,
  (instance): ReadonlySet<string> => claimed.get(instance) ?? new Set()
)

/**
 * The step name of a loop's `index`-th iteration: `review#3`.
 *
 * @category steps
 */
export const iteration = (name: string, index: number): string => `${name}#${index}`
