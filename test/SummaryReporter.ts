/**
 * Ends every test run with one plain line, `tests: N passed, N failed, N skipped`,
 * so that a run which executed no test is visible to anything reading the log.
 * With `failOnSkipped`, a skipped test also fails the run: a suite that must
 * prove everything it lists (the Bun suite) cannot pass by leaving tests out.
 */
import type { Reporter, TestModule } from "vitest/node"

export default class SummaryReporter implements Reporter {
  readonly failOnSkipped: boolean

  constructor(options: { readonly failOnSkipped?: boolean } = {}) {
    this.failOnSkipped = options.failOnSkipped === true
  }

  onTestRunEnd(testModules: ReadonlyArray<TestModule>): void {
    let passed = 0
    let failed = 0
    let skipped = 0
    for (const module of testModules) {
      for (const test of module.children.allTests()) {
        const state = test.result().state
        if (state === "passed") passed++
        else if (state === "failed") failed++
        else skipped++
      }
      // A file that failed to load, or whose beforeAll failed, may show no
      // failed test (its tests are skipped), but it is a failure.
      if (module.state() === "failed" && ![...module.children.allTests()].some((t) => t.result().state === "failed")) {
        failed++
      }
    }
    process.stdout.write(`\ntests: ${passed} passed, ${failed} failed, ${skipped} skipped\n`)
    // Vitest sets a failing exit code and never clears one, so this only adds failures.
    if (this.failOnSkipped && skipped > 0) process.exitCode = 1
  }
}
