import type { NodeKind } from "../common/config-schema.ts";
import type { NodeKindDefinition } from "../common/node-kind.ts";
import { mediatorNodeKind } from "../mediator/mediator-node.ts";
import { participantNodeKind } from "../participant/participant-node.ts";
import { sequencerNodeKind } from "../sequencer/sequencer-node.ts";
import type { Db } from "../storage/db.ts";

const DEFINITIONS: Record<NodeKind, NodeKindDefinition<Db>> = {
  sequencer: sequencerNodeKind,
  mediator: mediatorNodeKind,
  participant: participantNodeKind,
};

export function nodeKindDefinition(kind: NodeKind): NodeKindDefinition<Db> {
  return DEFINITIONS[kind];
}
