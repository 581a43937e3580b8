/**
 * Safety defaults every query is checked against before its process starts.
 *
 * An agent with tools acts on the machine it runs on. Two things are refused
 * unless the operator allowed them: skipping the permission checks
 * (`permissionMode: "bypassPermissions"` or `allowDangerouslySkipPermissions`),
 * and, when a workspace root is configured, a working directory or an extra
 * directory outside that root. Both are mistakes of configuration, not of the
 * model: a refused query is a defect carrying `UnsafeQueryOptions`, raised
 * before any process starts.
 *
 * @since 0.1.0
 */
import * as Fs from "node:fs"
import * as Path from "node:path"
import type * as Sdk from "@anthropic-ai/claude-agent-sdk"
import { Schema } from "effect"

/**
 * @category errors
 */
export class UnsafeQueryOptions extends Schema.TaggedError<UnsafeQueryOptions>()("UnsafeQueryOptions", {
  reason: Schema.Literals(["bypass_permissions", "outside_workspace"]),
  detail: Schema.String
}) {
  override get message(): string {
    return this.reason === "bypass_permissions"
      ? "Skipping permission checks is off; set allowBypassPermissions (AGENT_ALLOW_BYPASS_PERMISSIONS=true) to allow it"
      : `The directory ${this.detail} is outside the workspace root`
  }
}

/**
 * @category models
 */
export interface Policy {
  /** Working directories must lie under this directory; it is the default one. */
  readonly workspaceRoot?: string | undefined
  readonly allowBypassPermissions?: boolean | undefined
}

// Symlinks are resolved where the path exists, so a link cannot lead out.
const real = (path: string): string => {
  try {
    return Fs.realpathSync(path)
  } catch {
    return Path.resolve(path)
  }
}

const inside = (root: string, path: string): boolean => {
  const relative = Path.relative(root, path)
  return relative === "" || (!relative.startsWith("..") && !Path.isAbsolute(relative))
}

/**
 * The options to start the query with (the working directory defaulted to
 * the root), or why they are refused.
 *
 * @category checks
 */
export const check = <
  O extends Pick<Sdk.Options, "cwd" | "additionalDirectories" | "permissionMode" | "allowDangerouslySkipPermissions">
>(
  policy: Policy,
  options: O
): O | UnsafeQueryOptions => {
  if (
    policy.allowBypassPermissions !== true &&
    (options.permissionMode === "bypassPermissions" || options.allowDangerouslySkipPermissions === true)
  ) {
    return new UnsafeQueryOptions({ reason: "bypass_permissions", detail: String(options.permissionMode) })
  }
  if (policy.workspaceRoot === undefined) return options
  const root = real(policy.workspaceRoot)
  const cwd = real(Path.resolve(root, options.cwd ?? "."))
  for (const dir of [cwd, ...(options.additionalDirectories ?? []).map((d) => real(Path.resolve(cwd, d)))]) {
    if (!inside(root, dir)) return new UnsafeQueryOptions({ reason: "outside_workspace", detail: dir })
  }
  return { ...options, cwd }
}
