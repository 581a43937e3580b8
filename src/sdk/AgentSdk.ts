/**
 * The Effect service over `@anthropic-ai/claude-agent-sdk`.
 *
 * `query` starts one Claude Code process in the caller's scope and returns a
 * `QueryHandle`. The service owns what every query shares: the credentials
 * (as `Redacted`), the CLI's environment, the permission policy, and a
 * supervisor that bounds how many processes run at once and stops them all
 * when the layer shuts down.
 *
 * @since 0.1.0
 */
import * as Sdk from "@anthropic-ai/claude-agent-sdk"
import { type ChildProcess, spawn } from "node:child_process"
import { Config, Context, Duration, Effect, Exit, Layer, Option, Redacted, Scope, Semaphore } from "effect"
import type * as AgentMessage from "./AgentMessage.ts"
import * as AgentSdkError from "./AgentSdkError.ts"
import * as Confinement from "./Confinement.ts"
import type * as AgentToolkit from "./AgentToolkit.ts"
import { PermissionPolicy } from "./PermissionPolicy.ts"
import * as QueryHandle from "./QueryHandle.ts"

/**
 * A hook written as an Effect; it runs in the context of the `query` caller.
 *
 * @category models
 */
export interface AgentHook<R = never> {
  readonly matcher?: string
  /** Seconds the CLI waits for the hook. */
  readonly timeout?: number
  readonly run: (input: Sdk.HookInput, toolUseId: string | undefined) => Effect.Effect<Sdk.HookJSONOutput, never, R>
}

/**
 * Options of one query: the SDK's own options, less those the service owns
 * (process, callbacks), plus Effect-native hooks and toolkits.
 *
 * @category models
 */
export interface QueryOptions<R = never> extends Omit<
  Sdk.Options,
  "abortController" | "canUseTool" | "hooks" | "spawnClaudeCodeProcess" | "stderr" | "env" | "mcpServers"
> {
  /** Keep the input open after the first result, for `send` / `streamInput`. */
  readonly multiTurn?: boolean
  /** Variables added to the CLI's environment for this query only. */
  readonly env?: Readonly<Record<string, string>>
  readonly hooks?: Partial<Record<Sdk.HookEvent, ReadonlyArray<AgentHook<R>>>>
  /** Tools served in-process over MCP, each toolkit as one server. */
  readonly toolkits?: ReadonlyArray<AgentToolkit.AgentToolkit<R>>
  /** Other MCP servers (stdio, SSE, HTTP) the agent may use. */
  readonly mcpServers?: Record<string, Sdk.McpServerConfig>
}

/**
 * Settings shared by every query.
 *
 * @category models
 */
export interface Settings {
  /** Passed to the CLI as `ANTHROPIC_API_KEY`; never logged. */
  readonly apiKey?: Redacted.Redacted<string> | undefined
  /** Passed to the CLI as `ANTHROPIC_BASE_URL` (e.g. the scripted model). */
  readonly baseUrl?: string | undefined
  /** The CLI's base environment. Defaults to this process's environment. */
  readonly env?: Readonly<Record<string, string | undefined>> | undefined
  /** How many CLI processes may run at once. Default 8. */
  readonly maxConcurrentQueries?: number | undefined
  /** Time between SIGTERM and SIGKILL when a live query is closed. Default 2 s. */
  readonly killGracePeriod?: Duration.Input | undefined
  /** Another Claude Code binary than the one the SDK ships. */
  readonly executablePath?: string | undefined
  /** Queries run in this directory or below it, never elsewhere (see `Confinement`). */
  readonly workspaceRoot?: string | undefined
  /** Allow queries to skip permission checks. Default false. */
  readonly allowBypassPermissions?: boolean | undefined
}

/**
 * Variables that stop the CLI from reaching hosts other than the model API:
 * telemetry, update checks and error reports. They matter offline and in
 * production alike.
 */
const quietEnv: Readonly<Record<string, string>> = {
  CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: "1",
  DISABLE_TELEMETRY: "1",
  DISABLE_AUTOUPDATER: "1",
  DISABLE_ERROR_REPORTING: "1"
}

const stderrLines = 40

/**
 * A started Claude Code process waiting for its prompt.
 *
 * @category models
 */
export interface PrewarmedQuery {
  /** Claims the process for this prompt; a spare serves one query. */
  readonly query: (prompt: string | Sdk.SDKUserMessage) => Effect.Effect<QueryHandle.QueryHandle>
}

/**
 * @category services
 */
