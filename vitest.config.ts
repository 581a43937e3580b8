import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    reporters: ["default", "./test/SummaryReporter.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Integration tests spawn real CLI processes; two cores cannot run many at once.
    maxWorkers: 2
  }
})
