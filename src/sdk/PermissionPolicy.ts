/**
 * Decides whether the agent may use a tool that the query did not pre-approve.
 *
 * The CLI asks only about tools outside `allowedTools`; the policy answers as
 * an Effect, run in the caller's context. The default denies: an agent never
 * gains a tool because nobody configured an answer.
 *
 * @since 0.1.0
 */
import { Context, Effect, Layer } from "effect"

/**
 * What the CLI asks before a tool runs.
 *
 * @category models
 */
export interface ToolRequest {
  readonly toolName: string
  readonly input: Readonly<Record<string, unknown>>
  /** Set for `mcp__*` tools; `source: "sdk"` marks our own in-process servers. */
  readonly mcpServer?: { readonly name: string; readonly source?: string } | undefined
  readonly blockedPath?: string | undefined
}

/**
 * The policy's answer. `Allow` may rewrite the tool's input.
 *
 * @category models
 */
export type Decision =
  | { readonly _tag: "Allow"; readonly updatedInput?: Record<string, unknown> | undefined }
  | { readonly _tag: "Deny"; readonly message: string; readonly interrupt?: boolean | undefined }

/** @category constructors */
export const allow = (updatedInput?: Record<string, unknown>): Decision => ({ _tag: "Allow", updatedInput })

/** @category constructors */
export const deny = (message: string, options?: { readonly interrupt?: boolean }): Decision => ({
  _tag: "Deny",
  message,
  interrupt: options?.interrupt
})

/**
 * Matches a tool name against a pattern: an exact name, or a prefix ending in
 * `*` (e.g. `mcp__tools__*`).
 */
const matches = (pattern: string, toolName: string): boolean =>
  pattern.endsWith("*") ? toolName.startsWith(pattern.slice(0, -1)) : pattern === toolName

/**
 * @category services
 */
export class PermissionPolicy extends Context.Service<
  PermissionPolicy,
  {
    readonly decide: (request: ToolRequest) => Effect.Effect<Decision>
  }
>()("effect-claude-agent/sdk/PermissionPolicy") {
  /**
   * Denies every tool the query did not pre-approve.
   */
  static readonly layerDenyAll: Layer.Layer<PermissionPolicy> = Layer.succeed(PermissionPolicy)({
    decide: (request) => Effect.succeed(deny(`No permission policy allows the tool ${request.toolName}`))
  })

  /**
   * Allows the tools that match one of the patterns and denies the rest.
   */
  static readonly layerAllow = (patterns: ReadonlyArray<string>): Layer.Layer<PermissionPolicy> =>
    Layer.succeed(PermissionPolicy)({
      decide: (request) =>
        Effect.succeed(
          patterns.some((pattern) => matches(pattern, request.toolName))
            ? allow()
            : deny(`The permission policy does not allow the tool ${request.toolName}`)
        )
    })

  /**
   * A policy written as an Effect, e.g. one that asks a human through a workflow.
   */
  static readonly layer = <E, R>(
    decide: (request: ToolRequest) => Effect.Effect<Decision, E, R>
  ): Layer.Layer<PermissionPolicy, never, R> =>
    Layer.effect(PermissionPolicy)(
      Effect.map(Effect.context<R>(), (context) =>
        PermissionPolicy.of({
          decide: (request) =>
            decide(request).pipe(
              Effect.provideContext(context),
              // A policy that fails must not open the door.
              Effect.catchCause(() => Effect.succeed(deny(`The permission policy failed for ${request.toolName}`)))
            )
        })
      )
    )
}
