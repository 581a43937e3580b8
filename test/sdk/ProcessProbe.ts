/**
 * Whether a process is still running: how the SDK tests prove that no Claude
 * Code process outlives its scope.
 */
export const isAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}
