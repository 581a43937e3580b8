/**
 * The web dashboard: three static files from `src/dashboard`, served at `/`.
 *
 * The page is plain browser JavaScript with no build step and nothing from a
 * CDN. It holds no privilege of its own: it logs in with the API token and
 * does everything through the public `/v1` API, so these routes need no auth.
 * A strict Content-Security-Policy keeps agent output (shown as text) from
 * ever running as script.
 *
 * @since 0.1.0
 */
import * as Fs from "node:fs"
import * as Path from "node:path"
import { Effect, Layer } from "effect"
import { HttpRouter, HttpServerResponse } from "effect/http"

const directory = Path.resolve(import.meta.dirname, "../dashboard")

const files = [
  { route: "/", file: "index.html", contentType: "text/html; charset=utf-8" },
  { route: "/dashboard/app.js", file: "app.js", contentType: "text/javascript; charset=utf-8" },
  { route: "/dashboard/style.css", file: "style.css", contentType: "text/css; charset=utf-8" }
] as const

const headers = {
  "content-security-policy":
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'",
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "cache-control": "no-cache"
}

/**
 * The dashboard's routes.
 *
 * @category layers
 */
export const layer: Layer.Layer<never, never, HttpRouter.HttpRouter> = Layer.effectDiscard(
  Effect.gen(function* () {
    const router = yield* HttpRouter.HttpRouter
    for (const { route, file, contentType } of files) {
      // Read once at start-up: the files ship with the server.
      const body = Fs.readFileSync(Path.join(directory, file), "utf8")
      yield* router.add("GET", route, Effect.succeed(HttpServerResponse.text(body, { contentType, headers })))
    }
  })
)
