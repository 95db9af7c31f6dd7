// One-shot CPU timer for sharp (libvips): the peer side of benches/peers/compare.sh.
// Single thread (sharp.concurrency(1), VIPS_CONCURRENCY=1; pin the process with taskset),
// no operation cache, bytes in memory to bytes out, the same work sharp-server.mjs does
// per request: rotate() (EXIF), resize(w, null, {fit: inside, withoutEnlargement}), encode.
//
// usage: node sharp-cpu.mjs [--reps N=7] [--out DIR] [--images DIR] JOB...
//   JOB = name:file:width:format:quality[:effort]   (format jpeg|webp|avif|png)
// prints per job:  RESULT peer=sharp job=.. cpu_ms=<median> cpu_min_ms=.. wall_ms=<median> bytes=.. w=.. h=..
// CPU time is process.cpuUsage() (all threads of the process), wall time for reference.
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";

const prefix = process.env.IMGBENCH_PREFIX || `${process.env.HOME}/.imgbench`;
const require = createRequire(`${prefix}/node/`);
const sharp = require("sharp");

const args = process.argv.slice(2);
let reps = 7;
let out = "";
let images = path.resolve(path.dirname(new URL(import.meta.url).pathname), "../../../shared/bench/images");
const jobs = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === "--reps") reps = +args[++i];
  else if (args[i] === "--out") out = args[++i];
  else if (args[i] === "--images") images = args[++i];
  else jobs.push(args[i]);
}
if (!jobs.length) {
  console.error("usage: sharp-cpu.mjs [--reps N] [--out DIR] [--images DIR] name:file:width:format:quality[:effort]...");
  process.exit(2);
}

sharp.concurrency(1);
sharp.cache(false);

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

async function once(input, width, format, quality, effort) {
  let img = sharp(input, { failOn: "error", animated: false, limitInputPixels: 50e6 }).rotate();
  img = img.resize(width, null, { fit: "inside", withoutEnlargement: true });
  const o = { quality };
  if (effort !== undefined) o.effort = effort;
  if (format === "jpeg") img = img.jpeg(o);
  else if (format === "webp") img = img.webp(o);
  else if (format === "avif") img = img.avif(o);
  else img = img.png();
  return img.toBuffer({ resolveWithObject: true });
}

for (const spec of jobs) {
  const [name, file, w, format, q, effort] = spec.split(":");
  const input = fs.readFileSync(path.join(images, file));
  const e = effort === undefined || effort === "" ? undefined : +effort;
  let last = await once(input, +w, format, +q, e); // warm-up
  const cpu = [];
  const wall = [];
  for (let r = 0; r < reps; r++) {
    const c0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    last = await once(input, +w, format, +q, e);
    const t1 = process.hrtime.bigint();
    const c = process.cpuUsage(c0);
    cpu.push((c.user + c.system) / 1000);
    wall.push(Number(t1 - t0) / 1e6);
  }
  if (out) fs.writeFileSync(path.join(out, `${name}.sharp.${format}`), last.data);
  console.log(
    `RESULT peer=sharp job=${name} cpu_ms=${median(cpu).toFixed(2)} cpu_min_ms=${Math.min(...cpu).toFixed(2)} ` +
      `wall_ms=${median(wall).toFixed(2)} bytes=${last.data.length} w=${last.info.width} h=${last.info.height}`,
  );
}
