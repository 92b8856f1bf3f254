import type { DescService } from "@bufbuild/protobuf";
import { Code, ConnectError, type ConnectRouter } from "@connectrpc/connect";
import { LockstepError } from "../common/errors.ts";

type Implementation = Record<string, unknown>;
type Options = Parameters<ConnectRouter["service"]>[2];

interface Recorded {
  service: DescService;
  implementation: Implementation;
  options: Options;
}

/**
 * A node kind's services, registered once on the node's server but served by whichever instance of
 * the kind is current. A kind instance is activated and stopped once; a process that went passive
 * (lost its lock, or was switched over) and becomes active again runs a fresh instance, and the
 * server, started before the first activation, must reach it.
 */
export class KindRoutes {
  private current = new Map<string, Recorded>();

  /** Registers every service `define` registers, served by these implementations until replace(). */
  register(router: ConnectRouter, define: (router: ConnectRouter) => void): void {
    this.current = record(define);
    for (const { service, options } of this.current.values()) {
      const delegates: Implementation = {};
      for (const method of service.methods) {
        delegates[method.localName] = (request: unknown, context: unknown) => {
          const implementation = this.current.get(service.typeName)?.implementation;
          const fn = implementation?.[method.localName];
          if (typeof fn !== "function") {
            throw new ConnectError(
              `${service.typeName}.${method.name} is not implemented`,
              Code.Unimplemented,
            );
          }
          return fn.call(implementation, request, context);
        };
      }
      router.service(service, delegates as never, options);
    }
  }

  /** From now on the services are served by the implementations `define` registers. */
  replace(define: (router: ConnectRouter) => void): void {
    const next = record(define);
    const missing = [...this.current.keys()].filter((name) => !next.has(name));
    const added = [...next.keys()].filter((name) => !this.current.has(name));
    if (missing.length > 0 || added.length > 0) {
      throw new LockstepError("INTERNAL_ERROR", {
        details: `a new instance of the node kind serves other services (missing ${missing}, added ${added})`,
      });
    }
    this.current = next;
  }
}

function record(define: (router: ConnectRouter) => void): Map<string, Recorded> {
  const recorded = new Map<string, Recorded>();
  const router: ConnectRouter = {
    handlers: [],
    service(service, implementation, options) {
      recorded.set(service.typeName, { service, implementation: implementation as Implementation, options });
      return this;
    },
    rpc() {
      // Node kinds register whole services; a single rpc() would need its own delegate.
      throw new LockstepError("INTERNAL_ERROR", { details: "node kinds must register services, not rpc()" });
    },
  };
  define(router);
  return recorded;
}
