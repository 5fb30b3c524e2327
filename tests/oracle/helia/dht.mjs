// A js-libp2p node with @libp2p/kad-dht (Helia's DHT, a dependency of @helia/libp2p)
// on the LAN DHT protocol, for the IPFS DHT test: loopback only, no bootstrap list.
// Not part of peerfs.
//
//   node dht.mjs findprovs MULTIADDR CID TIMEOUT_MS
//       dials MULTIADDR (a DHT server), asks the DHT for CID's providers; prints each
//       provider's peer ID and addresses as a JSON line; exit 2 if none within the time

// Node 20 lacks Promise.withResolvers, which libp2p uses (see helia.mjs).
if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function () {
    let resolve, reject
    const promise = new this((res, rej) => { resolve = res; reject = rej })
    return { promise, resolve, reject }
  }
}

const { createLibp2p } = await import('libp2p')
const { kadDHT, passthroughMapper } = await import('@libp2p/kad-dht')
const { tcp } = await import('@libp2p/tcp')
const { identify } = await import('@libp2p/identify')
const { ping } = await import('@libp2p/ping')
const { noise } = await import('@chainsafe/libp2p-noise')
const { yamux } = await import('@chainsafe/libp2p-yamux')
const { multiaddr } = await import('@multiformats/multiaddr')
const { CID } = await import('multiformats/cid')

const [cmd, addr, cid, timeoutMs] = process.argv.slice(2)
if (cmd !== 'findprovs') {
  console.error('usage: node dht.mjs findprovs MULTIADDR CID TIMEOUT_MS')
  process.exit(1)
}
const node = await createLibp2p({
  addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
  transports: [tcp()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  peerDiscovery: [],
  services: {
    identify: identify(),
    ping: ping(),
    // The LAN DHT, as Kubo and Helia run it between private addresses; a client that
    // keeps loopback addresses (the default mapper would drop them).
    dht: kadDHT({
      protocol: '/ipfs/lan/kad/1.0.0',
      clientMode: true,
      peerInfoMapper: passthroughMapper,
      allowQueryWithZeroPeers: false
    })
  }
})
const signal = AbortSignal.timeout(Number(timeoutMs))
let found = 0
try {
  await node.dial(multiaddr(addr), { signal })
  // The server enters the routing table once identify says it speaks the protocol.
  while (node.services.dht.routingTable.size === 0) {
    signal.throwIfAborted()
    await new Promise(resolve => setTimeout(resolve, 50))
  }
  for await (const p of node.contentRouting.findProviders(CID.parse(cid), { signal })) {
    console.log(JSON.stringify({ id: p.id.toString(), addrs: p.multiaddrs.map(a => a.toString()) }))
    found++
    break
  }
} catch (e) {
  console.error(`findprovs: ${e.message}`)
}
await node.stop()
process.exit(found > 0 ? 0 : 2)
