/**
 * Property-based fuzzing of every HTTP input of a real server process (`main.ts`
 * on the scripted model), with fast-check: the `AgentApi` routes, the typed
 * `WorkflowProxy` endpoints, the RPC endpoint, the dashboard's static files and
 * `/health`. A waiting run (and its approval token) and a finished one are the
 * state to protect. Every generated request must be answered below 500 (a 4xx
 * with the JSON error body the API promises), and the runs, their output and
 * their pending approvals must be exactly as before. Generators only make
 * inputs that must be refused; where a generated input could be valid, a
 * classifier that mirrors the server's own rules excludes it.
 *
 * Then CORS: closed by default, and open only to the origins of
 * `AGENT_CORS_ORIGINS` when it is set.
 *
 * The seed is fixed (`FUZZ_SEED` overrides it); fast-check prints it, with the
 * shrunk counterexample, when a property fails.
 */
import { assert, layer } from "@effect/vitest"
import * as Fs from "node:fs"
import * as Http from "node:http"
import * as Path from "node:path"
import { Context, Effect, Layer } from "effect"
import * as fc from "fast-check"
import { start } from "../engine/fixtures/Worker.ts"
import { createDatabase, dropDatabase } from "../engine/TestDatabase.ts"
import { dataDir, ended, main, request, type Running, serverEnv, TestServer, waitingToken } from "./TestServer.ts"

const seed = Number(process.env.FUZZ_SEED ?? 20_240_917)

/** Runs a property with the fixed seed; a failure is a defect whose message carries the seed and counterexample. */
const check = <Ts>(property: fc.IAsyncProperty<Ts>, numRuns = 100) =>
  Effect.promise(() => fc.assert(property, { seed, numRuns }))

// ---------------------------------------------------------------------------
// Raw HTTP: the request target, method, headers and body exactly as generated
// ---------------------------------------------------------------------------

interface Probe {
  readonly method: string
  /** The request target, sent as is: no normalisation, no encoding. */
  readonly path: string
  readonly headers?: Readonly<Record<string, string | undefined>>
  readonly body?: string | undefined
  /** Send the body chunked, without Content-Length. */
  readonly chunked?: boolean
}

interface Answer {
  readonly status: number
  readonly headers: Http.IncomingHttpHeaders
  readonly text: string
}

/** Sends a probe on a fresh connection; an event stream is cut off after its headers. */
const send = (server: Running, probe: Probe): Promise<Answer> =>
  new Promise((resolve, reject) => {
    const url = new URL(server.url)
    const body = probe.body === undefined ? undefined : Buffer.from(probe.body)
    const headers: Record<string, string> = {}
    for (const [name, value] of Object.entries(probe.headers ?? {})) if (value !== undefined) headers[name] = value
    if (body !== undefined && probe.chunked !== true) headers["content-length"] = String(body.length)
    const outgoing = Http.request(
      { host: url.hostname, port: url.port, method: probe.method, path: probe.path, headers, agent: false },
      (response) => {
        const answer = (text: string) => ({ status: response.statusCode ?? 0, headers: response.headers, text })
        if ((response.headers["content-type"] ?? "").startsWith("text/event-stream")) {
          response.destroy()
          return resolve(answer(""))
        }
        const chunks: Array<Buffer> = []
        response.on("data", (chunk: Buffer) => chunks.push(chunk))
        response.on("end", () => resolve(answer(Buffer.concat(chunks).toString("utf8"))))
        response.on("error", reject)
      }
    )
    outgoing.on("error", reject)
    outgoing.setTimeout(10_000, () => outgoing.destroy(new Error("no answer within 10 s")))
    if (body !== undefined && probe.chunked === true) {
      outgoing.write(body)
      outgoing.end()
    } else {
      outgoing.end(body)
    }
  })

const describe = (probe: Probe) =>
  `${probe.method} ${probe.path.slice(0, 300)} ${JSON.stringify(probe.headers ?? {}).slice(0, 300)} ${(
    probe.body ?? ""
  ).slice(0, 300)}`

/** Methods Node's parser knows: requests with them reach the router (CONNECT opens a tunnel instead). */
const knownMethods = Http.METHODS.filter((method) => method !== "CONNECT")

/**
 * Sends a probe and checks what every answer owes: no 5xx, and a 4xx that the
 * router produced carries the JSON error body (`_tag`, `message`).
 */
const answered = async (server: Running, probe: Probe): Promise<Answer> => {
  const answer = await send(server, probe).catch((error: unknown) => {
    throw new Error(`${describe(probe)}: ${String(error)}`)
  })
  const what = `${describe(probe)} -> ${answer.status} ${answer.text.slice(0, 300)}`
  assert.isBelow(answer.status, 500, what)
  // Node answers a method it cannot parse, or headers that are too large, itself, without a body.
  const reachedRouter = knownMethods.includes(probe.method) && answer.status !== 431
  if (answer.status >= 400 && reachedRouter && probe.method !== "HEAD") {
    assert.include(answer.headers["content-type"] ?? "", "application/json", what)
    const error = JSON.parse(answer.text) as { _tag?: unknown; message?: unknown }
    assert.isString(error._tag, what)
    assert.isString(error.message, what)
  }
  return answer
}

/** Refused: a 4xx (never a success that might have changed something). */
const refused = async (server: Running, probe: Probe): Promise<Answer> => {
  const answer = await answered(server, probe)
  assert.isTrue(answer.status >= 400 && answer.status < 500, `${describe(probe)} -> ${answer.status} ${answer.text}`)
  return answer
}

// ---------------------------------------------------------------------------
// The state to protect
// ---------------------------------------------------------------------------

interface Guarded {
  readonly server: Running
  /** A PlanAndAct run waiting for its approval, and the approval's token. */
  readonly waiting: string
  readonly token: string
  /** A run that has ended, and its (spent) approval token. */
  readonly finished: string
  readonly finishedToken: string
}

