/**
 * Traces, metrics and logs over OTLP/HTTP, configured by the standard
 * `OTEL_*` variables, with Effect's own exporters (`effect/observability`):
 * no OpenTelemetry SDK in the process.
 *
 * Nothing is exported unless an endpoint is set
 * (`OTEL_EXPORTER_OTLP_ENDPOINT`, or `OTEL_EXPORTER_OTLP_<SIGNAL>_ENDPOINT`).
 * With one, each signal is exported unless `OTEL_<SIGNAL>_EXPORTER` says
 * otherwise, as the OpenTelemetry specification has it (Effect's exporters
 * would otherwise wait for `OTEL_<SIGNAL>_EXPORTER=otlp` too).
 *
 * @since 0.1.0
 */
import { Config, ConfigProvider, Effect, Layer, Option } from "effect"
import { FetchHttpClient } from "effect/http"
import { Otlp, OtlpSerialization } from "effect/observability"

const signals = ["TRACES", "METRICS", "LOGS"] as const

/**
 * Where telemetry goes, for the start-up message; `None` when it is off.
 *
 * @category configuration
 */
export const destination = Effect.gen(function* () {
  const disabled = yield* Config.Boolean("OTEL_SDK_DISABLED").pipe(Config.withDefault(false))
  if (disabled) return Option.none<string>()
  const base = yield* Config.option(Config.String("OTEL_EXPORTER_OTLP_ENDPOINT"))
  if (Option.isSome(base)) return base
  for (const signal of signals) {
    const endpoint = yield* Config.option(Config.String(`OTEL_EXPORTER_OTLP_${signal}_ENDPOINT`))
    if (Option.isSome(endpoint)) return endpoint
  }
  return Option.none<string>()
})

/**
 * The exporters, with `OTEL_SERVICE_NAME` defaulting to `effect-claude-agent`.
 * Provide it to the whole application so that every fiber traces to it.
 *
 * @category layers
 */
export const layer = Layer.unwrap(
  Effect.gen(function* () {
    const serviceName = yield* Config.String("OTEL_SERVICE_NAME").pipe(Config.withDefault("effect-claude-agent"))
    return Otlp.layerFromConfig({ resource: { serviceName, serviceVersion: "0.1.0" } }).pipe(
      Layer.provide([OtlpSerialization.layerJson, FetchHttpClient.layer]),
      // The specification's default exporter, below whatever the environment says.
      Layer.provide(
        ConfigProvider.layerAdd(
          ConfigProvider.fromEnvRecord(Object.fromEntries(signals.map((signal) => [`OTEL_${signal}_EXPORTER`, "otlp"])))
        )
      )
    )
  })
)