export class AgentSdk extends Context.Service<
  AgentSdk,
  {
    /** Starts a query whose process lives as long as the current scope. */
    readonly query: <R = never>(
      prompt: string | Sdk.SDKUserMessage,
      options?: QueryOptions<R>
    ) => Effect.Effect<QueryHandle.QueryHandle, never, Scope.Scope | R>
    /** Runs a query to its end and returns the summary. */
    readonly run: <R = never>(
      prompt: string | Sdk.SDKUserMessage,
      options?: QueryOptions<R>
    ) => Effect.Effect<AgentMessage.QueryResult, AgentSdkError.AgentSdkError, R>
    /**
     * Starts a Claude Code process now, so that the query claimed from it later
     * skips the start-up. Options are fixed here; the spare holds a permit and
     * lives as long as the current scope.
     */
    readonly prewarm: <R = never>(
      options?: QueryOptions<R>
    ) => Effect.Effect<PrewarmedQuery, AgentSdkError.AgentSdkError, Scope.Scope | R>
    /** How many queries hold a process right now. */
    readonly active: Effect.Effect<number>
  }
>()("effect-claude-agent/sdk/AgentSdk") {
  /** @category layers */
  static readonly layer = (settings: Settings = {}): Layer.Layer<AgentSdk, never, PermissionPolicy> =>
    Layer.effect(AgentSdk)(make(settings))

  /**
   * Reads `ANTHROPIC_API_KEY`, `ANTHROPIC_BASE_URL`, `AGENT_MAX_CONCURRENT_QUERIES`,
   * `CLAUDE_CODE_EXECUTABLE`, `AGENT_WORKSPACE_ROOT` and `AGENT_ALLOW_BYPASS_PERMISSIONS`.
   *
   * @category layers
   */
  static readonly layerConfig: Layer.Layer<AgentSdk, Config.ConfigError, PermissionPolicy> = Layer.unwrap(
    Effect.gen(function* () {
      const apiKey = yield* Config.option(Config.Redacted("ANTHROPIC_API_KEY"))
      const baseUrl = yield* Config.option(Config.String("ANTHROPIC_BASE_URL"))
      const maxConcurrentQueries = yield* Config.Int("AGENT_MAX_CONCURRENT_QUERIES").pipe(Config.withDefault(8))
      const executablePath = yield* Config.option(Config.String("CLAUDE_CODE_EXECUTABLE"))
      const workspaceRoot = yield* Config.option(Config.String("AGENT_WORKSPACE_ROOT"))
      const allowBypassPermissions = yield* Config.Boolean("AGENT_ALLOW_BYPASS_PERMISSIONS").pipe(
        Config.withDefault(false)
      )
      return AgentSdk.layer({
        workspaceRoot: Option.getOrUndefined(workspaceRoot),
        allowBypassPermissions,
        apiKey: Option.getOrUndefined(apiKey),
        baseUrl: Option.getOrUndefined(baseUrl),
        maxConcurrentQueries,
        executablePath: Option.getOrUndefined(executablePath)
      })
    })
  )
}