class Fixture extends Context.Service<Fixture, Guarded>()("test/Fuzz/Fixture") {
  static readonly layer = (serverLayer: Layer.Layer<TestServer>) =>
    Layer.effect(Fixture)(
      Effect.gen(function* () {
        const server = yield* TestServer
        const startRun = (task: string) =>
          Effect.map(
            request(server, "/v1/runs", { method: "POST", json: { workflow: "PlanAndAct", input: { task } } }),
            (response) => response.body.runId as string
          )
        const finished = yield* startRun("Already decided")
        const finishedToken = yield* waitingToken(server, finished)
        yield* request(server, `/v1/approvals/${finishedToken}`, { method: "POST", json: { approved: false } })
        yield* ended(server, finished)
        const waiting = yield* startRun("Guarded")
        const token = yield* waitingToken(server, waiting)
        return { server, waiting, token, finished, finishedToken }
      })
    ).pipe(Layer.provideMerge(serverLayer))
}

/** A server on a fresh Postgres database, dropped afterwards: Postgres refuses more than SQLite (NUL, bigint). */
const onPostgres = Layer.unwrap(
  Effect.map(
    Effect.acquireRelease(
      Effect.promise(() => createDatabase("fuzz")),
      (url) => Effect.promise(() => dropDatabase(url))
    ),
    (url) => TestServer.layer({ AGENT_DATABASE_URL: url })
  )
)

/** Everything a client can see: the runs, each run's view (its pending approvals) and its output. */
const snapshot = (server: Running) =>
  Effect.gen(function* () {
    const page = (yield* request(server, "/v1/runs?limit=100")).body as {
      readonly runs: ReadonlyArray<{ runId: string }>
    }
    const runs = yield* Effect.forEach(page.runs, (run) =>
      Effect.all({
        view: Effect.map(request(server, `/v1/runs/${run.runId}`), (response) => response.body),
        events: Effect.map(
          request(server, `/v1/runs/${run.runId}/events`, { headers: { accept: "application/json" } }),
          (response) => response.body
        )
      })
    )
    const waiting = (yield* request(server, "/v1/runs?status=waiting&limit=100")).body
    return { page, runs, waiting }
  })

/** Runs `effect` and asserts that no run, output or approval changed. */
const leavesStateAlone = <A, E, R>(server: Running, effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function* () {
    const before = yield* snapshot(server)
    const result = yield* effect
    assert.deepStrictEqual(yield* snapshot(server), before, "no run, output or approval changed")
    return result
  })

// ---------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------

