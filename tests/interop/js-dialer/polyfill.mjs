// Node 20 lacks Promise.withResolvers, which js-libp2p 3 uses (it wants Node 22).
if (!Promise.withResolvers) {
  Promise.withResolvers = function () {
    let resolve, reject
    const promise = new Promise((a, b) => { resolve = a; reject = b })
    return { promise, resolve, reject }
  }
}