const make = Effect.fnUntraced(function* (settings: Settings) {
  const policy = yield* PermissionPolicy
  const maxConcurrent = settings.maxConcurrentQueries ?? 8
  const permits = yield* Semaphore.make(maxConcurrent)
  const killGracePeriod = Duration.fromInputUnsafe(settings.killGracePeriod ?? Duration.seconds(2))
  const layerScope = yield* Scope.Scope
  let active = 0

  const baseEnv: Record<string, string | undefined> = {
    ...(settings.env ?? process.env),
    ...quietEnv,
    ...(settings.baseUrl !== undefined ? { ANTHROPIC_BASE_URL: settings.baseUrl } : {}),
    ...(settings.apiKey !== undefined ? { ANTHROPIC_API_KEY: Redacted.value(settings.apiKey) } : {})
  }

  /**
   * Everything a query needs before its process starts: a permit, a scope that
   * the layer can close, the toolkits' servers and the callbacks, bound to the
   * caller's context.
   */
  const prepare = <R>(options: QueryOptions<R>) =>
    Effect.gen(function* () {
      const context = yield* Effect.context<R>()
      const run = Effect.runPromiseWith(context)

      // Each query holds a permit for its whole life; the layer's scope is a
      // parent of the query's, so shutting the layer down closes every query.
      const scope = yield* Scope.Scope
      yield* Effect.acquireRelease(
        Effect.tap(permits.take(1), () => Effect.sync(() => active++)),
        () => Effect.tap(permits.release(1), () => Effect.sync(() => active--))
      )
      const queryScope = yield* Scope.fork(layerScope, "sequential")
      yield* Scope.addFinalizer(scope, Scope.close(queryScope, Exit.void))

      const stderr: Array<string> = []
      const { env, hooks, toolkits, multiTurn, mcpServers, ...requested } = options
      const sdkOptions = Confinement.check(settings, requested)
      if (sdkOptions instanceof Confinement.UnsafeQueryOptions) return yield* Effect.die(sdkOptions)

      const servers: Record<string, Sdk.McpServerConfig> = { ...mcpServers }
      for (const toolkit of toolkits ?? []) {
        servers[toolkit.name] = yield* toolkit.server.pipe(Scope.provide(queryScope))
      }

      const canUseTool: Sdk.CanUseTool = (toolName, input, { signal, mcpServer, blockedPath }) =>
        run(
          Effect.map(policy.decide({ toolName, input, mcpServer, blockedPath }), (decision) =>
            decision._tag === "Allow"
              ? { behavior: "allow" as const, updatedInput: decision.updatedInput ?? input }
              : {
                  behavior: "deny" as const,
                  message: decision.message,
                  ...(decision.interrupt !== undefined ? { interrupt: decision.interrupt } : {})
                }
          ),
          { signal }
        )

      const sdkHooks: Partial<Record<Sdk.HookEvent, Array<Sdk.HookCallbackMatcher>>> = {}
      for (const [event, list] of Object.entries(hooks ?? {}) as Array<[Sdk.HookEvent, ReadonlyArray<AgentHook<R>>]>) {
        sdkHooks[event] = list.map((hook) => ({
          ...(hook.matcher !== undefined ? { matcher: hook.matcher } : {}),
          ...(hook.timeout !== undefined ? { timeout: hook.timeout } : {}),
          hooks: [(input, toolUseId, { signal }) => run(hook.run(input, toolUseId), { signal })]
        }))
      }

      const spawnProcess = (onSpawn: (child: ChildProcess) => void) => (spawnOptions: Sdk.SpawnOptions) => {
        const child = spawn(spawnOptions.command, spawnOptions.args, {
          cwd: spawnOptions.cwd,
          env: spawnOptions.env,
          stdio: ["pipe", "pipe", "pipe"],
          signal: spawnOptions.signal
        })
        // An abort makes spawn emit an error; the SDK reports the exit itself.
        child.on("error", () => {})
        child.stderr.setEncoding("utf8")
        child.stderr.on("data", (chunk: string) => {
          stderr.push(...chunk.split("\n").filter((line) => line.length > 0))
          if (stderr.length > stderrLines) stderr.splice(0, stderr.length - stderrLines)
        })
        onSpawn(child)
        return child
      }

      return {
        scope: queryScope,
        handleOptions: {
          multiTurn: multiTurn ?? false,
          killGracePeriod,
          stderrTail: () => stderr.join("\n")
        },
        sdkOptions: (onSpawn: (child: ChildProcess) => void): Sdk.Options => ({
          ...sdkOptions,
          ...(settings.executablePath !== undefined ? { pathToClaudeCodeExecutable: settings.executablePath } : {}),
          env: { ...baseEnv, ...env },
          canUseTool,
          hooks: sdkHooks,
          mcpServers: servers,
          spawnClaudeCodeProcess: spawnProcess(onSpawn)
        })
      }
    })

  const query = <R = never>(prompt: string | Sdk.SDKUserMessage, options: QueryOptions<R> = {}) =>
    Effect.gen(function* () {
      const prepared = yield* prepare(options)
      return yield* QueryHandle.make({
        ...prepared.handleOptions,
        prompt,
        start: (input, onSpawn) => Sdk.query({ prompt: input, options: prepared.sdkOptions(onSpawn) })
      }).pipe(Scope.provide(prepared.scope))
    })

  const prewarm = <R = never>(options: QueryOptions<R> = {}) =>
    Effect.gen(function* () {
      const prepared = yield* prepare(options)
      let child: ChildProcess | undefined
      const warm = yield* Effect.tryPromise({
        try: () => Sdk.startup({ options: prepared.sdkOptions((spawned) => (child = spawned)) }),
        catch: (cause) =>
          AgentSdkError.make(
            new AgentSdkError.ProcessError({
              description: cause instanceof Error ? cause.message : String(cause),
              stderr: prepared.handleOptions.stderrTail()
            })
          )
      })
      // Until it is claimed, the spare is ours to stop.
      let claimed = false
      yield* Scope.addFinalizer(
        prepared.scope,
        Effect.suspend(() => (claimed ? Effect.void : Effect.sync(() => warm.close())))
      )
      return {
        query: (prompt: string | Sdk.SDKUserMessage) =>
          Effect.suspend(() => {
            if (claimed) return Effect.die(new Error("A prewarmed query can be claimed only once"))
            claimed = true
            return QueryHandle.make({
              ...prepared.handleOptions,
              prompt,
              start: (input, onSpawn) => {
                if (child !== undefined) onSpawn(child)
                return warm.query(input)
              }
            }).pipe(Scope.provide(prepared.scope))
          })
      }
    })

  return AgentSdk.of({
    query,
    prewarm,
    run: (prompt, options) => Effect.scoped(Effect.flatMap(query(prompt, options), (handle) => handle.result)),
    active: Effect.sync(() => active)
  })
})
