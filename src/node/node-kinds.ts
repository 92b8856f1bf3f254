import type { NodeKind } from "../common/config-schema.ts";
import type { NodeKindDefinition } from "../common/node-kind.ts";
import type { Db } from "../storage/db.ts";

/**
 * A node kind with no protocol behaviour yet: it serves the Admin API and health only.
 * The synchronizer and participant issues replace these with the real kinds.
 */
function basicKind(kind: NodeKind): NodeKindDefinition<Db> {
  return {
    kind,
    migrations: [],
    create: () => ({
      routes: () => {},
      activate: async () => {},
      status: async () => ({ position: {} }),
      stop: async () => {},
    }),
  };
}

const DEFINITIONS: Record<NodeKind, NodeKindDefinition<Db>> = {
  sequencer: basicKind("sequencer"),
  mediator: basicKind("mediator"),
  participant: basicKind("participant"),
};

export function nodeKindDefinition(kind: NodeKind): NodeKindDefinition<Db> {
  return DEFINITIONS[kind];
}
