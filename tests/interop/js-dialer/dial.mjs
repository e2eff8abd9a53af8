// A js-libp2p peer with no ward membership dials a wardswarm node, tries every ward protocol, and
// prints as JSON what it got: identify, ping, the bytes each protocol answered, and whether and when
// the node disconnected it. Usage: node --import ./polyfill.mjs dial.mjs <multiaddr with /p2p/>
import { createLibp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import { multiaddr } from '@multiformats/multiaddr'

const PROTOCOLS = ['/wardswarm/have/1', '/wardswarm/announce/1', '/wardswarm/peers/1',
  '/wardswarm/revocations/1', '/wardswarm/report/1', '/wardswarm/transfer/1', '/wardswarm/transfer/2',
  '/wardswarm/have/2', '/wardswarm/report/2', '/wardswarm/peers/2', '/wardswarm/admission/1',
  '/wardswarm/directive/1']
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

const target = multiaddr(process.argv[2])
const node = await createLibp2p({
  transports: [tcp()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  services: { identify: identify(), ping: ping() },
})
const out = { protocols: {} }
let closed = null
node.addEventListener('peer:identify', (e) => { out.agent = e.detail.agentVersion })
node.addEventListener('peer:disconnect', () => { closed = Date.now() })
const t0 = Date.now()
const conn = await node.dial(target)
for (let i = 0; i < 20 && out.agent === undefined; i++) await sleep(50)
try { out.ping_ms = await node.services.ping.ping(target) } catch (e) { out.ping_error = String(e) }
for (const proto of PROTOCOLS) {
  try {
    const s = await conn.newStream(proto)
    // A 4-byte frame header announcing 4 bytes, and 4 bytes: any ward message would start so.
    s.send(new Uint8Array([0, 0, 0, 4, 1, 2, 3, 4]))
    let n = 0
    const read = (async () => { for await (const c of s) n += c.byteLength })().catch(() => {})
    await Promise.race([read, sleep(300)])
    out.protocols[proto] = { bytes: n }
    s.abort?.(new Error('done'))
  } catch (e) {
    out.protocols[proto] = { bytes: 0, refused: String(e.message || e).slice(0, 100) }
  }
}
for (let i = 0; i < 200 && closed === null; i++) await sleep(50)
out.disconnected_after_ms = closed === null ? null : closed - t0
console.log(JSON.stringify(out))
await node.stop()
process.exit(0)
