// The dashboard: plain browser JavaScript, no build step, no CDN. Every action
// goes through the public /v1 API with the API token as a bearer header; the
// token lives in sessionStorage, never in a URL. Agent output is untrusted
// text: it is only ever written with textContent, never as HTML.

const tokenKey = "effect-claude-agent/token"
const main = document.getElementById("main")
const toast = document.getElementById("toast")
const logoutButton = document.getElementById("logout")

/** Builds an element: el("p", { class: "x" }, "text", child). */
const el = (tag, attributes = {}, ...children) => {
  const node = document.createElement(tag)
  for (const [key, value] of Object.entries(attributes)) {
    if (value === undefined || value === false) continue
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value)
    else node.setAttribute(key, value === true ? "" : String(value))
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null) continue
    node.append(child instanceof Node ? child : String(child))
  }
  return node
}

const show = (...nodes) => {
  main.replaceChildren(...nodes)
  main.focus()
}

const notify = (message) => {
  toast.textContent = message
  setTimeout(() => {
    if (toast.textContent === message) toast.textContent = ""
  }, 4000)
}

const token = () => sessionStorage.getItem(tokenKey)

class ApiError extends Error {
  constructor(status, body) {
    super(body?.message ?? body?.error ?? `HTTP ${status}`)
    this.status = status
  }
}

const api = async (path, { method = "GET", body } = {}) => {
  const response = await fetch(path, {
    method,
    headers: {
      Authorization: `Bearer ${token()}`,
      Accept: "application/json",
      ...(body === undefined ? {} : { "Content-Type": "application/json" })
    },
    body: body === undefined ? undefined : JSON.stringify(body)
  })
  const text = await response.text()
  const json = text === "" ? undefined : JSON.parse(text)
  if (response.status === 401) {
    sessionStorage.removeItem(tokenKey)
    route()
    throw new ApiError(401, json)
  }
  if (!response.ok) throw new ApiError(response.status, json)
  return json
}

const age = (millis) => {
  const seconds = Math.max(0, Math.round((Date.now() - millis) / 1000))
  if (seconds < 60) return `${seconds}s ago`
  if (seconds < 3600) return `${Math.round(seconds / 60)}m ago`
  if (seconds < 86400) return `${Math.round(seconds / 3600)}h ago`
  return `${Math.round(seconds / 86400)}d ago`
}

const timestamp = (value) => (typeof value === "number" ? value : Date.parse(value))

const statusBadge = (status) => el("span", { class: `status ${status}` }, status)

const usageText = (usage) =>
  usage === undefined
    ? "—"
    : `${(usage.inputTokens ?? 0) + (usage.outputTokens ?? 0)} tok · $${Number(usage.costUsd ?? 0).toFixed(4)}`

// ---------------------------------------------------------------------------
// Login
// ---------------------------------------------------------------------------

const loginPage = (error) => {
  const input = el("input", {
    type: "password",
    id: "token",
    name: "token",
    autocomplete: "current-password",
    required: true
  })
  const form = el(
    "form",
    {
      class: "card",
      onsubmit: async (event) => {
        event.preventDefault()
        sessionStorage.setItem(tokenKey, input.value.trim())
        try {
          await api("/v1/workflows")
          location.hash = "#/runs"
          route()
        } catch {
          sessionStorage.removeItem(tokenKey)
          loginPage("That token was refused.")
        }
      }
    },
    el("h1", {}, "Log in"),
    el("p", { class: "muted" }, "Paste the API token the server printed at start-up (AGENT_API_TOKEN)."),
    el("label", { for: "token" }, "API token"),
    input,
    error === undefined ? undefined : el("p", { class: "error-text", role: "alert" }, error),
    el("div", { class: "actions" }, el("button", { type: "submit", class: "primary" }, "Log in"))
  )
  logoutButton.hidden = true
  show(form)
  input.focus()
}

// ---------------------------------------------------------------------------
// Runs list
// ---------------------------------------------------------------------------

const statuses = ["", "waiting", "running", "completed", "failed", "interrupted"]

