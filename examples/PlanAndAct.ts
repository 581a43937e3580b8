/**
 * Plan, ask a person, act: the workflow to copy first.
 *
 * The agent proposes a plan; the run then waits, durably, for a reviewer to
 * approve or reject it (for seconds or for days, across restarts); on
 * approval the same agent session carries out the plan, told the reviewer's
 * comment. On rejection the run ends with the plan and the reason.
 */
import { Effect, Schema } from "effect"
import * as Workflow from "effect/workflow/Workflow"
import * as AgentSdkError from "../src/sdk/AgentSdkError.ts"
import * as AgentWorkflow from "../src/workflow/AgentWorkflow.ts"

export class PlanAndActResult extends Schema.Class<PlanAndActResult>("PlanAndActResult")({
  plan: Schema.String,
  approved: Schema.Boolean,
  comment: Schema.optional(Schema.String),
  /** What the agent did, when the plan was approved. */
  outcome: Schema.optional(Schema.String)
}) {}

export const PlanAndAct = Workflow.make("PlanAndAct", {
  payload: { task: Schema.String },
  success: PlanAndActResult,
  error: AgentSdkError.AgentSdkError,
  idempotencyKey: ({ task }) => task
})

export const PlanAndActLayer = AgentWorkflow.toLayer(PlanAndAct, ({ task }) =>
  Effect.gen(function* () {
    const plan = yield* AgentWorkflow.runStep("plan", {
      prompt: `Propose a short, numbered plan for this task. Do not carry it out yet.\n\nTask: ${task}`
    })

    const decision = yield* AgentWorkflow.awaitApproval("review", { request: { task, plan: plan.text } })
    const comment = decision.comment === undefined ? {} : { comment: decision.comment }
    if (!decision.approved) return new PlanAndActResult({ plan: plan.text, approved: false, ...comment })

    const act = yield* AgentWorkflow.runStep("act", {
      prompt:
        "The reviewer approved your plan" +
        (decision.comment === undefined ? "." : ` with this comment: ${decision.comment}`) +
        "\nCarry it out now and report what you did.",
      session: plan.sessionId
    })
    return new PlanAndActResult({ plan: plan.text, approved: true, ...comment, outcome: act.text })
  })
)
