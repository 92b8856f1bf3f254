import type { LockstepConfig } from "../../common/config-schema.ts";
import { configNodes } from "../../common/config-schema.ts";
import type { Logger } from "../../common/logging.ts";
import { BackupKeys } from "../backup-keys.ts";
import { stanzaPgBackRest } from "./node-cluster.ts";
import { knownRepos } from "./pgbackrest-repo.ts";
import type { PgBackRestExpiryContext } from "./pgbackrest-retention.ts";

/**
 * The repositories `backup expire` goes through (pgbackrest-repo.ts knownRepos): the current one and
 * every other in the backup repository, each with pgBackRest for its stanzas.
 */
export function expiryContexts(config: LockstepConfig, logger: Logger): PgBackRestExpiryContext[] {
  const keys = new BackupKeys(config.backup.encryption);
  return knownRepos(config, keys).map((known, i) => {
    if (!known.ok) {
      return {
        repoPath: known.path,
        keyFingerprint: known.keyFingerprint,
        current: false,
        unavailable: `it is encrypted under backup key ${known.keyFingerprint}, which backup.encryption does not hold (add its file to previous-key-files to expire it)`,
        forStanza: () => {
          throw new Error(`repository ${known.folder}: no key`);
        },
      };
    }
    const { repo } = known;
    return {
      repoPath: repo.path,
      ...(repo.cipher ? { keyFingerprint: repo.cipher.keyFingerprint } : {}),
      current: i === 0,
      forStanza: (stanza: string) => {
        const tool = stanzaPgBackRest(config, configNodes(config), stanza, logger, repo);
        tool.prepare();
        return tool;
      },
    };
  });
}
