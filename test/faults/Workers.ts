/**
 * Runner processes of the campaign: started in a process group of their own,
 * SIGKILLed, and their Claude Code children reaped after them.
 *
 * A kill is `SIGKILL` to the runner process alone, as when the runtime kills
 * a container's main process; the CLI processes it had started are orphans
 * that lose their parent's pipes, and are killed right after through the
 * group, so that none outlives its runner for long on a two-core machine.
 */
import { type ChildProcess, spawn } from "node:child_process"
import * as Fs from "node:fs"
import * as Path from "node:path"
import * as Readline from "node:readline"
import { Deferred, Effect } from "effect"
import { exited } from "../engine/fixtures/Worker.ts"
import type { WorkerConfig } from "./fixtures/CampaignWorker.ts"

const script = Path.join(import.meta.dirname, "fixtures", "CampaignWorker.ts")

export interface Worker {
  readonly name: string
  readonly child: ChildProcess
  readonly ready: Deferred.Deferred<void, Error>
  /** The last lines of its stderr, for reports. */
  readonly stderr: () => string
  /** All it wrote, stdout (its log lines, Effect's logger writes there) and stderr, in a file. */
  readonly logFile: string
  /** `killed` once the campaign kills it; an exit before that is the worker's own. */
  readonly state: { killed: boolean; exitedByItself: boolean }
}

/**
 * Starts a worker with `config`; `onLine` sees each stdout line. `env` is
 * added to the campaign's environment (`FAULTS_ACTIVITY_LOG`).
 */
export const start = (options: {
  readonly name: string
  readonly dir: string
  readonly config: WorkerConfig
  readonly env?: Readonly<Record<string, string>>
  readonly onLine: (line: string) => void
}): Effect.Effect<Worker> =>
  Effect.gen(function* () {
    const file = Path.join(options.dir, `${options.name}-${Date.now()}.json`)
    Fs.writeFileSync(file, JSON.stringify(options.config))
    const child = spawn(process.execPath, [script, file], {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, ...options.env },
      detached: true
    })
    const ready = yield* Deferred.make<void, Error>()
    let stderr = ""
    const logFile = Path.join(options.dir, `${options.name}.log`)
    const logStream = Fs.createWriteStream(logFile)
    const state = { killed: false, exitedByItself: false }
    Readline.createInterface({ input: child.stdout! }).on("line", (line) => {
      logStream.write(`${line}\n`)
      if (line === "READY") Deferred.doneUnsafe(ready, Effect.void)
      options.onLine(line)
    })
    child.stderr!.on("data", (chunk: Buffer) => {
      stderr = (stderr + chunk.toString()).slice(-20_000)
      logStream.write(chunk)
    })
    child.on("exit", (code, signal) => {
      if (!state.killed) state.exitedByItself = true
      Deferred.doneUnsafe(
        ready,
        Effect.fail(
          new Error(`${options.name} exited (${code ?? signal}) before READY; stderr:\n${stderr.slice(-4000)}`)
        )
      )
    })
    return { name: options.name, child, ready, stderr: () => stderr, logFile, state }
  })

const reapGroup = (pid: number | undefined) =>
  Effect.sync(() => {
    if (pid === undefined) return
    try {
      process.kill(-pid, "SIGKILL")
    } catch {
      // ESRCH: nothing left in the group.
    }
  })

/** SIGKILL to the runner process, then to what is left of its group (its CLI children). */
export const kill = (worker: Worker) =>
  Effect.gen(function* () {
    worker.state.killed = true
    if (worker.child.exitCode === null && worker.child.signalCode === null) worker.child.kill("SIGKILL")
    yield* exited(worker.child)
    yield* reapGroup(worker.child.pid)
  })

/** Whether the process is still running. */
export const alive = (worker: Worker): boolean => worker.child.exitCode === null && worker.child.signalCode === null
