import { runCli } from "./program.ts";

const code = await runCli(process.argv.slice(2));
// Exit explicitly: pools, timers or sockets of a stopped network must not keep the CLI alive.
process.exit(code);
