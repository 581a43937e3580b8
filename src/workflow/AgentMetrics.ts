/**
 * The metrics of runs and agent steps, exported with the rest of the
 * telemetry when the application provides a metrics exporter (the server
 * does, over OTLP, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set).
 *
 * Counted where each fact becomes durable: a run when the registry first
 * records it and when it records its end, a step when its attempt returns a
 * result. A replay records nothing twice.
 *
 * @since 0.1.0
 */
import { Metric } from "effect"

/**
 * Runs registered.
 *
 * @category metrics
 */
export const runsStarted = Metric.counter("agent_runs_started_total", {
  description: "Runs started",
  incremental: true
})

/**
 * Runs ended, by `status` (completed, failed, interrupted).
 *
 * @category metrics
 */
export const runsEnded = Metric.counter("agent_runs_ended_total", {
  description: "Runs ended, by status",
  incremental: true
})

/**
 * Agent step attempts that returned a result, by `workflow`.
 *
 * @category metrics
 */
export const steps = Metric.counter("agent_steps_total", {
  description: "Agent step attempts that returned a result, by workflow",
  incremental: true
})

/**
 * Model tokens, by `direction` (input, output) and `workflow`.
 *
 * @category metrics
 */
export const tokens = Metric.counter("agent_tokens_total", {
  description: "Model tokens used by agent steps, by direction and workflow",
  incremental: true
})

/**
 * Cost of agent steps in US dollars, by `workflow`.
 *
 * @category metrics
 */
export const costUsd = Metric.counter("agent_cost_usd_total", {
  description: "Cost of agent steps in US dollars, by workflow",
  incremental: true
})