const runsPage = async (filter = "") => {
  const select = el(
    "select",
    { id: "status-filter", onchange: () => runsPage(select.value) },
    statuses.map((s) => el("option", { value: s, selected: s === filter }, s === "" ? "all" : s))
  )
  const body = el("tbody")
  show(
    el("h1", {}, "Runs"),
    el("div", { class: "filters" }, el("label", { for: "status-filter" }, "Status"), select),
    el(
      "table",
      {},
      el(
        "thead",
        {},
        el(
          "tr",
          {},
          ["Run", "Workflow", "Status", "Started", "Tokens · cost"].map((h) => el("th", { scope: "col" }, h))
        )
      ),
      body
    )
  )
  const query = filter === "" ? "" : `?status=${encodeURIComponent(filter)}`
  const page = await api(`/v1/runs${query}`)
  const runs = page.runs
  if (runs.length === 0) body.append(el("tr", {}, el("td", { colspan: 5, class: "muted" }, "No runs yet.")))
  for (const run of runs) {
    body.append(
      el(
        "tr",
        { class: run.status === "waiting" ? "waiting" : undefined },
        el("td", {}, el("a", { href: `#/runs/${encodeURIComponent(run.runId)}` }, run.runId.slice(0, 12))),
        el("td", {}, run.workflow),
        el("td", {}, statusBadge(run.status)),
        el("td", {}, age(timestamp(run.createdAt))),
        el("td", {}, usageText(run.usage))
      )
    )
  }
}

// ---------------------------------------------------------------------------
// Start a run: a form generated from the workflow's input JSON Schema
// ---------------------------------------------------------------------------

const fieldFor = (name, schema, required) => {
  const id = `field-${name}`
  const type = schema.type
  const input =
    type === "boolean"
      ? el("input", { type: "checkbox", id, name })
      : type === "string" && (schema.maxLength === undefined || schema.maxLength > 200)
        ? el("textarea", { id, name, required })
        : el("input", {
            type: "text",
            id,
            name,
            required,
            inputmode: type === "number" || type === "integer" ? "decimal" : undefined
          })
  const read = () =>
    type === "boolean"
      ? input.checked
      : type === "number" || type === "integer"
        ? Number(input.value)
        : type === "string"
          ? input.value
          : JSON.parse(input.value)
  return { node: el("div", {}, el("label", { for: id }, schema.title ?? name), input), read }
}

const startPage = async () => {
  const workflows = await api("/v1/workflows")
  const select = el(
    "select",
    { id: "workflow" },
    workflows.map((w) => el("option", { value: w.name }, w.name))
  )
  const fields = el("div")
  let readers = []
  const render = () => {
    const workflow = workflows.find((w) => w.name === select.value)
    const schema = workflow?.input ?? {}
    const properties = schema.properties ?? {}
    const required = new Set(schema.required ?? [])
    const built = Object.entries(properties).map(([name, property]) => [
      name,
      fieldFor(name, property, required.has(name))
    ])
    readers = built.map(([name, field]) => [name, field.read])
    fields.replaceChildren(...built.map(([, field]) => field.node))
  }
  select.addEventListener("change", render)
  const error = el("p", { class: "error-text", role: "alert" })
  const form = el(
    "form",
    {
      class: "card",
      onsubmit: async (event) => {
        event.preventDefault()
        error.textContent = ""
        try {
          const input = Object.fromEntries(readers.map(([name, read]) => [name, read()]))
          const { runId } = await api("/v1/runs", { method: "POST", body: { workflow: select.value, input } })
          location.hash = `#/runs/${encodeURIComponent(runId)}`
        } catch (cause) {
          error.textContent = cause.message
        }
      }
    },
    el("h1", {}, "Start a run"),
    el("label", { for: "workflow" }, "Workflow"),
    select,
    fields,
    error,
    el("div", { class: "actions" }, el("button", { type: "submit", class: "primary" }, "Start"))
  )
  show(form)
  render()
}

// ---------------------------------------------------------------------------
// A run: status, decisions, timeline and live output
// ---------------------------------------------------------------------------

/** Follows the run's events over SSE with fetch (EventSource cannot send the token). */
const follow = async (runId, from, onEvent, signal) => {
  for (let attempt = 0; !signal.aborted; attempt++) {
    try {
      const response = await fetch(`/v1/runs/${encodeURIComponent(runId)}/events?from=${from}`, {
        headers: { Authorization: `Bearer ${token()}`, Accept: "text/event-stream" },
        signal
      })
      if (!response.ok || response.body === null) throw new ApiError(response.status)
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader()
      let buffer = ""
      for (;;) {
        const { value, done } = await reader.read()
        if (done) return
        buffer += value
        let end
        while ((end = buffer.indexOf("\n\n")) !== -1) {
          const frame = buffer.slice(0, end)
          buffer = buffer.slice(end + 2)
          const data = frame
            .split("\n")
            .filter((line) => line.startsWith("data:"))
            .map((line) => line.slice(5).trimStart())
            .join("\n")
          if (data === "") continue
          const event = JSON.parse(data)
          from = event.sequence + 1
          onEvent(event)
        }
      }
    } catch (cause) {
      if (signal.aborted) return
      if (cause instanceof ApiError && cause.status === 401) return route()
      // The server went away (a restart): try again from where we were.
      await new Promise((resolve) => setTimeout(resolve, Math.min(5000, 500 * 2 ** attempt)))
    }
  }
}

