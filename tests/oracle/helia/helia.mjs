// A Helia node (the JavaScript IPFS implementation) that the Bitswap tests use as the
// other side: loopback TCP only, no bootstrap, mDNS, DHT, delegated routing, autoNAT,
// UPnP or relay; Bitswap its only block broker. Not part of peerfs.
//
//   node helia.mjs fetch MULTIADDR CID OUTDIR TIMEOUT_MS
//       dials MULTIADDR, exports CID's tree to OUTDIR over Bitswap; prints a JSON
//       summary {"files","dirs","hamtShards","symlinks","bytes"}; exit 2 on timeout
//   node helia.mjs serve FILE
//       imports FILE, prints "<cid> <multiaddr>" and serves it until killed
//   node helia.mjs mirror MULTIADDR CID [LENGTH]
//       dials MULTIADDR, fetches CID's file (its first LENGTH bytes' blocks) over
//       Bitswap, hangs up, prints "<cid> <multiaddr>" and serves them until killed

// Node 20 lacks Promise.withResolvers, which libp2p uses: added before libp2p loads
// (static imports would run first, hence the dynamic ones below).
if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function () {
    let resolve, reject
    const promise = new this((res, rej) => { resolve = res; reject = rej })
    return { promise, resolve, reject }
  }
}

const fs = await import('node:fs')
const { setMaxListeners } = await import('node:events')
const path = await import('node:path')
const { createHeliaLight } = await import('helia')
const { withLibp2pLight } = await import('@helia/libp2p')
const { withBitswap } = await import('@helia/bitswap')
const { unixfs } = await import('@helia/unixfs')
const { tcp } = await import('@libp2p/tcp')
const { identify } = await import('@libp2p/identify')
const { ping } = await import('@libp2p/ping')
const { noise } = await import('@chainsafe/libp2p-noise')
const { yamux } = await import('@chainsafe/libp2p-yamux')
const { multiaddr } = await import('@multiformats/multiaddr')
const { CID } = await import('multiformats/cid')
const { exporter } = await import('ipfs-unixfs-exporter')

async function node (listen) {
  const helia = withBitswap(withLibp2pLight(createHeliaLight({}), {
    addresses: { listen },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    peerDiscovery: [],
    // Ping as Helia's defaults have it: a node without it gets its connections to
    // rust-libp2p nodes dropped (their ping stops answering once ours is refused).
    services: { identify: identify(), ping: ping() }
  }))
  await helia.start()
  return helia
}

async function writeTree (cid, blockstore, out, signal, summary) {
  const entry = await exporter(cid, blockstore, { signal })
  if (entry.type === 'directory') {
    summary.dirs++
    fs.mkdirSync(out, { recursive: true })
    // Children in parallel, as a real client's walk would: one at a time would make
    // each file wait a round trip of its own.
    await eachLimit(entry.entries({ signal }), 32, child =>
      writeTree(child.cid, blockstore, path.join(out, child.name), signal, summary))
  } else if (entry.type === 'file' && entry.unixfs.type === 'symlink') {
    summary.symlinks++
    fs.symlinkSync(Buffer.from(entry.unixfs.data).toString(), out)
  } else {
    summary.files++
    const fd = fs.openSync(out, 'w')
    for await (const chunk of entry.content({ signal })) {
      fs.writeSync(fd, chunk)
      summary.bytes += chunk.length
    }
    fs.closeSync(fd)
  }
}

// Calls `fn` on each item of `items`, `limit` at a time.
async function eachLimit (items, limit, fn) {
  const running = new Set()
  for await (const item of items) {
    const p = fn(item).finally(() => running.delete(p))
    running.add(p)
    if (running.size >= limit) await Promise.race(running)
  }
  await Promise.all(running)
}

// Sharded (HAMT) directories below `cid`, read from the local blockstore after the export.
async function countShards (cid, blockstore, signal) {
  const entry = await exporter(cid, blockstore, { signal })
  if (entry.type !== 'directory') return 0
  let n = entry.unixfs?.type === 'hamt-sharded-directory' ? 1 : 0
  for await (const child of entry.entries({ signal })) {
    n += await countShards(child.cid, blockstore, signal)
  }
  return n
}

const [cmd, ...args] = process.argv.slice(2)
if (cmd === 'fetch') {
  const [addr, cidText, out, timeoutMs] = args
  const helia = await node([])
  const signal = AbortSignal.timeout(Number(timeoutMs))
  // Every block read listens on it: not a leak.
  setMaxListeners(Infinity, signal)
  const summary = { files: 0, dirs: 0, hamtShards: 0, symlinks: 0, bytes: 0 }
  let code = 0
  try {
    await helia.libp2p.dial(multiaddr(addr), { signal })
    const cid = CID.parse(cidText)
    await writeTree(cid, helia.blockstore, out, signal, summary)
    summary.hamtShards = await countShards(cid, helia.blockstore, signal)
    console.log(JSON.stringify(summary))
  } catch (err) {
    console.error(`fetch failed: ${err.name}: ${err.message}`)
    code = signal.aborted ? 2 : 1
  }
  await helia.stop().catch(() => {})
  process.exit(code)
} else if (cmd === 'serve') {
  const [target] = args
  const helia = await node(['/ip4/127.0.0.1/tcp/0'])
  const ufs = unixfs(helia)
  const root = await ufs.addByteStream(fs.createReadStream(target))
  const addr = helia.libp2p.getMultiaddrs()[0]
  console.log(`${root} ${addr}`)
  process.on('SIGTERM', async () => { await helia.stop().catch(() => {}); process.exit(0) })
} else if (cmd === 'mirror') {
  const [addr, cidText, length] = args
  const helia = await node(['/ip4/127.0.0.1/tcp/0'])
  const cid = CID.parse(cidText)
  const signal = AbortSignal.timeout(600000)
  setMaxListeners(Infinity, signal)
  await helia.libp2p.dial(multiaddr(addr), { signal })
  const entry = await exporter(cid, helia.blockstore, { signal })
  const range = length === undefined ? {} : { offset: 0, length: Number(length) }
  for await (const chunk of entry.content({ signal, ...range })) { void chunk }
  // Only blocks it holds: the source it copied from is hung up on.
  await helia.libp2p.hangUp(multiaddr(addr)).catch(() => {})
  console.log(`${cid} ${helia.libp2p.getMultiaddrs()[0]}`)
  process.on('SIGTERM', async () => { await helia.stop().catch(() => {}); process.exit(0) })
} else {
  console.error('usage: node helia.mjs fetch MULTIADDR CID OUTDIR TIMEOUT_MS | serve FILE | mirror MULTIADDR CID [LENGTH]')
  process.exit(64)
}
