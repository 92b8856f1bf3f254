/** What `GET /health` reports. Only "active" answers 200, so load balancers route to the active replica. */
export interface HealthReport {
  node: string;
  kind: string;
  status: "active" | "passive" | "starting" | "failed" | "stopping";
  /** Why the node is not active (e.g. the fatal error's message), when it is not. */
  reason?: string;
}

export function healthHttpStatus(report: HealthReport): 200 | 503 {
  return report.status === "active" ? 200 : 503;
}
