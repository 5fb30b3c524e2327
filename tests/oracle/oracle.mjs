// The reference IPFS stack (ipfs-unixfs-importer/-exporter, @ipld/car), driven the way the
// test suite needs it. It is the oracle peerfs is checked against, not part of peerfs.
//
//   node oracle.mjs add DIR_OR_FILE OPTIONS_JSON        prints "<root cid> <root unixfs type>"
//   node oracle.mjs car DIR_OR_FILE OPTIONS_JSON OUT    writes a CARv1 of the import, prints the root
//   node oracle.mjs extract CAR OUTDIR                  writes the CAR's root out as a tree
//
// OPTIONS_JSON: {"profile": "unixfs-v1-2025"|"unixfs-v0-2015", "cidVersion": 0|1,
//   "rawLeaves": bool, "chunkSize": N, "maxLinks": N, "preserveMode": bool, "preserveMtime": bool}
import fs from 'node:fs'
import path from 'node:path'
import { importer } from 'ipfs-unixfs-importer'
import { fixedSize } from 'ipfs-unixfs-importer/chunker'
import { balanced } from 'ipfs-unixfs-importer/layout'
import { exporter } from 'ipfs-unixfs-exporter'
import { MemoryBlockstore } from 'blockstore-core/memory'
import { CarWriter, CarReader } from '@ipld/car'

function metadata (st, opts) {
  const m = {}
  if (opts.preserveMode && !st.isSymbolicLink()) m.mode = Number(st.mode & 0o7777n)
  if (opts.preserveMtime) {
    const ns = st.mtimeNs
    const secs = ns >= 0n ? ns / 1_000_000_000n : -((-ns + 999_999_999n) / 1_000_000_000n)
    const nsecs = Number(ns - secs * 1_000_000_000n)
    m.mtime = nsecs === 0 ? { secs } : { secs, nsecs }
  }
  return m
}

// Parents before children, names in byte order: the order `peerfs add -r` walks in.
function * candidates (p, rel, opts) {
  const st = fs.lstatSync(p, { bigint: true })
  const meta = metadata(st, opts)
  if (st.isSymbolicLink()) {
    yield { path: rel, link: fs.readlinkSync(p), ...meta }
  } else if (st.isDirectory()) {
    yield { path: rel, ...meta }
    const names = fs.readdirSync(p, { encoding: 'buffer' }).sort(Buffer.compare)
    for (const n of names) yield * candidates(path.join(p, n.toString()), rel + '/' + n.toString(), opts)
  } else {
    yield { path: rel, content: fs.createReadStream(p), ...meta }
  }
}

function importOptions (o) {
  const opts = { profile: o.profile ?? 'unixfs-v1-2025' }
  if (o.cidVersion != null) opts.cidVersion = o.cidVersion
  if (o.rawLeaves != null) opts.rawLeaves = o.rawLeaves
  if (o.chunkSize != null) opts.chunker = fixedSize({ chunkSize: o.chunkSize })
  if (o.maxLinks != null) opts.layout = balanced({ maxChildrenPerNode: o.maxLinks })
  return opts
}

async function importTree (target, o, blockstore) {
  const rel = path.basename(target)
  let root
  for await (const entry of importer(candidates(target, rel, o), blockstore, importOptions(o))) {
    if (entry.path === rel) root = entry
  }
  if (root == null) throw new Error('the importer yielded no root')
  return root
}

async function writeTree (cid, blockstore, out) {
  const entry = await exporter(cid, blockstore)
  if (entry.type === 'directory') {
    fs.mkdirSync(out, { recursive: true })
    for await (const child of entry.entries()) await writeTree(child.cid, blockstore, path.join(out, child.name))
  } else if (entry.type === 'file' && entry.unixfs.type === 'symlink') {
    fs.symlinkSync(Buffer.from(entry.unixfs.data).toString(), out)
  } else {
    const fd = fs.openSync(out, 'w')
    for await (const chunk of entry.content()) fs.writeSync(fd, chunk)
    fs.closeSync(fd)
  }
}

const [cmd, ...args] = process.argv.slice(2)
if (cmd === 'add') {
  const root = await importTree(args[0], JSON.parse(args[1] ?? '{}'), new MemoryBlockstore())
  const type = root.unixfs?.type ?? 'raw'
  console.log(`${root.cid} ${type}`)
} else if (cmd === 'car') {
  // Records every put with its real CID (MemoryBlockstore keys by multihash only).
  const puts = new Map()
  const blockstore = {
    put: async (cid, bytes) => { puts.set(cid.toString(), { cid, bytes }); return cid },
    has: async (cid) => puts.has(cid.toString())
  }
  const root = await importTree(args[0], JSON.parse(args[1] ?? '{}'), blockstore)
  const { writer, out } = CarWriter.create([root.cid])
  const done = (async () => {
    const fd = fs.openSync(args[2], 'w')
    for await (const bytes of out) fs.writeSync(fd, bytes)
    fs.closeSync(fd)
  })()
  for (const block of puts.values()) await writer.put(block)
  await writer.close()
  await done
  console.log(`${root.cid}`)
} else if (cmd === 'extract') {
  const reader = await CarReader.fromBytes(fs.readFileSync(args[0]))
  const blockstore = new MemoryBlockstore()
  for await (const { cid, bytes } of reader.blocks()) await blockstore.put(cid, bytes)
  const [root] = await reader.getRoots()
  await writeTree(root, blockstore, args[1])
} else {
  console.error('usage: oracle.mjs add|car|extract …')
  process.exit(2)
}
