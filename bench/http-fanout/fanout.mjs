// Outbound fan-out, Node's side: N GET requests with the built-in fetch
// (undici), CONC at a time, each response read in full.
// Usage: node bench/http-fanout/fanout.mjs URL N CONC
// Prints "requests=N seconds=S rps=R failed=F".
const [url, nArg, concArg] = process.argv.slice(2);
const n = Number(nArg || 10000), conc = Number(concArg || 256);
let next = 0, failed = 0;
async function lane() {
  while (next < n) {
    next++;
    try {
      const r = await fetch(url);
      await r.text();
      if (r.status !== 200) failed++;
    } catch { failed++; }
  }
}
const t0 = process.hrtime.bigint();
await Promise.all(Array.from({ length: conc }, lane));
const s = Number(process.hrtime.bigint() - t0) / 1e9;
console.log(`requests=${n} seconds=${s.toFixed(3)} rps=${(n / s).toFixed(1)} failed=${failed}`);
process.exit(failed ? 1 : 0);
