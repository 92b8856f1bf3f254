/**
 * Named points where a process can be made to die at once, as `kill -9` would, to test that every
 * multi-step operation resumes after an interruption at each step. Set LOCKSTEP_CRASH_AT to a
 * comma-separated list of point names; unset (always, outside tests) it costs one lookup.
 */
export function crashPoint(name: string): void {
  const points = process.env.LOCKSTEP_CRASH_AT;
  if (!points) return;
  if (points.split(",").some((p) => p.trim() === name)) process.kill(process.pid, "SIGKILL");
}
