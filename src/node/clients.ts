import type { Client } from "@connectrpc/connect";
import { LOOPBACK } from "../common/loopback.ts";
import { createNodeClient, type NodeClientOptions, nodeBaseUrl } from "../common/rpc-client.ts";
import { AdminService } from "../gen/lockstep/admin/v1/admin_pb.ts";

/** The Admin API of the node listening on host:port. */
export function adminClient(
  port: number,
  host = LOOPBACK,
  options: NodeClientOptions = {},
): Client<typeof AdminService> {
  return createNodeClient(AdminService, nodeBaseUrl(port, host), options);
}
