import type { Client } from "@connectrpc/connect";
import type { NodeEntry } from "../common/config-schema.ts";
import { LOOPBACK } from "../common/loopback.ts";
import { nodeEndpoint } from "../common/node-endpoint.ts";
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

/** The Admin API of a node of the config, at its configured address. */
export function nodeAdminClient(
  node: NodeEntry,
  options: NodeClientOptions = {},
): Client<typeof AdminService> {
  return createNodeClient(AdminService, nodeEndpoint(node).url, options);
}
