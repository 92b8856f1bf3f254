import type { UnsignedManifest } from "../../src/backup/manifest.ts";

/**
 * A one-participant manifest as manifest v1 wrote it (pg_dump's `format` per node, no `engine`), for
 * tests of the repository's file rules, retention, the fork check and reading older manifests.
 */
export function unsignedManifest(id: string, overrides: Partial<UnsignedManifest> = {}): UnsignedManifest {
  return {
    manifestVersion: 1,
    id,
    lockstepVersion: "0.1.0",
    synchronizerId: "sync1",
    mode: "ordered",
    startedAt: "2026-11-27T00:00:00.000Z",
    finishedAt: "2026-11-27T00:00:01.000Z",
    appHook: null,
    nodes: [
      {
        name: "participant1",
        kind: "participant",
        member: "participant1::1220aa",
        synchronizerId: "sync1",
        incarnation: "inc",
        writerEpoch: "1",
        format: "custom",
        artifact: "participant1.dump",
        files: [{ path: "participant1.dump", bytes: "3", sha256: "0".repeat(64) }],
        bytes: "3",
        database: "participant1",
        postgres: { version: "15.18", systemIdentifier: "1" },
        keyFingerprints: ["1220aa"],
        startedAt: "2026-11-27T00:00:00.000Z",
        finishedAt: "2026-11-27T00:00:01.000Z",
        position: {
          clean: "100",
          ledgerEnd: "2",
          lastStored: { timestamp: "100", chainHash: "1".repeat(64) },
        },
      },
    ],
    orderCheck: "checked",
    checkedAgainst: null,
    safe: true,
    unsafe: [],
    bytes: "3",
    ...overrides,
  };
}
