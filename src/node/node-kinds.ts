import type { NodeKind } from "../common/config-schema.ts";
import type { NodeKindDefinition } from "../common/node-kind.ts";
import { mediatorNodeKind } from "../mediator/mediator-node.ts";
import { sequencerNodeKind } from "../sequencer/sequencer-node.ts";
import type { Db } from "../storage/db.ts";

/**
 * A node kind with no protocol behaviour yet: it serves the Admin API and health only.
 * The participant issue replaces it with the real kind.
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
  sequencer: sequencerNodeKind,
  mediator: mediatorNodeKind,
  participant: basicKind("participant"),
};

export function nodeKindDefinition(kind: NodeKind): NodeKindDefinition<Db> {
  return DEFINITIONS[kind];
}
