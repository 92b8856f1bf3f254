/**
 * A directory-format dump's completeness, from its table of contents (`pg_restore --list`, which
 * reads toc.dat alone): every TABLE DATA entry has its data file, `<dump id>.dat` plus the
 * compression's suffix (pg_backup_directory.c names them so). Each file of an encrypted directory
 * authenticates on its own, so a file deleted together with its manifest entry is seen only here.
 */
const TABLE_DATA = /^(\d+); \d+ \d+ TABLE DATA /;
const SUFFIXES = ["", ".gz", ".lz4", ".zst"];

/** The data files the listing names that are not among `files` (names relative to the directory). */
export function missingDataFiles(listing: readonly string[], files: readonly string[]): string[] {
  const present = new Set(files);
  const missing: string[] = [];
  for (const line of listing) {
    const id = TABLE_DATA.exec(line)?.[1];
    if (id && !SUFFIXES.some((suffix) => present.has(`${id}.dat${suffix}`))) missing.push(`${id}.dat`);
  }
  return missing;
}