let leave = () => {}

const decisionBox = (wait, refresh) => {
  const comment = el("textarea", { id: `comment-${wait.step}`, name: "comment" })
  const box = el("section", { class: "card waiting-box", "aria-labelledby": `wait-${wait.step}` })
  const decide = async (path, body, button) => {
    for (const b of box.querySelectorAll("button")) b.disabled = true
    try {
      await api(path, { method: "POST", body })
      notify(`${button}: recorded`)
      await refresh()
    } catch (cause) {
      notify(cause.message)
      for (const b of box.querySelectorAll("button")) b.disabled = false
    }
  }
  const request = el("pre", { class: "json" }, JSON.stringify(wait.request, null, 2))
  const verdict = (approved, className, label, done) =>
    el(
      "button",
      {
        type: "button",
        class: className,
        onclick: () =>
          decide(
            `/v1/approvals/${encodeURIComponent(wait.token)}`,
            { approved, ...(comment.value ? { comment: comment.value } : {}) },
            done
          )
      },
      label
    )
  if (wait.kind === "approval") {
    box.append(
      el("h2", { id: `wait-${wait.step}` }, `Approval needed: ${wait.step}`),
      request,
      el("label", { for: `comment-${wait.step}` }, "Comment"),
      comment,
      el(
        "div",
        { class: "actions" },
        verdict(true, "approve", "Approve", "Approved"),
        verdict(false, "reject", "Reject", "Rejected")
      )
    )
  } else {
    const answer = el("textarea", { id: `answer-${wait.step}`, name: "answer" })
    box.append(
      el("h2", { id: `wait-${wait.step}` }, `Input needed: ${wait.step}`),
      request,
      el("label", { for: `answer-${wait.step}` }, "Your answer"),
      answer,
      el(
        "div",
        { class: "actions" },
        el(
          "button",
          {
            type: "button",
            class: "primary",
            onclick: () => decide(`/v1/inputs/${encodeURIComponent(wait.token)}`, { value: answer.value }, "Sent")
          },
          "Send"
        )
      )
    )
  }
  return box
}

/** Steps, their attempts and timing, folded from the run's events. */
const timelineOf = (events) => {
  const steps = new Map()
  for (const event of events) {
    const step = steps.get(event.step) ?? {
      name: event.step,
      first: event.timestamp,
      last: event.timestamp,
      attempts: new Set(),
      state: "running"
    }
    step.last = event.timestamp
    if (event.attempt > 0) step.attempts.add(event.attempt)
    if (event.kind === "result") step.state = "done"
    if (event.kind === "error") step.state = "failed"
    if (event.kind === "approval_requested" || event.kind === "input_requested") step.state = "waiting"
    if (event.kind === "decided") step.state = "decided"
    if (event.kind === "status" && event.payload?.state === "step_completed") step.state = "done"
    if (event.kind === "status" && event.payload?.state === "attempt_started") step.state = "running"
    steps.set(event.step, step)
  }
  return [...steps.values()]
}

