import type { Manifest } from "./manifest.ts";
import { findForks } from "./order-check.ts";

/**
 * What a manifest says that its own content contradicts, or null. The checksum proves only that
 * the manifest was sealed as it is, not that what sealed it told the truth (a hand-edited and
 * re-sealed manifest, a buggy writer): restore trusts `unsafe`, the node list and the positions, so
 * a set whose manifest contradicts itself is refused as corrupted wherever it is read
 * (BackupRepository.readManifest), never restored nor counted by retention.
 */
export function manifestContradiction(manifest: Manifest): string | null {
  const names = manifest.nodes.map((n) => n.name);
  const twice = names.find((name, i) => names.indexOf(name) !== i);
  if (twice) return `node ${twice} is listed twice`;
  const sequencers = manifest.nodes.filter((n) => n.kind === "sequencer");
  if (sequencers.length > 1)
    return `${sequencers.length} sequencers (${sequencers.map((n) => n.name).join(", ")})`;
  if (manifest.safe !== (manifest.unsafe.length === 0))
    return `safe is ${manifest.safe} with ${manifest.unsafe.length} unsafe finding(s)`;
  const stranger = manifest.unsafe.find((u) => !names.includes(u.node));
  if (stranger) return `an unsafe finding names ${stranger.node}, not in the set`;
  const sequencer = sequencers[0];
  // Version 1 compared timestamps only; a set without its sequencer was checked against the live one.
  if (manifest.manifestVersion < 2 || manifest.orderCheck !== "checked" || sequencer?.kind !== "sequencer")
    return null;
  // The order check again, from the positions the manifest holds (order-check.ts, as create ran it).
  const forks = findForks(manifest.nodes, sequencer.position.memberEvents ?? {}, manifest.id).map(
    (f) => f.node,
  );
  const recorded = manifest.unsafe.map((u) => u.node);
  const hidden = forks.find((node) => !recorded.includes(node));
  if (hidden)
    return `${hidden}'s last stored event is not its sequencer's in the set (the positions show a fork the set does not record)`;
  const invented = recorded.find((node) => !forks.includes(node));
  if (invented) return `the set records a fork of ${invented} that its positions do not show`;
  return null;
}
