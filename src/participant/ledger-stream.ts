import { LockstepError } from "../common/errors.ts";
import type { Queryable } from "../storage/db.ts";
import type { LedgerNotifier } from "./ledger-notifier.ts";
import { readLedgerEnd } from "./participant-store.ts";

/** Up to `limit` items at offsets in (after, upTo], in offset order. */
export type OffsetPageReader<T extends { readonly offset: bigint }> = (
  after: bigint,
  upTo: bigint,
  limit: number,
) => Promise<readonly T[]>;

export interface FollowLedgerOptions<T extends { readonly offset: bigint }> {
  readonly db: Queryable;
  readonly notifier: LedgerNotifier;
  readonly signal: AbortSignal;
  readonly beginExclusive: bigint;
  /** Undefined: stay open and deliver what commits later. */
  readonly endInclusive?: bigint;
  /** The tables sharing the offset sequence that this stream shows (e.g. transactions and markers). */
  readonly sources: readonly OffsetPageReader<T>[];
  readonly pageSize?: number;
}

/**
 * The items of several sources merged in offset order, after beginExclusive, up to endInclusive or
 * for as long as the signal allows. Reads only up to the ledger end read before: offsets are handed
 * out under the ledger end's row lock in the transaction that writes the item, so everything up to
 * a committed ledger end is visible and nothing is skipped. Throws OFFSET_AFTER_LEDGER_END (and
 * INVALID_ARGUMENT for a negative offset) from the first next().
 */
export async function* followLedger<T extends { readonly offset: bigint }>(
  options: FollowLedgerOptions<T>,
): AsyncGenerator<T> {
  const { db, notifier, signal, beginExclusive, endInclusive, sources } = options;
  const pageSize = options.pageSize ?? 200;
  let end = await readLedgerEnd(db);
  checkOffset(beginExclusive, end);
  if (endInclusive !== undefined) checkOffset(endInclusive, end);
  let cursor = beginExclusive;
  while (!signal.aborted) {
    const upTo = endInclusive !== undefined && endInclusive < end ? endInclusive : end;
    const pages = await Promise.all(sources.map((read) => read(cursor, upTo, pageSize)));
    // A full page may stop short of upTo, and another source's items beyond its last offset would
    // then come before the ones it has not returned yet: merge only up to the lowest such offset.
    let complete = upTo;
    for (const page of pages) {
      const last = page.at(-1);
      if (page.length >= pageSize && last && last.offset < complete) complete = last.offset;
    }
    const merged = pages
      .flat()
      .filter((item) => item.offset <= complete)
      .sort((a, b) => (a.offset < b.offset ? -1 : a.offset > b.offset ? 1 : 0));
    for (const item of merged) {
      if (signal.aborted) return;
      yield item;
    }
    cursor = complete;
    if (endInclusive !== undefined && cursor >= endInclusive) return;
    if (cursor >= end) await notifier.wait(signal);
    end = await readLedgerEnd(db);
  }
}

export function checkOffset(offset: bigint, ledgerEnd: bigint): void {
  if (offset < 0n) throw new LockstepError("INVALID_ARGUMENT", { details: `offset ${offset} is negative` });
  if (offset > ledgerEnd) throw new LockstepError("OFFSET_AFTER_LEDGER_END", { offset, ledgerEnd });
}
