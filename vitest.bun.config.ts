/**
 * The suite on Bun: `npm run test:bun` runs `bun --bun vitest run --config vitest.bun.config.ts`,
 * so vitest, its workers and every child process a test spawns (`process.execPath`) are Bun.
 * The same files and settings as `vitest.config.ts`, with these differences:
 */
import { defineConfig } from "vitest/config"
import base from "./vitest.config.ts"

export default defineConfig({
  test: {
    ...base.test,
    // Vitest's default `forks` pool fails to start on Bun: it calls `child.channel.unref()`,
    // which Bun's IPC channel lacks (vitest 5.1.1, Bun 1.4.5). Worker threads work.
    pool: "threads",
    // A skipped test fails the run: the README's list of what runs on Bun is this suite.
    reporters: ["default", ["./test/SummaryReporter.ts", { failOnSkipped: true }]]
  }
})
