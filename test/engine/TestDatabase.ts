/**
 * Throwaway databases on the machine's real Postgres (127.0.0.1:5432, user
 * postgres, trust auth). A missing server fails the tests that need it: they
 * are never skipped.
 */
import { PgClient } from "@effect/sql-pg"
import { Effect, Redacted } from "effect"
import { SqlClient } from "effect/sql/SqlClient"

export const adminUrl = process.env.AGENT_TEST_POSTGRES_URL ?? "postgres://postgres@127.0.0.1:5432/test"

const admin = <A, E>(f: (sql: SqlClient) => Effect.Effect<A, E>) =>
  Effect.flatMap(SqlClient, f).pipe(Effect.provide(PgClient.layer({ url: Redacted.make(adminUrl) })))

/** Creates a fresh database and returns its URL. */
export const createDatabase = (label: string): Promise<string> => {
  const name = `eca_${label.replace(/[^a-z0-9]/gi, "_")}_${process.pid}_${Math.random().toString(36).slice(2, 8)}`
  return Effect.runPromise(
    admin((sql) => sql.unsafe(`CREATE DATABASE ${name}`)).pipe(
      Effect.as(adminUrl.replace(/\/[^/]*$/, `/${name}`)),
      Effect.mapError((error) => new Error(`Postgres at ${adminUrl} is required for these tests: ${String(error)}`))
    )
  )
}

/** Drops a database made by `createDatabase`, ending its open connections. */
export const dropDatabase = (url: string): Promise<void> => {
  const name = url.slice(url.lastIndexOf("/") + 1)
  return Effect.runPromise(
    admin((sql) =>
      Effect.andThen(
        sql`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = ${name} AND pid <> pg_backend_pid()`,
        sql.unsafe(`DROP DATABASE IF EXISTS ${name}`)
      )
    ).pipe(Effect.asVoid)
  )
}
