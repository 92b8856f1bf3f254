import type { Command } from "commander";
import { autoTlsPaths, isAutoTls } from "../common/tls-config.ts";
import { ensureAutoTls } from "../common/tls-issuer.ts";
import { loadCliConfig, outputFor, prepareDataDir } from "./cli-context.ts";
import { table } from "./output.ts";

export function registerTlsCommands(program: Command): void {
  const tls = program.command("tls").description('the network\'s TLS certificates (docs/security.md "TLS")');
  tls
    .command("init")
    .description(
      "issue a network CA, a certificate per node (SANs: the hosts it binds and is reached at) and the CLI's client certificate under <data-dir>/tls; keeps those that still fit",
    )
    .option("--renew", "issue the node and client certificates again even when they fit (the CA stays)")
    .action(async (opts: { renew?: boolean }, command: Command) => {
      const out = outputFor(command);
      const { config } = await loadCliConfig(command);
      prepareDataDir(config["data-dir"]);
      const certificates = await ensureAutoTls(config, { renew: Boolean(opts.renew) });
      const auto = isAutoTls(config);
      if (!auto)
        out.info("note: the config does not say `tls: auto`, so the nodes do not use these until it does");
      out.result({ dir: autoTlsPaths(config["data-dir"]).dir, auto, certificates }, () =>
        table(
          ["name", "state", "expires", "names", "file"],
          certificates.map((c) => [
            c.name,
            c.issued ? `issued (${c.reason})` : "kept",
            c.notAfter.slice(0, 10),
            c.subjectAltNames.join(" "),
            c.cert,
          ]),
        ),
      );
    });
}
