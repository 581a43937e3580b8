/**
 * Tools defined with Effect `Schema` and served to the agent in-process.
 *
 * The SDK's own `tool()` helper takes zod shapes; we speak MCP directly
 * instead, so parameters are an Effect Schema (decoded before the handler
 * runs, shown to the model as JSON Schema) and handlers are Effects that run
 * in the context of the query's caller: a tool can call back into any service.
 *
 * @since 0.1.0
 */
import type * as Sdk from "@anthropic-ai/claude-agent-sdk"
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js"
import { CallToolRequestSchema, ListToolsRequestSchema } from "@modelcontextprotocol/sdk/types.js"
import { Cause, Effect, Schema, Scope } from "effect"

/**
 * One tool: a name, what it is for, its parameters and its handler.
 *
 * @category models
 */
export interface AgentTool<in out A, R = never> {
  readonly name: string
  readonly description: string
  readonly parameters: Schema.Codec<A, unknown>
  /** A string result is shown to the model as text; anything else as JSON. */
  readonly handler: (params: A) => Effect.Effect<unknown, unknown, R>
}

/**
 * Defines a tool.
 *
 * @category constructors
 */
export const tool = <S extends Schema.Top, R = never>(
  name: string,
  options: {
    readonly description: string
    readonly parameters: S
    readonly handler: (params: S["Type"]) => Effect.Effect<unknown, unknown, R>
  }
): AgentTool<S["Type"], R> => ({
  name,
  description: options.description,
  parameters: options.parameters as unknown as Schema.Codec<S["Type"], unknown>,
  handler: options.handler
})

/**
 * A named set of tools, served as one MCP server. The agent sees each tool as
 * `mcp__<toolkit>__<tool>`.
 *
 * @category models
 */
export interface AgentToolkit<R = never> {
  readonly name: string
  readonly tools: ReadonlyArray<AgentTool<any, R>>
  /** Starts the toolkit's MCP server for one query. */
  readonly server: Effect.Effect<Sdk.McpSdkServerConfigWithInstance, never, Scope.Scope | R>
}

/**
 * The name an agent uses for a tool of a toolkit, for `allowedTools` and policies.
 *
 * @category accessors
 */
export const qualifiedName = (toolkit: string, toolName: string): string => `mcp__${toolkit}__${toolName}`

const inputSchema = (schema: Schema.Top): Record<string, unknown> => {
  const document = Schema.toJsonSchemaDocument(schema)
  return Object.keys(document.definitions).length === 0
    ? { ...document.schema }
    : { ...document.schema, $defs: document.definitions }
}

const errorResult = (text: string) => ({ isError: true, content: [{ type: "text" as const, text }] })

/** The services a set of tools needs. */
type Requirements<Tools extends ReadonlyArray<AgentTool<any, any>>> =
  Tools[number] extends AgentTool<any, infer R> ? R : never

/**
 * Builds a toolkit.
 *
 * @category constructors
 */
export const make = <const Tools extends ReadonlyArray<AgentTool<any, any>>>(
  name: string,
  tools: Tools
): AgentToolkit<Requirements<Tools>> => {
  type R = Requirements<Tools>
  const byName = new Map(tools.map((entry) => [entry.name, entry] as const))
  const listing = tools.map((entry) => ({
    name: entry.name,
    description: entry.description,
    inputSchema: inputSchema(entry.parameters)
  }))
  const server = Effect.gen(function* () {
    const context = yield* Effect.context<R>()
    const run = Effect.runPromiseWith(context)
    const mcp = new McpServer({ name, version: "1.0.0" }, { capabilities: { tools: {} } })
    mcp.server.setRequestHandler(ListToolsRequestSchema, () => ({ tools: listing }))
    mcp.server.setRequestHandler(CallToolRequestSchema, (request, extra) => {
      const found = byName.get(request.params.name)
      if (found === undefined) return errorResult(`Unknown tool ${request.params.name}`)
      return run(
        Schema.decodeUnknownEffect(found.parameters)(request.params.arguments ?? {}).pipe(
          Effect.matchEffect({
            onFailure: (issue) => Effect.succeed(errorResult(`Invalid input: ${issue}`)),
            onSuccess: (params) =>
              found.handler(params).pipe(
                Effect.map((value) => ({
                  content: [{ type: "text" as const, text: typeof value === "string" ? value : JSON.stringify(value) }]
                })),
                // A failing tool is the model's business: it sees the error and may try again.
                Effect.catchCause((cause) => Effect.succeed(errorResult(Cause.pretty(cause))))
              )
          })
        ) as Effect.Effect<any, never, R>,
        { signal: extra.signal }
      )
    })
    yield* Effect.addFinalizer(() => Effect.promise(() => mcp.close()))
    return { type: "sdk" as const, name, instance: mcp }
  })
  return { name, tools: tools as ReadonlyArray<AgentTool<any, R>>, server }
}
