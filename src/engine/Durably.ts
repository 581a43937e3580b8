/**
 * Writes a run cannot do without, retried until the database takes them.
 *
 * A workflow cannot handle its database going away: a step whose output or
 * journal write fails would die, and a defect is a result, recorded for good.
 * So writes made from inside a run wait out a full disk, a read-only file or
 * a Postgres restart instead, retrying with backoff up to every 5 s, and the
 * run goes on when the database is back (the fault campaign's database
 * scenarios, docs/reliability.md). Each failure is logged.
 *
 * @since 0.1.0
 */
import { Duration, Effect, Schedule } from "effect"
import { isSqlError, type SqlError } from "effect/sql/SqlError"

/**
 * Exponential from 50 ms, then every 5 s, for as long as it takes.
 *
 * @category schedules
 */
export const schedule: Schedule.Schedule<Duration.Duration, SqlError> = Schedule.min([
  Schedule.exponential(Duration.millis(50)),
  Schedule.spaced(Duration.seconds(5))
]).pipe(
  Schedule.setInputType<SqlError>(),
  // `Effect.retry` steps the schedule before its `while` refuses other errors: log only the retried ones.
  Schedule.tap((metadata) =>
    isSqlError(metadata.input)
      ? Effect.logWarning("a database write failed; retrying until the database takes it", metadata.input)
      : Effect.void
  )
)

/**
 * Retries `effect` while it fails with an `SqlError`; other failures pass.
 *
 * @category combinators
 */
export const durably = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, Exclude<E, SqlError>, R> =>
  Effect.retry(effect, {
    while: (error): boolean => isSqlError(error),
    schedule: schedule as unknown as Schedule.Schedule<Duration.Duration, E>
  }) as Effect.Effect<A, Exclude<E, SqlError>, R>
