/**
 * The workflows a server runs, by name: what `POST /v1/runs` may start, what
 * `GET /v1/workflows` lists, and how interrupt and resume find a run's
 * workflow definition.
 *
 * @since 0.1.0
 */
import { Context, Layer, Schema } from "effect"
import type * as Workflow from "effect/workflow/Workflow"

/**
 * @category services
 */
export class ServedWorkflows extends Context.Service<
  ServedWorkflows,
  {
    readonly all: ReadonlyArray<Workflow.AnyWithProps>
    readonly get: (name: string) => Workflow.AnyWithProps | undefined
  }
>()("effect-claude-agent/server/ServedWorkflows") {
  /** @category layers */
  static readonly layer = (workflows: ReadonlyArray<Workflow.Any>): Layer.Layer<ServedWorkflows> => {
    const all = workflows as ReadonlyArray<Workflow.AnyWithProps>
    const byName = new Map(all.map((workflow) => [workflow._tag, workflow]))
    return Layer.succeed(ServedWorkflows)({ all, get: (name) => byName.get(name) })
  }
}

/**
 * The JSON Schema (draft 2020-12) of a workflow's input.
 *
 * @category schemas
 */
export const inputJsonSchema = (workflow: Workflow.AnyWithProps): Record<string, unknown> => {
  const document = Schema.toJsonSchemaDocument(workflow.payloadSchema)
  return {
    $schema: "https://json-schema.org/draft/2020-12/schema",
    ...document.schema,
    ...(Object.keys(document.definitions).length === 0 ? {} : { $defs: document.definitions })
  }
}
