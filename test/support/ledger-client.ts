import http from "node:http";
import type { Client } from "@connectrpc/connect";
import { createNodeClient, nodeBaseUrl } from "../../src/common/rpc-client.ts";
import { CommandCompletionService } from "../../src/gen/lockstep/ledger/v1/command_completion_service_pb.ts";
import { CommandService } from "../../src/gen/lockstep/ledger/v1/command_service_pb.ts";
import { CommandSubmissionService } from "../../src/gen/lockstep/ledger/v1/command_submission_service_pb.ts";
import { PartyManagementService } from "../../src/gen/lockstep/ledger/v1/party_management_service_pb.ts";
import { StateService } from "../../src/gen/lockstep/ledger/v1/state_service_pb.ts";
import { UpdateService } from "../../src/gen/lockstep/ledger/v1/update_service_pb.ts";

export interface JsonResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  /** The parsed body (Connect JSON: the response message, or `{code, message, details}` on error). */
  body: Record<string, unknown>;
  httpVersion: string;
}

/**
 * One Connect unary call with a plain HTTP/1.1 client (node:http, no fetch, no HTTP/2): what
 * `curl -H 'content-type: application/json' -d '{…}' http://host:port/pkg.Service/Method` does.
 */
export function postConnectJson(port: number, procedure: string, body: unknown = {}): Promise<JsonResponse> {
  const payload = Buffer.from(JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: "127.0.0.1",
        port,
        method: "POST",
        path: `/${procedure}`,
        headers: { "content-type": "application/json", "content-length": payload.length },
        agent: false,
      },
      (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (d) => {
          text += d;
        });
        res.on("end", () => {
          try {
            resolve({
              status: res.statusCode ?? 0,
              headers: res.headers,
              body: text ? (JSON.parse(text) as Record<string, unknown>) : {},
              httpVersion: res.httpVersion,
            });
          } catch (error) {
            reject(new Error(`${procedure}: not JSON (${res.statusCode}): ${text}`, { cause: error }));
          }
        });
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    req.setTimeout(60_000, () => req.destroy(new Error(`${procedure} timed out`)));
    req.end(payload);
  });
}

/** The Lockstep error code of a Connect JSON error body: the ErrorDetail's `debug.code`, or the message prefix. */
export function connectJsonErrorCode(body: Record<string, unknown>): string | undefined {
  const details = body.details as { type?: string; debug?: { code?: string } }[] | undefined;
  const fromDetail = details?.find((d) => d.type === "lockstep.common.v1.ErrorDetail")?.debug?.code;
  return fromDetail ?? /^([A-Z_]+):/.exec(String(body.message ?? ""))?.[1];
}

export interface LedgerClients {
  parties: Client<typeof PartyManagementService>;
  commands: Client<typeof CommandService>;
  submission: Client<typeof CommandSubmissionService>;
  completions: Client<typeof CommandCompletionService>;
  updates: Client<typeof UpdateService>;
  state: Client<typeof StateService>;
}

/** Connect clients (binary, HTTP/2) for every Ledger API service of the participant at host:port. */
export function ledgerClients(port: number, host?: string): LedgerClients {
  const url = nodeBaseUrl(port, host);
  return {
    parties: createNodeClient(PartyManagementService, url),
    commands: createNodeClient(CommandService, url),
    submission: createNodeClient(CommandSubmissionService, url),
    completions: createNodeClient(CommandCompletionService, url),
    updates: createNodeClient(UpdateService, url),
    state: createNodeClient(StateService, url),
  };
}

/** Iou arguments as docs/cli.md writes them (decimals as strings). */
export function iouArgs(issuer: string, owner: string, amount = "100.00", currency = "USD") {
  return { issuer, owner, amount, currency };
}
