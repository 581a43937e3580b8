/**
 * Faults of the database, injected while runs are in flight and then taken
 * away: Postgres connections dropped, the Postgres server restarted, the
 * SQLite file's disk full, the SQLite file read-only.
 *
 * Each returns a `disturb` for `KillCampaign.run`, or says why it cannot run
 * on this machine (mounting a tmpfs and setting a file immutable need root).
 */
import { execFileSync } from "node:child_process"
import * as Fs from "node:fs"
import * as Path from "node:path"
import { PgClient } from "@effect/sql-pg"
import { Duration, Effect, Redacted } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import { adminUrl } from "../engine/TestDatabase.ts"
import { count } from "./Report.ts"

const admin = <A, E>(f: (sql: SqlClient) => Effect.Effect<A, E>) =>
  Effect.flatMap(SqlClient, f).pipe(Effect.provide(PgClient.layer({ url: Redacted.make(adminUrl) })))

/** Ends every connection to the database (as a failover or a network cut would), `times` times, `every` apart. */
export const dropConnections =
  (
    url: string,
    options: { readonly times: number; readonly every: Duration.Duration; readonly after: Duration.Duration }
  ) =>
  (faults: Record<string, number>) =>
    Effect.gen(function* () {
      const name = url.slice(url.lastIndexOf("/") + 1)
      yield* Effect.sleep(options.after)
      for (let i = 0; i < options.times; i++) {
        const ended = yield* admin(
          (sql) =>
            sql<{ ended: boolean }>`SELECT pg_terminate_backend(pid) AS ended FROM pg_stat_activity
              WHERE datname = ${name} AND pid <> pg_backend_pid()`
        ).pipe(Effect.orElseSucceed(() => []))
        if (ended.length > 0) count(faults, "Postgres connections dropped")
        yield* Effect.sleep(options.every)
      }
    })

const postgresVersion = () => Fs.readdirSync("/etc/postgresql")[0]

const isReady = () => {
  try {
    execFileSync("pg_isready", ["-h", "127.0.0.1", "-p", "5432", "-q"])
    return true
  } catch {
    return false
  }
}

/** Why the Postgres server cannot be restarted here, if it cannot. */
export const postgresRestartUnavailable = (): string | undefined => {
  try {
    if (postgresVersion() === undefined) return "no /etc/postgresql cluster"
    execFileSync("which", ["pg_ctlcluster"])
    return undefined
  } catch {
    return "pg_ctlcluster is not available"
  }
}

/** Waits until Postgres accepts connections again; starts it if it does not come back. */
export const ensurePostgresUp = Effect.gen(function* () {
  for (let i = 0; i < 120 && !isReady(); i++) {
    if (i === 60) {
      yield* Effect.sync(() => {
        try {
          execFileSync("pg_ctlcluster", ["--skip-systemctl-redirect", postgresVersion()!, "main", "start"])
        } catch {
          // Reported by the wait below.
        }
      })
    }
    yield* Effect.sleep(Duration.millis(500))
  }
  if (!isReady()) return yield* Effect.die(new Error("Postgres did not come back after the restart"))
})

/** Restarts the whole Postgres server once (`pg_ctlcluster … restart`, fast shutdown), then waits for it. */
export const restartPostgres = (options: { readonly after: Duration.Duration }) => (faults: Record<string, number>) =>
  Effect.gen(function* () {
    yield* Effect.sleep(options.after)
    yield* Effect.sync(() =>
      execFileSync(
        "pg_ctlcluster",
        ["--skip-systemctl-redirect", postgresVersion()!, "main", "restart", "-m", "fast"],
        {
          stdio: "ignore"
        }
      )
    )
    count(faults, "Postgres server restarts")
    yield* ensurePostgresUp
  }).pipe(Effect.ensuring(Effect.ignore(ensurePostgresUp)))

/** Mounts a tmpfs of `megabytes` at `dir`; undefined when this process may not. */
export const mountTmpfs = (dir: string, megabytes: number): string | undefined => {
  Fs.mkdirSync(dir, { recursive: true })
  try {
    execFileSync("mount", ["-t", "tmpfs", "-o", `size=${megabytes}m`, "tmpfs", dir], { stdio: "ignore" })
    return undefined
  } catch (error) {
    return `cannot mount a tmpfs (${String((error as Error).message).split("\n")[0]})`
  }
}

export const unmount = (dir: string) =>
  Effect.sync(() => {
    try {
      execFileSync("umount", ["-l", dir], { stdio: "ignore" })
    } catch {
      // Not mounted.
    }
  })

/** Fills the file system of `dir` to the last byte, holds it full, then frees the space. */
export const fillDisk =
  (dir: string, options: { readonly after: Duration.Duration; readonly hold: Duration.Duration }) =>
  (faults: Record<string, number>) =>
    Effect.gen(function* () {
      yield* Effect.sleep(options.after)
      const filler = Path.join(dir, "filler")
      yield* Effect.sync(() => {
        const fd = Fs.openSync(filler, "w")
        const block = Buffer.alloc(64 * 1024)
        try {
          for (;;) Fs.writeSync(fd, block)
        } catch {
          // ENOSPC: full.
        } finally {
          Fs.closeSync(fd)
        }
      })
      count(faults, "SQLite disk full")
      yield* Effect.sleep(options.hold)
      yield* Effect.sync(() => Fs.rmSync(filler, { force: true }))
    })

/** Why files cannot be made immutable here (`chattr +i`), if they cannot. */
export const immutableUnavailable = (dir: string): string | undefined => {
  const probe = Path.join(dir, "chattr-probe")
  try {
    Fs.writeFileSync(probe, "")
    execFileSync("chattr", ["+i", probe], { stdio: "ignore" })
    execFileSync("chattr", ["-i", probe], { stdio: "ignore" })
    Fs.rmSync(probe)
    return undefined
  } catch (error) {
    return `cannot make files immutable (${String((error as Error).message).split("\n")[0]})`
  }
}

const chattr = (flag: "+i" | "-i", paths: ReadonlyArray<string>) =>
  Effect.sync(() => {
    for (const path of paths) {
      try {
        if (Fs.existsSync(path)) execFileSync("chattr", [flag, path], { stdio: "ignore" })
      } catch {
        // A file that went away meanwhile.
      }
    }
  })

/**
 * Makes the SQLite database read-only under the running process: its files
 * and its directory immutable (root bypasses permission bits, not this), so
 * that every write fails with EPERM, then writable again.
 */
export const makeReadOnly =
  (filename: string, options: { readonly after: Duration.Duration; readonly hold: Duration.Duration }) =>
  (faults: Record<string, number>) => {
    const paths = [filename, `${filename}-wal`, `${filename}-shm`, Path.dirname(filename)]
    return Effect.gen(function* () {
      yield* Effect.sleep(options.after)
      yield* chattr("+i", paths)
      count(faults, "SQLite file read-only")
      yield* Effect.sleep(options.hold)
    }).pipe(Effect.ensuring(chattr("-i", paths)))
  }
