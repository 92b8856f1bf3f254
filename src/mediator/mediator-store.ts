import type { Micros } from "../common/time.ts";
import type { Queryable } from "../storage/db.ts";
import type { Migration } from "../storage/migrations.ts";
import type {
  DecidedVerdict,
  HostedParty,
  OpenRequest,
  RequestStore,
  ResponseRecord,
  VerdictOutcome,
} from "./confirmation-aggregator.ts";

/**
 * The mediator's state in its own database (versions 300–399). Written only from the sequencer
 * client's event handler, in the transaction that also records the clean timestamp, so the state
 * is always exactly "the aggregation of every event up to clean": a crash loses nothing that the
 * replay from clean does not redo identically.
 */
export const mediatorMigrations: readonly Migration[] = [
  {
    version: 300,
    name: "mediator_requests",
    sql: `
-- One row per accepted confirmation request, keyed by its sequencing timestamp (the request id).
CREATE TABLE mediator_requests (
  request_id           bigint PRIMARY KEY,
  root_hash            bytea NOT NULL,
  deadline             bigint NOT NULL,
  -- [{"party", "participant"}] sorted by party: the confirming parties' hosts at request time.
  hosts                jsonb NOT NULL,
  approved             text[] NOT NULL DEFAULT '{}',
  -- Who receives the verdict: the informee participants and the submitter.
  recipients           text[] NOT NULL,
  state                text NOT NULL CHECK (state IN ('open', 'decided')),
  outcome              jsonb,
  decided_at           bigint,
  -- The timestamp at which the mediator's verdict submission was sequenced (its receipt).
  verdict_sequenced_at bigint,
  CHECK ((state = 'open') = (outcome IS NULL))
);
CREATE INDEX mediator_requests_open_deadline ON mediator_requests (deadline) WHERE state = 'open';
CREATE INDEX mediator_requests_unsent ON mediator_requests (request_id)
  WHERE state = 'decided' AND verdict_sequenced_at IS NULL;

-- Every response received, counted or not (and why not): the audit trail of each verdict.
CREATE TABLE mediator_responses (
  received_at  bigint PRIMARY KEY,
  request_id   bigint NOT NULL,
  sender       text NOT NULL,
  parties      text[] NOT NULL,
  verdict      text NOT NULL CHECK (verdict IN ('approve', 'reject', 'none')),
  counted      boolean NOT NULL,
  note         text
);
CREATE INDEX mediator_responses_request ON mediator_responses (request_id);
`,
  },
];

interface RequestRow {
  request_id: bigint;
  root_hash: Buffer;
  deadline: bigint;
  hosts: HostedParty[];
  approved: string[];
  recipients: string[];
}

const OPEN_COLUMNS = "request_id, root_hash, deadline, hosts, approved, recipients";

function toOpenRequest(row: RequestRow): OpenRequest {
  return {
    requestId: row.request_id,
    rootHash: row.root_hash,
    deadline: row.deadline,
    hosts: [...row.hosts].sort((a, b) => (a.party < b.party ? -1 : a.party > b.party ? 1 : 0)),
    approved: [...row.approved].sort(),
    recipients: [...row.recipients].sort(),
  };
}

/** RequestStore over the mediator's tables, bound to one transaction (the event handler's). */
export class DbRequestStore implements RequestStore {
  constructor(private readonly tx: Queryable) {}

  async expired(at: Micros): Promise<OpenRequest[]> {
    const rows = await this.tx.query<RequestRow>(
      `SELECT ${OPEN_COLUMNS} FROM mediator_requests WHERE state = 'open' AND deadline < $1
       ORDER BY request_id FOR UPDATE`,
      [at],
    );
    return rows.map(toOpenRequest);
  }

  async lookup(requestId: Micros): Promise<OpenRequest | "decided" | undefined> {
    const row = await this.tx.maybeOne<RequestRow & { state: string }>(
      `SELECT ${OPEN_COLUMNS}, state FROM mediator_requests WHERE request_id = $1 FOR UPDATE`,
      [requestId],
    );
    if (!row) return undefined;
    return row.state === "decided" ? "decided" : toOpenRequest(row);
  }

  async open(request: OpenRequest): Promise<void> {
    await this.tx.execute(
      `INSERT INTO mediator_requests (request_id, root_hash, deadline, hosts, approved, recipients, state)
       VALUES ($1, $2, $3, $4::jsonb, $5, $6, 'open')`,
      [
        request.requestId,
        request.rootHash,
        request.deadline,
        JSON.stringify(request.hosts),
        [...request.approved],
        [...request.recipients],
      ],
    );
  }

  async update(request: OpenRequest): Promise<void> {
    await this.tx.execute(
      "UPDATE mediator_requests SET approved = $2 WHERE request_id = $1 AND state = 'open'",
      [request.requestId, [...request.approved]],
    );
  }

  /** Also for requests rejected on arrival, which were never open: hence the upsert. */
  async decide(verdict: DecidedVerdict): Promise<void> {
    await this.tx.execute(
      `INSERT INTO mediator_requests
         (request_id, root_hash, deadline, hosts, recipients, state, outcome, decided_at)
       VALUES ($1, $2, $3, '[]'::jsonb, $4, 'decided', $5::jsonb, $3)
       ON CONFLICT (request_id) DO UPDATE
         SET state = 'decided', outcome = EXCLUDED.outcome, decided_at = EXCLUDED.decided_at`,
      [
        verdict.requestId,
        verdict.rootHash,
        verdict.decidedAt,
        [...verdict.recipients],
        JSON.stringify(verdict.outcome),
      ],
    );
  }

  async recordResponse(record: ResponseRecord): Promise<void> {
    await this.tx.execute(
      `INSERT INTO mediator_responses (received_at, request_id, sender, parties, verdict, counted, note)
       VALUES ($1, $2, $3, $4, $5, $6, $7)`,
      [
        record.receivedAt,
        record.requestId,
        record.sender,
        [...record.parties],
        record.verdict,
        record.counted,
        record.note ?? null,
      ],
    );
  }
}

/** Marks a verdict as sequenced (the mediator saw the receipt of its own submission). */
export async function markVerdictSequenced(tx: Queryable, requestId: Micros, at: Micros): Promise<void> {
  await tx.execute(
    `UPDATE mediator_requests SET verdict_sequenced_at = $2
     WHERE request_id = $1 AND state = 'decided' AND verdict_sequenced_at IS NULL`,
    [requestId, at],
  );
}

/** Verdicts decided but not yet seen sequenced: what the mediator (re-)sends. */
export async function unsequencedVerdicts(q: Queryable): Promise<DecidedVerdict[]> {
  const rows = await q.query<{
    request_id: bigint;
    root_hash: Buffer;
    recipients: string[];
    outcome: VerdictOutcome;
    decided_at: bigint;
  }>(
    `SELECT request_id, root_hash, recipients, outcome, decided_at FROM mediator_requests
     WHERE state = 'decided' AND verdict_sequenced_at IS NULL ORDER BY request_id`,
  );
  return rows.map((r) => ({
    requestId: r.request_id,
    rootHash: r.root_hash,
    recipients: r.recipients,
    outcome: r.outcome,
    decidedAt: r.decided_at,
  }));
}

export async function openRequestCount(q: Queryable): Promise<number> {
  const row = await q.one<{ count: number }>(
    "SELECT count(*)::int AS count FROM mediator_requests WHERE state = 'open'",
  );
  return row.count;
}