const runPage = async (runId) => {
  const controller = new AbortController()
  leave = () => controller.abort()
  const events = []
  const header = el("div")
  const decisions = el("div")
  const timeline = el("ol", { class: "timeline", "aria-label": "Steps" })
  const output = el("div", { class: "output", role: "log", "aria-live": "polite", "aria-label": "Agent output" })
  const details = el("div")
  let currentText = null
  let currentKey = ""

  const refresh = async () => {
    const run = await api(`/v1/runs/${encodeURIComponent(runId)}`)
    header.replaceChildren(
      el("h1", {}, `${run.workflow} `, statusBadge(run.status)),
      el(
        "p",
        { class: "muted" },
        `Run ${run.runId} · started ${age(timestamp(run.createdAt))} · ${usageText(run.usage)}`
      )
    )
    decisions.replaceChildren(...(run.waitingFor ?? []).map((wait) => decisionBox(wait, refresh)))
    details.replaceChildren(
      el("h2", {}, "Input"),
      el("pre", { class: "json" }, JSON.stringify(run.input ?? null, null, 2)),
      run.result === undefined ? undefined : el("h2", {}, "Result"),
      run.result === undefined ? undefined : el("pre", { class: "json" }, JSON.stringify(run.result, null, 2)),
      run.error === undefined ? undefined : el("h2", {}, "Error"),
      run.error === undefined ? undefined : el("pre", { class: "json error-text" }, JSON.stringify(run.error, null, 2))
    )
    return run
  }

  const renderTimeline = () =>
    timeline.replaceChildren(
      ...timelineOf(events).map((step) =>
        el(
          "li",
          {},
          el("strong", {}, step.name),
          " ",
          statusBadge(step.state),
          el(
            "div",
            { class: "meta" },
            `${step.attempts.size || 1} attempt(s) · ${((step.last - step.first) / 1000).toFixed(1)} s`
          )
        )
      )
    )

  const append = (event) => {
    events.push(event)
    const key = `${event.step}#${event.attempt}`
    if (key !== currentKey) {
      currentKey = key
      currentText = null
      output.append(
        el("div", { class: "step" }, `▸ ${event.step}${event.attempt > 1 ? ` (attempt ${event.attempt})` : ""}`)
      )
    }
    switch (event.kind) {
      case "text_delta":
        if (currentText === null) {
          currentText = el("span")
          output.append(currentText)
        }
        currentText.textContent += event.payload.text
        break
      case "tool_use":
        currentText = null
        output.append(el("div", { class: "tool" }, `⚙ ${event.payload.name} ${JSON.stringify(event.payload.input)}`))
        break
      case "tool_result":
        output.append(
          el(
            "div",
            { class: "tool" },
            `↳ ${typeof event.payload.content === "string" ? event.payload.content : JSON.stringify(event.payload.content)}`
          )
        )
        break
      case "error":
        output.append(el("div", { class: "error" }, `✖ ${event.payload.reason ?? ""} ${event.payload.message ?? ""}`))
        break
      case "approval_requested":
      case "input_requested":
        output.append(
          el(
            "div",
            { class: "status-line" },
            `… waiting for ${event.payload.purpose === "input" ? "input" : "approval"}`
          )
        )
        break
      case "decided":
        output.append(el("div", { class: "decided" }, `✔ decided: ${JSON.stringify(event.payload.response)}`))
        break
      case "status":
        if (event.payload?.state && event.payload.state !== "attempt_started") {
          output.append(el("div", { class: "status-line" }, event.payload.state))
        }
        break
      default:
        break
    }
    output.scrollTop = output.scrollHeight
    renderTimeline()
    // A request or a decision changes what the run waits for.
    if (
      event.kind === "approval_requested" ||
      event.kind === "input_requested" ||
      event.kind === "decided" ||
      event.kind === "result"
    ) {
      refresh().catch(() => {})
    }
  }

  const live = el("p", { class: "muted" }, el("span", { class: "live", "aria-hidden": "true" }), "following live")
  show(
    header,
    decisions,
    el(
      "div",
      { class: "grid" },
      el("section", { class: "card", "aria-label": "Timeline" }, el("h2", {}, "Steps"), timeline),
      el("section", { class: "card" }, el("h2", {}, "Output"), live, output)
    ),
    el("section", { class: "card" }, details)
  )
  try {
    await refresh()
  } catch (cause) {
    show(el("h1", {}, "Run not found"), el("p", { class: "error-text" }, cause.message))
    return
  }
  await follow(runId, 1, append, controller.signal)
  if (!controller.signal.aborted) {
    live.replaceChildren("run ended")
    await refresh()
  }
}

// ---------------------------------------------------------------------------
// Routing
// ---------------------------------------------------------------------------

const route = () => {
  leave()
  leave = () => {}
  if (token() === null) return loginPage()
  logoutButton.hidden = false
  const hash = location.hash || "#/runs"
  const run = hash.match(/^#\/runs\/(.+)$/)
  const page = run !== null ? runPage(decodeURIComponent(run[1])) : hash === "#/start" ? startPage() : runsPage()
  page.catch((cause) => {
    if (cause instanceof ApiError && cause.status === 401) return
    show(el("h1", {}, "Something went wrong"), el("p", { class: "error-text" }, cause.message))
  })
}

logoutButton.addEventListener("click", () => {
  sessionStorage.removeItem(tokenKey)
  route()
})
window.addEventListener("hashchange", route)
route()