const printable = fc.integer({ min: 0x20, max: 0x7e }).map((code) => String.fromCharCode(code))
/** What Node lets a header value be. */
const headerValue = fc.string({ unit: printable, maxLength: 80 })
const base64urlChar = fc.constantFrom(..."ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
const base64url = (constraints: fc.StringConstraints = {}) => fc.string({ ...constraints, unit: base64urlChar })

const unreserved = /[A-Za-z0-9\-._~]/
/** Percent-encodes every byte of the UTF-8 form (lone surrogates become U+FFFD) except the unreserved ones. */
const pathEncode = (text: string) =>
  [...Buffer.from(text, "utf8")]
    .map((byte) => {
      const char = String.fromCharCode(byte)
      return unreserved.test(char) ? char : `%${byte.toString(16).toUpperCase().padStart(2, "0")}`
    })
    .join("")

/** Path tricks sent raw (they are already valid in a request target). */
const rawSegments = [
  "..",
  "../..",
  "../../etc/passwd",
  "..%2f..%2fhealth",
  "%2e%2e",
  "%2e%2e%2f%2e%2e%2fhealth",
  "%00",
  "%ff%fe",
  "%E0%A4%A",
  "%",
  "%%",
  "%zz",
  ".",
  "",
  "/",
  "//",
  "a/b",
  "x?limit=0",
  "x#fragment",
  "x;param",
  "%C0%AE%C0%AE"
]

/** Short strings thick with control characters (NUL above all, which Postgres cannot store), separators and escapes. */
const controlText = fc.string({
  unit: fc.constantFrom(
    // NUL twice: twice as likely.
    "\u0000",
    "\u0000",
    "\u0001",
    "\u001f",
    "\u007f",
    "\n",
    "a",
    "/",
    "\\",
    "%",
    ".",
    " ",
    "é",
    "🙂"
  ),
  maxLength: 12
})

/** Strings for path parameters: any unicode, injections, traversal, past the router's 2048-character limit. */
const nastyText = fc.oneof(
  controlText,
  fc.string({ unit: "binary", maxLength: 40 }),
  fc.string({ unit: "grapheme", maxLength: 40 }),
  fc.constantFrom(
    "null",
    "undefined",
    "__proto__",
    "constructor",
    "' OR 1=1 --",
    '"; DROP TABLE agent_runs; --',
    "${7*7}",
    "{{7*7}}",
    "<script>alert(1)</script>",
    "\u0000",
    "a\u0000b",
    "\u202e",
    "İ",
    "ﬀ",
    "🙂".repeat(50)
  ),
  fc.string({ unit: printable, minLength: 2000, maxLength: 2200 }),
  base64url({ minLength: 500, maxLength: 5000 })
)

/** One path segment: an encoded nasty string, or a raw path trick. */
const segment = fc.oneof(
  { arbitrary: nastyText.map(pathEncode), weight: 3 },
  { arbitrary: fc.constantFrom(...rawSegments), weight: 1 }
)

/** The JSON media type as the server reads `Content-Type` (a missing one means JSON). */
const isJsonType = (contentType: string | undefined) => {
  if (contentType === undefined) return true
  const normalized = contentType.toLowerCase().trim()
  const index = normalized.indexOf(";")
  return (index === -1 ? normalized : normalized.slice(0, index).trim()) === "application/json"
}

const jsonTypes = fc.constantFrom("application/json", "application/json; charset=utf-8", "Application/JSON", undefined)
const otherTypes = fc.constantFrom(
  "text/plain",
  "text/plain; charset=utf-8",
  "application/x-www-form-urlencoded",
  "multipart/form-data; boundary=fuzz",
  "application/xml",
  "application/octet-stream",
  "text/html",
  "application/jsonx",
  "application/ json",
  "json",
  "*/*",
  ""
)
const contentType = fc.oneof({ arbitrary: jsonTypes, weight: 3 }, { arbitrary: otherTypes, weight: 2 })

const big = "x".repeat(1024 * 1024 + 1)

/** Bodies: JSON of any shape, text that is almost JSON, prototype tricks, and one over the size limit. */
const bodyText = (nearMiss: fc.Arbitrary<unknown>) =>
  fc.oneof(
    { arbitrary: fc.jsonValue().map((value) => JSON.stringify(value)), weight: 3 },
    { arbitrary: nearMiss.map((value) => JSON.stringify(value)), weight: 4 },
    { arbitrary: fc.string({ maxLength: 60 }), weight: 2 },
    {
      arbitrary: fc.constantFrom(
        "",
        "{",
        "[",
        "null",
        "true",
        "0",
        '"string"',
        "{}",
        "[]",
        '{"__proto__":{"polluted":true}}',
        '{"constructor":{"prototype":{"polluted":true}}}',
        '{"a":'.repeat(5000) + "1" + "}".repeat(5000),
        "[".repeat(10_000),
        "\uFEFF{}",
        "{}garbage"
      ),
      weight: 2
    },
    { arbitrary: fc.constant(`{"workflow":"${big}"}`), weight: 1 }
  )

const parse = (text: string): unknown => {
  for (const candidate of [text, text.replace(/^\uFEFF/, "")]) {
    try {
      return JSON.parse(candidate)
    } catch {
      // the next reading, or none
    }
  }
  return undefined
}

const isRecord = (value: unknown): value is Record<string, unknown> =>
  typeof value === "object" && value !== null && !Array.isArray(value)

/** Whether the server could accept this body as JSON (a classifier, on the safe side). */
const acceptedAs = (type: string | undefined, text: string, valid: (value: Record<string, unknown>) => boolean) => {
  if (!isJsonType(type)) return false
  const value = parse(text)
  return isRecord(value) && valid(value)
}

/** A valid `POST /v1/runs` (it would start a run). */
const startsRun = (value: Record<string, unknown>) =>
  value.workflow === "PlanAndAct" &&
  isRecord(value.input) &&
  typeof value.input.task === "string" &&
  (value.idempotencyKey === undefined ||
    (typeof value.idempotencyKey === "string" &&
      value.idempotencyKey !== "" &&
      !value.idempotencyKey.includes("\u0000")))

/** A valid decision body (it would decide the approval). */
const decidesApproval = (value: Record<string, unknown>) =>
  typeof value.approved === "boolean" && (value.comment === undefined || typeof value.comment === "string")

/** A valid PlanAndAct input (the typed endpoints would start a run). */
const startsTask = (value: Record<string, unknown>) => typeof value.task === "string"

const anyOrMissing = fc.option(fc.jsonValue(), { nil: undefined })

const createNearMiss = fc.record(
  {
    workflow: fc.oneof(fc.constant("PlanAndAct"), fc.constantFrom("planandact", "PlanAndAct ", ""), fc.jsonValue()),
    input: fc.oneof(fc.jsonValue(), fc.record({ task: fc.jsonValue() }), fc.record({ task: fc.string() })),
    idempotencyKey: fc.oneof(anyOrMissing, fc.constantFrom("", "key\u0000"))
  },
  { requiredKeys: [] }
)

const decisionNearMiss = fc.record(
  {
    approved: fc.oneof(fc.jsonValue(), fc.constantFrom("true", 1, 0, null)),
    comment: fc.oneof(anyOrMissing, fc.string())
  },
  { requiredKeys: [] }
)

const taskNearMiss = fc.record({ task: fc.jsonValue(), executionId: anyOrMissing }, { requiredKeys: [] })

/** Every method Node parses, a few it does not, and random tokens. */
const anyMethod = fc.oneof(
  { arbitrary: fc.constantFrom(...knownMethods), weight: 3 },
  { arbitrary: fc.stringMatching(/^[A-Z]{1,12}$/), weight: 1 }
)

/** An RPC request (one NDJSON line's object) resuming `executionId`. */
const rpcResume = (id: string, executionId: string) => ({
  _tag: "Request",
  id,
  tag: "PlanAndActResume",
  payload: { executionId },
  headers: []
})

const replaceAt = (text: string, index: number, char: string) => text.slice(0, index) + char + text.slice(index + 1)
const insertAt = (text: string, index: number, char: string) => text.slice(0, index) + char + text.slice(index)

/** Claims as a token carries them, for another run. */
const signedClaims = (executionId: string) =>
  Buffer.from(JSON.stringify({ workflow: "PlanAndAct", executionId, step: "review", purpose: "approval" })).toString(
    "base64url"
  )

/**
 * Tokens the server did not hand out: random ones, ones shaped like ours,
 * the real claims under another signature, another run's claims under the
 * real signature, and the real token with one character changed, removed or
 * added (anywhere, and at the end of the signature, where base64url has
 * spare bits).
 */
const forgedToken = (real: string) => {
  const [version, claims, mac] = real.split(".") as [string, string, string]
  const ascii = fc.string({ unit: printable, minLength: 1, maxLength: 1 })
  return fc
    .oneof(
      nastyText,
      fc
        .tuple(base64url({ maxLength: 300 }), base64url({ minLength: 43, maxLength: 43 }))
        .map(([body, signature]) => `eca1.${body}.${signature}`),
      base64url({ minLength: 40, maxLength: 46 }).map((signature) => `${version}.${claims}.${signature}`),
      fc.string({ maxLength: 40 }).map((executionId) => `${version}.${signedClaims(executionId)}.${mac}`),
      fc.tuple(fc.nat(), fc.oneof(base64urlChar, ascii)).map(([i, c]) => replaceAt(real, i % real.length, c)),
      fc.tuple(fc.nat(), fc.oneof(base64urlChar, ascii)).map(([i, c]) => insertAt(real, i % (real.length + 1), c)),
      fc.nat().map((i) => replaceAt(real, i % real.length, "")),
      fc
        .tuple(fc.integer({ min: 1, max: 3 }), base64urlChar)
        .map(([back, c]) => replaceAt(real, real.length - back, c)),
      fc.constantFrom(
        `${real}=`,
        `${real}==`,
        `${real}.`,
        `${real}.${mac}`,
        real.slice(0, -1),
        real.toUpperCase(),
        real.toLowerCase(),
        `${version}.${claims}`,
        `${version}..${mac}`,
        `eca2.${claims}.${mac}`,
        real.replaceAll("-", "+").replaceAll("_", "/")
      )
    )
    .filter((token) => token !== real)
}

// ---------------------------------------------------------------------------
// CORS, as a browser sees it
// ---------------------------------------------------------------------------

const header = (answer: Answer, name: string) => {
  const value = answer.headers[name]
  return Array.isArray(value) ? value.join(", ") : value
}

/** The Fetch standard's CORS check (no credentials): may a page on `origin` read this response? */
const corsCheck = (origin: string, answer: Answer) => {
  const allowOrigin = header(answer, "access-control-allow-origin")
  return allowOrigin === "*" || allowOrigin === origin
}

/** Whether a browser's preflight succeeds, so that it sends the real request. */
const preflightPasses = (origin: string, method: string, headers: ReadonlyArray<string>, answer: Answer) => {
  const list = (name: string) =>
    (header(answer, name) ?? "")
      .split(",")
      .map((item) => item.trim().toLowerCase())
      .filter((item) => item !== "")
  const methods = list("access-control-allow-methods")
  const allowedHeaders = list("access-control-allow-headers")
  return (
    answer.status >= 200 &&
    answer.status < 300 &&
    corsCheck(origin, answer) &&
    (["get", "head", "post"].includes(method.toLowerCase()) || methods.includes(method.toLowerCase())) &&
    // `*` never covers Authorization.
    headers.every((name) => allowedHeaders.includes(name) || (allowedHeaders.includes("*") && name !== "authorization"))
  )
}

const preflight = (server: Running, path: string, origin: string, method: string) =>
  Effect.promise(() =>
    send(server, {
      method: "OPTIONS",
      path,
      headers: {
        origin,
        "access-control-request-method": method,
        "access-control-request-headers": "authorization,content-type"
      }
    })
  )

const crossOrigin = (server: Running, probe: Probe, origin: string) =>
  Effect.promise(() =>
    send(server, {
      ...probe,
      headers: { authorization: `Bearer ${server.token}`, origin, ...probe.headers }
    })
  )

const corsHeaders = (answer: Answer) => Object.keys(answer.headers).filter((name) => name.startsWith("access-control-"))

// ---------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------

for (const [engine, serverLayer] of [
  ["default database, SQLite", TestServer.layer()],
  ["Postgres", onPostgres]
] as const) {
  layer(Fixture.layer(serverLayer), { timeout: 180_000, excludeTestServices: true })(
    `fuzzing every HTTP input (${engine})`,
    (it) => {
      it.effect(
        "POST /v1/runs: malformed JSON, wrong shapes, wrong content types and oversized bodies are refused",
        () =>
          Effect.gen(function* () {
            const { server } = yield* Fixture
            yield* leavesStateAlone(
              server,
              check(
                fc.asyncProperty(bodyText(createNearMiss), contentType, fc.boolean(), async (body, type, chunked) => {
                  fc.pre(!acceptedAs(type, body, startsRun))
                  await refused(server, {
                    method: "POST",
                    path: "/v1/runs",
                    headers: { authorization: `Bearer ${server.token}`, "content-type": type },
                    body,
                    chunked
                  })
                })
              )
            )
          }),
        { timeout: 120_000 }
      )

      it.effect(
        "the real approval token with a malformed decision, or as an input token, decides nothing",
        () =>
          Effect.gen(function* () {
            const { server, token } = yield* Fixture
            yield* leavesStateAlone(
              server,
              check(
                fc.asyncProperty(
                  fc.constantFrom("approvals", "inputs"),
                  bodyText(fc.oneof(decisionNearMiss, fc.record({ value: fc.jsonValue() }))),
                  contentType,
                  async (kind, body, type) => {
                    // `inputs` refuses an approval token whatever the body; `approvals` a body that is not a decision.
                    fc.pre(kind === "inputs" || !acceptedAs(type, body, decidesApproval))
                    await refused(server, {
                      method: "POST",
                      path: `/v1/${kind}/${token}`,
                      headers: { authorization: `Bearer ${server.token}`, "content-type": type },
                      body
                    })
                  }
                )
              )
            )
          }),
        { timeout: 120_000 }
      )

      it.effect(
        "forged, altered and spent decision tokens are refused",
        () =>
          Effect.gen(function* () {
            const { server, token, finishedToken } = yield* Fixture
            yield* leavesStateAlone(
              server,
              check(
                fc.asyncProperty(
                  fc.oneof(
                    { arbitrary: forgedToken(token), weight: 9 },
                    { arbitrary: fc.constant(finishedToken), weight: 1 }
                  ),
                  fc.constantFrom("approvals", "inputs"),
                  fc.boolean(),
                  async (forged, kind, raw) => {
                    const encoded = raw && /^[\x21-\x7e]*$/.test(forged) ? forged : pathEncode(forged)
                    await refused(server, {
                      method: "POST",
                      path: `/v1/${kind}/${encoded}`,
                      headers: { authorization: `Bearer ${server.token}`, "content-type": "application/json" },
                      body: JSON.stringify(
                        kind === "approvals" ? { approved: true, comment: "forged" } : { value: "forged" }
                      )
                    })
                  }
                ),
                200
              )
            )
          }),
        { timeout: 120_000 }
      )

      it.effect(
        "run ids: unknown, huge, unicode and traversal ids are answered 4xx; interrupt and resume change nothing",
        () =>
          Effect.gen(function* () {
            const { server, waiting, finished } = yield* Fixture
            const known = [waiting, finished]
            yield* leavesStateAlone(
              server,
              check(
                fc.asyncProperty(
                  segment,
                  fc.constantFrom(
                    ["GET", ""],
                    ["GET", "/events"],
                    ["POST", "/interrupt"],
                    ["POST", "/resume"],
                    ["POST", "/events"],
                    ["GET", "/interrupt"]
                  ),
                  async (id, [verb, tail]) => {
                    fc.pre(!known.some((runId) => id.includes(runId)))
                    const probe = {
                      method: verb!,
                      path: `/v1/runs/${id}${tail}`,
                      headers: { authorization: `Bearer ${server.token}`, accept: "application/json" }
                    }
                    // The router ignores repeated slashes: `GET /v1/runs///` is the list, and reading is harmless.
                    await (verb === "GET" ? answered(server, probe) : refused(server, probe))
                  }
                )
              )
            )
          }),
        { timeout: 120_000 }
      )

      it.effect(
        "queries and headers of the read endpoints: limit, cursor, status, from, Last-Event-ID, Accept",
        () =>
          Effect.gen(function* () {
            const { server, waiting, finished } = yield* Fixture
            const value = fc.oneof(
              fc.string({ maxLength: 30 }),
              fc.integer().map(String),
              fc.double().map(String),
              fc.constantFrom(
                "0",
                "1",
                "100",
                "101",
                "-1",
                "1.5",
                "1e2",
                "NaN",
                "Infinity",
                "0x10",
                "99999999999999999999999",
                "9007199254740993",
                "",
                "waiting",
                "running",
                "completed",
                "WAITING",
                "PlanAndAct",
                "%",
                "%ff",
                "\u0000",
                // A forged cursor whose run id holds a NUL: a 500 on Postgres before Runs refused it.
                Buffer.from(JSON.stringify([1, "a\u0000b"])).toString("base64url")
              )
            )
            const key = fc.constantFrom(
              "limit",
              "cursor",
              "status",
              "workflow",
              "from",
              "offset",
              "__proto__",
              "limit[]"
            )
            const query = fc.oneof(
              fc
                .array(fc.tuple(key, value), { maxLength: 5 })
                .map((pairs) => pairs.map(([k, v]) => `${pathEncode(k)}=${pathEncode(v)}`).join("&")),
              fc
                .string({ unit: printable, maxLength: 60 })
                .map((text) => text.replaceAll(" ", "+").replaceAll("#", "%23"))
            )
            const lastEventId = fc.option(
              fc.oneof(
                headerValue,
                fc.bigInt({ min: 0n, max: 10n ** 30n }).map(String),
                fc.constantFrom("-1", "1e3", "0x1", " 5 ", "5.0", "9007199254740991", "99999999999999999999999"),
                // UTF-8 bytes, as Node sends a header: Latin-1 characters, one per byte.
                fc.string({ unit: "grapheme", maxLength: 10 }).map((text) => Buffer.from(text).toString("latin1"))
              ),
              { nil: undefined }
            )
            const accept = fc.option(
              fc.oneof(
                fc.constantFrom("application/json", "text/event-stream", "*/*", "application/json, text/event-stream"),
                headerValue
              ),
              { nil: undefined }
            )
            yield* leavesStateAlone(
              server,
              check(
                fc.asyncProperty(
                  fc.constantFrom(
                    "/v1/runs",
                    "/v1/workflows",
                    `/v1/runs/${waiting}`,
                    `/v1/runs/${finished}/events`,
                    `/v1/runs/${waiting}/events`,
                    "/v1/runs/no-such-run/events",
                    "/health",
                    "/openapi.json"
                  ),
                  query,
                  lastEventId,
                  accept,
                  async (path, search, id, type) => {
                    const answer = await answered(server, {
                      method: "GET",
                      path: `${path}?${search}`,
                      headers: { authorization: `Bearer ${server.token}`, "last-event-id": id, accept: type }
                    })
                    if (answer.status === 200 && (answer.headers["content-type"] ?? "").includes("json")) {
                      JSON.parse(answer.text)
                    }
                  }
                ),
                150
              )
            )
          }),
        { timeout: 120_000 }
      )

      it.effect(
        "without the bearer token, or with a wrong one, every /v1 route and method is refused",
        () =>
          Effect.gen(function* () {
            const { server, waiting, token } = yield* Fixture
            const json = "application/json"
            // Each route with the input that would succeed with the right token.
            const routes: ReadonlyArray<Probe> = [
              { method: "GET", path: "/v1/workflows" },
              { method: "GET", path: "/v1/runs" },
              {
                method: "POST",
                path: "/v1/runs",
                headers: { "content-type": json },
                body: JSON.stringify({ workflow: "PlanAndAct", input: { task: "sneaky" } })
              },
              { method: "GET", path: `/v1/runs/${waiting}` },
              { method: "GET", path: `/v1/runs/${waiting}/events`, headers: { accept: json } },
              { method: "POST", path: `/v1/runs/${waiting}/interrupt` },
              { method: "POST", path: `/v1/runs/${waiting}/resume` },
              {
                method: "POST",
                path: `/v1/approvals/${token}`,
                headers: { "content-type": json },
                body: JSON.stringify({ approved: true })
              },
              {
                method: "POST",
                path: "/v1/workflows/planandact/discard",
                headers: { "content-type": json },
                body: JSON.stringify({ task: "sneaky" })
              },
              {
                method: "POST",
                path: "/v1/workflows/planandact/resume",
                headers: { "content-type": json },
                body: JSON.stringify({ executionId: waiting })
              },
              {
                method: "POST",
                path: "/v1/rpc",
                headers: { "content-type": "application/ndjson" },
                body: `${JSON.stringify({
                  _tag: "Request",
                  id: "1",
                  tag: "PlanAndActDiscard",
                  payload: { task: "sneaky" },
                  headers: []
                })}\n`
              }
            ]
            const apiToken = server.token
            const wrongAuthorization = fc.oneof(
              fc.constant(undefined),
              fc.constantFrom(
                "",
                "Bearer",
                "Bearer ",
                `Basic ${apiToken}`,
                `Token ${apiToken}`,
                apiToken,
                `Bearer ${apiToken}x`,
                `Bearer ${apiToken.slice(0, -1)}`,
                `Bearer ${apiToken} ${apiToken}`,
                `Bearer "${apiToken}"`,
                `Bearer ${apiToken.toUpperCase()}`,
                `Bearer ${token}`
              ),
              fc
                .tuple(fc.nat(), base64urlChar)
                .map(([i, c]) => `Bearer ${replaceAt(apiToken, i % apiToken.length, c)}`)
                .filter((value) => value !== `Bearer ${apiToken}`),
              headerValue.map((value) => `Bearer ${value}`),
              headerValue
            )
            yield* leavesStateAlone(
              server,
              check(
                fc.asyncProperty(
                  fc.constantFrom(...routes),
                  fc.option(anyMethod, { nil: undefined }),
                  wrongAuthorization,
                  async (target, otherMethod, authorization) => {
                    fc.pre(authorization === undefined || authorization.trim() !== `Bearer ${apiToken}`)
                    const probe = {
                      ...target,
                      method: otherMethod ?? target.method,
                      headers: { ...target.headers, authorization }
                    }
                    const answer = await refused(server, probe)
                    if (probe.method === target.method) assert.strictEqual(answer.status, 401, describe(probe))
                  }
                ),
                200
              )
            )
          }),
        { timeout: 120_000 }
      )

      it.effect(
        "the typed WorkflowProxy endpoints refuse what is not the workflow's input",
        () =>
          Effect.gen(function* () {
            const { server, waiting, finished } = yield* Fixture
            yield* leavesStateAlone(
              server,
              check(
                fc.asyncProperty(
                  fc.constantFrom("/v1/workflows/planandact", "/v1/workflows/planandact/discard"),
                  bodyText(taskNearMiss),
                  contentType,
                  async (path, body, type) => {
                    fc.pre(!acceptedAs(type, body, startsTask))
                    await refused(server, {
                      method: "POST",
                      path,
                      headers: { authorization: `Bearer ${server.token}`, "content-type": type },
                      body
                    })
                  }
                ),
                80
              )
            )
            // Resuming is idempotent: an unknown execution id is a no-op, never a new run.
            yield* leavesStateAlone(
              server,
              check(
                fc.asyncProperty(
                  fc.oneof(
                    bodyText(fc.record({ executionId: fc.oneof(fc.jsonValue(), nastyText) }, { requiredKeys: [] })),
                    fc
                      .oneof(fc.string({ maxLength: 40 }), controlText)
                      .map((executionId) => JSON.stringify({ executionId }))
                  ),
                  contentType,
                  async (body, type) => {
                    const value = parse(body)
                    fc.pre(!(isRecord(value) && [waiting, finished].includes(value.executionId as string)))
                    await answered(server, {
                      method: "POST",
                      path: "/v1/workflows/planandact/resume",
                      headers: { authorization: `Bearer ${server.token}`, "content-type": type },
                      body
                    })
                  }
                ),
                60
              )
            )
          }),
        { timeout: 120_000 }
      )

      it.effect(
        "the RPC endpoint survives garbage and requests of any shape",
        () =>
          Effect.gen(function* () {
            const { server, waiting, finished } = yield* Fixture
            const message = fc.record(
              {
                _tag: fc.oneof(fc.constantFrom("Request", "Ack", "Interrupt", "Eof", "Ping"), fc.jsonValue()),
                id: fc.oneof(fc.string({ maxLength: 10 }), fc.integer().map(String), fc.jsonValue()),
                tag: fc.oneof(
                  fc.constantFrom("PlanAndAct", "PlanAndActDiscard", "PlanAndActResume", "Nope", "__proto__"),
                  fc.jsonValue()
                ),
                payload: fc.oneof(
                  fc.jsonValue(),
                  fc.record({ task: fc.jsonValue() }),
                  fc.record({ executionId: fc.oneof(fc.string({ maxLength: 20 }), controlText, fc.jsonValue()) })
                ),
                headers: fc.oneof(fc.constant([]), fc.jsonValue())
              },
              { requiredKeys: ["_tag"] }
            )
            const line = fc.oneof(
              { arbitrary: message.map((value) => JSON.stringify(value)), weight: 4 },
              {
                // Well-formed resumes of ids no engine should be asked about.
                arbitrary: fc
                  .tuple(fc.nat(), controlText)
                  .map(([id, executionId]) => JSON.stringify(rpcResume(String(id), executionId))),
                weight: 2
              },
              { arbitrary: fc.jsonValue().map((value) => JSON.stringify(value)), weight: 1 },
              { arbitrary: fc.string({ maxLength: 60 }).map((text) => text.replaceAll("\n", " ")), weight: 1 }
            )
            // A request that would start a run, or resume one of ours: not something to refuse.
            const legitimate = (text: string) => {
              const value = parse(text)
              if (!isRecord(value) || !isRecord(value.payload)) return false
              return (
                ((value.tag === "PlanAndAct" || value.tag === "PlanAndActDiscard") &&
                  typeof value.payload.task === "string") ||
                (value.tag === "PlanAndActResume" && [waiting, finished].includes(value.payload.executionId as string))
              )
            }
            yield* leavesStateAlone(
              server,
              check(
                fc.asyncProperty(
                  fc.array(line, { minLength: 1, maxLength: 4 }),
                  fc.constantFrom("application/ndjson", "application/json", "text/plain", undefined),
                  async (lines, type) => {
                    fc.pre(!lines.some(legitimate))
                    await answered(server, {
                      method: "POST",
                      path: "/v1/rpc",
                      headers: { authorization: `Bearer ${server.token}`, "content-type": type },
                      body: `${lines.join("\n")}\n`
                    })
                  }
                ),
                80
              )
            )
          }),
        { timeout: 120_000 }
      )

      it.effect(
        "the dashboard's static routes serve their three files and nothing else, whatever the path",
        () =>
          Effect.gen(function* () {
            const { server } = yield* Fixture
            const secrets = [
              server.token,
              Fs.readFileSync(Path.join(server.dataDir, "approval-secret"), "utf8").trim(),
              '"devDependencies"', // package.json
              "NodeRuntime.runMain", // the server's source
              "root:x:0:0" // /etc/passwd
            ]
            const pathSegment = fc.oneof(
              segment,
              fc.constantFrom(
                "dashboard",
                "app.js",
                "style.css",
                "index.html",
                "package.json",
                "api-token",
                "src",
                "%2e%2e"
              )
            )
            const path = fc.oneof(
              fc.constantFrom(
                "/",
                "/dashboard/app.js",
                "/dashboard/style.css",
                "/index.html",
                "/dashboard/",
                "/dashboard/../package.json",
                "/dashboard/%2e%2e/%2e%2e/package.json",
                "/dashboard/..%2f..%2f..%2fpackage.json",
                "/..%2f..%2fpackage.json",
                "/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
                "/dashboard/app.js%00.html",
                "/dashboard//app.js",
                "/DASHBOARD/APP.JS",
                "/src/server/main.ts",
                "/package.json",
                "/.env",
                "/api-token",
                "/favicon.ico"
              ),
              fc.array(pathSegment, { minLength: 1, maxLength: 5 }).map((segments) => `/${segments.join("/")}`)
            )
            yield* leavesStateAlone(
              server,
              check(
                fc.asyncProperty(path, anyMethod, async (target, verb) => {
                  const answer = await answered(server, { method: verb, path: target })
                  for (const secret of secrets) assert.notInclude(answer.text, secret, `${verb} ${target}`)
                }),
                150
              )
            )
          }),
        { timeout: 120_000 }
      )

      it.effect(
        "no spelling of a decision route writes its token to the log",
        () =>
          Effect.gen(function* () {
            const { server, token } = yield* Fixture
            const markers: Array<string> = []
            const spelling = fc.constantFrom(
              "/v1/approvals/",
              "//v1/approvals/",
              "/V1/APPROVALS/",
              "/v1/Approvals/",
              "/v1/%61pprovals/",
              "/v1/approvals//",
              "/%76%31/approvals/",
              "/v1/inputs/",
              "//v1//inputs//",
              "/v1/INPUTS/",
              "/v1/%69nputs/",
              "/v1/./approvals/",
              "/v1/approvals%2f",
              "/v1/approvals%2F",
              "/v1/%2e/approvals/"
            )
            yield* leavesStateAlone(
              server,
              check(
                fc.asyncProperty(
                  spelling,
                  fc.oneof(
                    base64url({ minLength: 8, maxLength: 40 }).map((text) => `leak${markers.length}z${text}`),
                    fc.constant(token)
                  ),
                  fc.constantFrom("", "?x=1", "/", "%ff", ";a", "#frag", "/interrupt"),
                  async (prefix, secret, suffix) => {
                    if (secret !== token) markers.push(secret)
                    // Never a valid body: the real token must not decide anything here.
                    await answered(server, {
                      method: "POST",
                      path: `${prefix}${secret}${suffix}`,
                      headers: { authorization: `Bearer ${server.token}`, "content-type": "application/json" },
                      body: '{"approved":"maybe"}'
                    })
                  }
                ),
                80
              )
            )
            yield* Effect.sleep("300 millis")
            const log = server.stdout() + server.stderr()
            for (const secret of [...markers, token, server.token]) assert.notInclude(log, secret)
          }),
        { timeout: 120_000 }
      )

      it.effect(
        "regressions: token variants that decode alike, NUL in ids, RPC bodies that interrupted themselves, tokens in odd paths, Last-Event-ID past 2^53",
        () =>
          Effect.gen(function* () {
            const { server, token, waiting } = yield* Fixture
            // base64url's last character of a 32-byte signature carries 4 bits; the other 2 are spare, and
            // Node's decoder skips characters outside the alphabet: these all decode to the real signature.
            const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
            const last = alphabet.indexOf(token.at(-1)!)
            const twin = alphabet[last ^ 1]!
            const variants = [`${token.slice(0, -1)}${twin}`, `${token}=`, insertAt(token, token.length - 5, "!")]
            for (const variant of variants) {
              assert.deepStrictEqual(
                Buffer.from(variant.split(".")[2]!, "base64url"),
                Buffer.from(token.split(".")[2]!, "base64url"),
                "the variant decodes to the same signature"
              )
            }
            yield* leavesStateAlone(
              server,
              Effect.gen(function* () {
                for (const variant of variants) {
                  const response = yield* request(server, `/v1/approvals/${encodeURIComponent(variant)}`, {
                    method: "POST",
                    json: { approved: true }
                  })
                  assert.deepStrictEqual([response.status, response.body._tag], [403, "InvalidToken"], variant)
                }
                const late = yield* request(server, `/v1/runs/${waiting}/events`, {
                  headers: { accept: "application/json", "last-event-id": "99999999999999999999999" }
                })
                assert.deepStrictEqual([late.status, late.body._tag], [400, "BadRequest"])
                // NUL in an id: a 500 from Postgres before, and `…/resume` never answered (the cluster engine
                // retried the failing write forever). Now a 400 on every engine, before the database is asked.
                for (const [path, init] of [
                  ["/v1/runs/a%00b", {}],
                  ["/v1/runs/a%00b/events", {}],
                  ["/v1/runs/a%00b/interrupt", { method: "POST" }],
                  ["/v1/runs?workflow=%00", {}],
                  [
                    "/v1/runs",
                    {
                      method: "POST",
                      json: { workflow: "PlanAndAct", input: { task: "x" }, idempotencyKey: "a\u0000b" }
                    }
                  ],
                  ["/v1/workflows/planandact/resume", { method: "POST", json: { executionId: "a\u0000b" } }]
                ] as const) {
                  const response = yield* request(server, path, init)
                  assert.deepStrictEqual([response.status, response.body._tag], [400, "BadRequest"], path)
                  assert.include(response.body.message, "NUL", path)
                }
                // A well-formed cursor whose run id holds a NUL: a 500 from Postgres before Runs refused it.
                const forged = Buffer.from(JSON.stringify([1, "a\u0000b"])).toString("base64url")
                const cursor = yield* request(server, `/v1/runs?cursor=${forged}`)
                assert.deepStrictEqual([cursor.status, cursor.body._tag], [400, "BadRequest"])
                const rpc = (...messages: ReadonlyArray<object>) =>
                  Effect.promise(() =>
                    send(server, {
                      method: "POST",
                      path: "/v1/rpc",
                      headers: { authorization: `Bearer ${server.token}` },
                      body: messages.map((message) => `${JSON.stringify(message)}\n`).join("")
                    })
                  )
                const nul = yield* rpc(rpcResume("1", "a\u0000b"))
                assert.strictEqual(nul.status, 200)
                assert.include(nul.text, "NUL", "the RPC answers at once, with the refusal")
                // The RPC server interrupted its own request for these (a 503, found on Postgres, where the
                // resume is still running when the next message arrives): the client's mistake is a 400.
                for (const messages of [
                  [rpcResume("2", "no-such-run"), { _tag: "Eof" }],
                  [rpcResume("3", "no-such-run"), rpcResume("3", "no-such-run-either")]
                ]) {
                  const answer = yield* rpc(...messages)
                  assert.isBelow(answer.status, 500, answer.text)
                }
                const fine = yield* rpc(rpcResume("4", "no-such-run"))
                assert.deepStrictEqual(JSON.parse(fine.text), {
                  _tag: "Exit",
                  requestId: "4",
                  exit: { _tag: "Success", value: null }
                })
                for (const path of [`//v1/approvals/${token}`, `/V1/APPROVALS/${token}`, `/v1/%61pprovals/${token}`]) {
                  const response = yield* Effect.promise(() =>
                    send(server, {
                      method: "POST",
                      path,
                      headers: { authorization: `Bearer ${server.token}`, "content-type": "application/json" },
                      body: "{}"
                    })
                  )
                  assert.strictEqual(response.status, 400, `${path} reaches the approve route`)
                }
              })
            )
            yield* Effect.sleep("300 millis")
            assert.notInclude(server.stdout() + server.stderr(), token)
          }),
        { timeout: 120_000 }
      )

      it.effect(
        "sends no CORS headers: a page on another origin is refused, preflight or not, and changes nothing",
        () =>
          Effect.gen(function* () {
            const { server } = yield* Fixture
            const origin = "https://evil.example"
            yield* leavesStateAlone(
              server,
              Effect.gen(function* () {
                for (const [path, method] of [
                  ["/v1/runs", "POST"],
                  ["/v1/runs", "GET"],
                  ["/v1/approvals/x", "POST"],
                  ["/v1/rpc", "POST"],
                  ["/health", "GET"]
                ] as const) {
                  const answer = yield* preflight(server, path, origin, method)
                  assert.deepStrictEqual(corsHeaders(answer), [], `OPTIONS ${path}`)
                  assert.isFalse(preflightPasses(origin, method, ["authorization", "content-type"], answer), path)
                }
                // What a page could send without a preflight, and what it would send after one.
                const probes: ReadonlyArray<Probe> = [
                  { method: "GET", path: "/v1/runs" },
                  { method: "GET", path: "/health" },
                  { method: "GET", path: "/" },
                  {
                    method: "POST",
                    path: "/v1/runs",
                    headers: { "content-type": "text/plain" },
                    body: JSON.stringify({ workflow: "PlanAndAct", input: { task: "from another site" } })
                  },
                  {
                    method: "POST",
                    path: "/v1/runs",
                    headers: { "content-type": "application/json" },
                    body: JSON.stringify({ workflow: "PlanAndAct", input: { task: 42 } })
                  }
                ]
                for (const probe of probes) {
                  const answer = yield* crossOrigin(server, probe, origin)
                  assert.deepStrictEqual(corsHeaders(answer), [], `${probe.method} ${probe.path}`)
                  assert.isFalse(
                    corsCheck(origin, answer),
                    `${probe.method} ${probe.path}: the browser hides the response`
                  )
                }
              })
            )
            assert.include(server.stdout(), "cors:      closed")
          }),
        { timeout: 60_000 }
      )

      it.effect(
        "after all that, the guarded run still takes its real decision",
        () =>
          Effect.gen(function* () {
            const { server, token, waiting } = yield* Fixture
            const decided = yield* request(server, `/v1/approvals/${token}`, {
              method: "POST",
              json: { approved: true }
            })
            assert.deepStrictEqual([decided.status, decided.body], [200, { runId: waiting, step: "review" }])
            assert.strictEqual((yield* ended(server, waiting)).status, "completed")
          }),
        { timeout: 120_000 }
      )
    }
  )
}

const allowed = "https://app.example"
const local = "http://localhost:5173"

layer(TestServer.layer({ AGENT_CORS_ORIGINS: ` ${allowed}, ${local}` }), {
  timeout: 120_000,
  excludeTestServices: true
})("CORS with AGENT_CORS_ORIGINS", (it) => {
  it.effect(
    "lets the listed origins call the API and no other",
    () =>
      Effect.gen(function* () {
        const server = yield* TestServer
        assert.include(server.stdout(), `cors:      pages on ${allowed}, ${local} may call the API`)
        for (const origin of [allowed, local]) {
          const answer = yield* preflight(server, "/v1/runs", origin, "POST")
          assert.isTrue(preflightPasses(origin, "POST", ["authorization", "content-type"], answer), origin)
          assert.include(header(answer, "vary") ?? "", "Origin")
          const list = yield* crossOrigin(server, { method: "GET", path: "/v1/runs" }, origin)
          assert.strictEqual(list.status, 200)
          assert.isTrue(corsCheck(origin, list), `${origin} reads the runs`)
          // Errors are readable too, so the page can say what went wrong.
          const refusedAnswer = yield* crossOrigin(
            server,
            { method: "GET", path: "/v1/runs", headers: { authorization: "Bearer wrong" } },
            origin
          )
          assert.strictEqual(refusedAnswer.status, 401)
          assert.isTrue(corsCheck(origin, refusedAnswer))
          assert.isUndefined(header(refusedAnswer, "access-control-allow-credentials"), "no cookies, ever")
        }
        for (const origin of [
          "https://evil.example",
          "https://app.example.evil.example",
          "http://app.example",
          "https://app.example:8443",
          "null"
        ]) {
          const answer = yield* preflight(server, "/v1/runs", origin, "POST")
          assert.isUndefined(header(answer, "access-control-allow-origin"), origin)
          assert.isFalse(preflightPasses(origin, "POST", ["authorization", "content-type"], answer), origin)
          const list = yield* crossOrigin(server, { method: "GET", path: "/v1/runs" }, origin)
          assert.isUndefined(header(list, "access-control-allow-origin"), origin)
          assert.isFalse(corsCheck(origin, list), origin)
        }
      }),
    { timeout: 60_000 }
  )

  it.effect(
    "refuses to start with an origin no browser sends",
    () =>
      Effect.gen(function* () {
        const child = start([], main, serverEnv(dataDir(), { AGENT_CORS_ORIGINS: "https://app.example/" }))
        let output = ""
        child.stdout!.on("data", (chunk: Buffer) => (output += chunk.toString()))
        child.stderr!.on("data", (chunk: Buffer) => (output += chunk.toString()))
        const code = yield* Effect.callback<number | null>((resume) => {
          child.once("close", (exitCode) => resume(Effect.succeed(exitCode)))
        })
        assert.strictEqual(code, 1)
        assert.include(output, '"https://app.example/" is not an origin as browsers send it: write https://app.example')
        assert.notInclude(output, "listening")
      }),
    { timeout: 60_000 }
  )
})
