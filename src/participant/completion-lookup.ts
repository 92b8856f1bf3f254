import type { Db } from "../storage/db.ts";
import {
  completionsOfSubmissions,
  type StoredCompletion,
  type SubmissionKey,
  submissionKeyString,
} from "./participant-store.ts";

type Waiter = { resolve: (c: StoredCompletion | undefined) => void; reject: (e: unknown) => void };

/**
 * Looks up the completions of submissions for all SubmitAndWait callers at once: every caller
 * wakes when the ledger end moves, and one query for all of them replaces one query each (which
 * at 16+ waiting callers per participant saturated the connection pool). Lookups asked while a
 * query runs go into the next one.
 */
export class CompletionLookup {
  private pending = new Map<string, { key: SubmissionKey; waiters: Waiter[] }>();
  private running = false;

  constructor(private readonly db: Db) {}

  /** The completion of this submission (its id and change id: never another user's of the same id). */
  get(key: SubmissionKey): Promise<StoredCompletion | undefined> {
    return new Promise((resolve, reject) => {
      const id = submissionKeyString(key);
      const entry = this.pending.get(id);
      if (entry) entry.waiters.push({ resolve, reject });
      else this.pending.set(id, { key, waiters: [{ resolve, reject }] });
      if (!this.running) {
        this.running = true;
        queueMicrotask(() => void this.run());
      }
    });
  }

  private async run(): Promise<void> {
    while (this.pending.size > 0) {
      const batch = this.pending;
      this.pending = new Map();
      try {
        const found = await completionsOfSubmissions(
          this.db,
          [...batch.values()].map((e) => e.key),
        );
        for (const [id, { waiters }] of batch) for (const w of waiters) w.resolve(found.get(id));
      } catch (error) {
        for (const { waiters } of batch.values()) for (const w of waiters) w.reject(error);
      }
    }
    this.running = false;
  }
}
