import type { MessageInitShape } from "@bufbuild/protobuf";
import type { ConnectRouter } from "@connectrpc/connect";
import {
  AdminService,
  type FenceWriterRequest,
  type GetStatusResponseSchema,
} from "../gen/lockstep/admin/v1/admin_pb.ts";

export interface AdminServiceImpl {
  status():
    | MessageInitShape<typeof GetStatusResponseSchema>
    | Promise<MessageInitShape<typeof GetStatusResponseSchema>>;
  /** Stops the node; called after the Shutdown response went out. */
  shutdown(): Promise<void> | void;
  /** Makes the active process passive; resolves once its lock is released, with the epoch it had. */
  switchOver?(): Promise<{ writerEpoch: bigint }>;
  /** Writer fencing: a newer activation of the node says this process is stale (writer-fencing.ts). */
  fenceWriter?(request: FenceWriterRequest): Promise<{ outcome: string }>;
}

/** Registers lockstep.admin.v1.AdminService, which every node serves next to its own services. */
export function adminServiceRoutes(impl: AdminServiceImpl): (router: ConnectRouter) => void {
  return (router) => {
    router.service(AdminService, {
      getStatus: () => impl.status(),
      shutdown: () => {
        // Respond first: stopping the server inside the call would cut the caller's answer.
        setImmediate(() => {
          Promise.resolve()
            .then(() => impl.shutdown())
            .catch(() => {
              // The node logs its own stop failures; nobody is left to tell here.
            });
        });
        return {};
      },
      // Without an implementation (a bare server in tests) Connect answers Unimplemented.
      ...(impl.switchOver
        ? { switchOver: () => (impl.switchOver as () => Promise<{ writerEpoch: bigint }>)() }
        : {}),
      ...(impl.fenceWriter ? { fenceWriter: impl.fenceWriter } : {}),
    });
  };
}
