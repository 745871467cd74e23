// The memstate JavaScript kit (Node.js, no packages): open the job the harness hands a port, and write
// the port's records as memstate JSON lines (docs/protocol.md). It does no arithmetic: the port's math
// stays the port's.
//
//   import { main } from "./memstate.mjs";
//   main("js-mlp", (job, rec) => { ... rec.record(s, "hidden/matmul", [m, h], M); ... });
import fs from "node:fs";
import path from "node:path";

/** A config the port refuses: thrown from main's function, it ends the run as `unsupported`. */
export class Unsupported extends Error {}

function fail(file, what) {
  throw new Error(`${file}: ${what}`);
}

function readJson(file) {
  let text;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (e) {
    fail(file, `cannot read: ${e.code || e.message}`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    fail(file, `not valid JSON: ${e.message}`);
  }
}

function readBytes(dir, name, field, want) {
  if (typeof name !== "string" || !name) fail(path.join(dir, "job.json"), `field '${field}' is missing`);
  const file = path.join(dir, name);
  let bytes;
  try {
    bytes = fs.readFileSync(file);
  } catch (e) {
    fail(file, `cannot read: ${e.code || e.message}`);
  }
  if (bytes.length !== want) fail(file, `${bytes.length} bytes, expected ${want} (job.json's steps, batch_size and pixels)`);
  return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.length);
}

const positive = (x) => Number.isInteger(x) && x > 0;

/**
 * The job directory, checked: every file present and of the size job.json says. Steps count from
 * `firstStep` (a replay's checkpoint + 1, else 0): images(s), labels(s) and a dropout layer's mask(s)
 * take the step itself.
 */
export function openJob(dir) {
  const jobFile = path.join(dir, "job.json");
  const job = readJson(jobFile);
  if (job === null || typeof job !== "object" || job.format !== "memstate-job/1")
    fail(jobFile, `field 'format' must be "memstate-job/1", got ${JSON.stringify(job && job.format)}`);
  const config = job.config;
  if (config === null || typeof config !== "object") fail(jobFile, "field 'config' must be an object");
  const firstStep = job.first_step || 0, steps = job.steps, m = job.batch_size, pixels = job.pixels || 784;
  if (!positive(steps) || !positive(m) || !positive(pixels) || !(Number.isInteger(firstStep) && firstStep >= 0))
    fail(jobFile, `fields 'steps', 'batch_size', 'pixels' must be positive integers and 'first_step' not negative`);
  const widths = job.widths && job.widths.length ? job.widths : config.layers && config.layers.length ? config.layers : [config.hidden];
  const sizes = [pixels, ...widths, 10];
  const names = widths.map((_, k) => (widths.length === 1 ? "hidden" : `hidden${k + 1}`)).concat(["output"]);
  const tensors = (name, what) => {
    const file = path.join(dir, name);
    const p = readJson(file);
    if (!p || p.format !== "memstate-params/1" || typeof p.tensors !== "object")
      fail(file, `field 'format' must be "memstate-params/1" (${what})`);
    for (let k = 1; k < sizes.length; k++)
      for (const [key, shape] of [[`W${k}`, [sizes[k], sizes[k - 1]]], [`b${k}`, [sizes[k]]]]) {
        const t = p.tensors[key];
        const n = shape.reduce((a, b) => a * b, 1);
        if (!t) fail(file, `tensor "${key}" is missing`);
        if (JSON.stringify(t.shape) !== JSON.stringify(shape) || !Array.isArray(t.data) || t.data.length !== n)
          fail(file, `tensor "${key}" must have shape ${JSON.stringify(shape)} and ${n} values`);
      }
    return p.tensors;
  };
  const precision = (job.precision && job.precision.matmul) || "float32"; // the matmul precision asked for
  const storage = (job.precision && job.precision.storage) || "float32"; // the format asked for every tensor
  const accumulate = (job.precision && job.precision.accumulate) || "float32"; // ... for sums' running totals
  const out = { dir, config, firstStep, steps, batchSize: m, pixels, widths, sizes, names, precision, storage,
                accumulate };
  out.params = tensors(job.params, "params");
  for (const [key, field] of [["velocity", "velocity"], ["adamM", "adam_m"], ["adamV", "adam_v"]])
    out[key] = job[field] ? tensors(job[field], "an optimizer buffer") : null;
  const n = steps * m;
  const index = (s) => {
    const i = s - firstStep;
    if (!(i >= 0 && i < steps)) throw new Error(`step ${s} is outside this job's steps ${firstStep}..${firstStep + steps - 1}`);
    return i;
  };
  if (job.batches) { // an indexed job: sample i of step s is pool image batches[s*m + i]
    const raw = readBytes(dir, job.batches, "batches", 4 * n);
    const pool = job.pool_size;
    if (!positive(pool)) fail(jobFile, "field 'pool_size' must be a positive integer");
    const batches = new DataView(raw.buffer, raw.byteOffset, raw.length);
    for (let i = 0; i < n; i++)
      if (batches.getUint32(4 * i, true) >= pool) fail(path.join(dir, job.batches), `index ${i} is outside the pool of ${pool} images`);
    const images = readBytes(dir, job.pool_images, "pool_images", pool * pixels);
    const labels = readBytes(dir, job.pool_labels, "pool_labels", pool);
    labels.forEach((l, i) => l > 9 && fail(path.join(dir, job.pool_labels), `byte ${i} is ${l}, expected a class 0-9`));
    const pick = (s) => Array.from({ length: m }, (_, k) => batches.getUint32(4 * (index(s) * m + k), true));
    out.images = (s) => {
      const x = new Uint8Array(m * pixels);
      pick(s).forEach((b, k) => x.set(images.subarray(b * pixels, (b + 1) * pixels), k * pixels));
      return x;
    };
    out.labels = (s) => Uint8Array.from(pick(s), (b) => labels[b]);
  } else {
    const images = readBytes(dir, job.images, "images", n * pixels);
    const labels = readBytes(dir, job.labels, "labels", n);
    labels.forEach((l, i) => l > 9 && fail(path.join(dir, job.labels), `byte ${i} is ${l}, expected a class 0-9`));
    out.images = (s) => images.subarray(index(s) * m * pixels, (index(s) + 1) * m * pixels);
    out.labels = (s) => labels.subarray(index(s) * m, (index(s) + 1) * m);
  }
  out.dropout = {}; // hidden layer (from 1) -> {p, mask(s)}: (m, width) bytes, 1 for a kept unit
  for (const e of job.dropout || []) {
    if (!(Number.isInteger(e.layer) && e.layer >= 1 && e.layer <= widths.length && e.p >= 0 && e.p < 1))
      fail(jobFile, `a 'dropout' entry has layer ${e.layer} and p ${e.p}; expected a hidden layer 1..${widths.length} and 0 <= p < 1`);
    const w = widths[e.layer - 1], bits = readBytes(dir, e.file, "dropout", n * w);
    out.dropout[e.layer] = { p: e.p, mask: (s) => bits.subarray(index(s) * m * w, (index(s) + 1) * m * w) };
  }
  return out;
}

const DTYPE_OF = [[Float32Array, "float32"], [Float64Array, "float64"], [Uint8Array, "uint8"], [Int32Array, "int64"]];

// Floats are written as "base64", their little-endian bytes (exact, and read many times faster than
// numbers), unless MEMSTATE_VALUES=numbers is in the environment: then as numbers a person can read.
const NUMBERS = process.env.MEMSTATE_VALUES === "numbers";

function bytes(data, dtype) {
  const width = dtype === "float32" ? 4 : 8;
  const view = new DataView(new ArrayBuffer(width * data.length));
  for (let i = 0; i < data.length; i++) {
    if (width === 4) view.setFloat32(4 * i, data[i], true);  // rounded to float32 as Math.fround does
    else view.setFloat64(8 * i, data[i], true);
  }
  return Buffer.from(view.buffer).toString("base64");
}

// The shortest text that reads back to the same value (for float32, Math.fround's exact double);
// NaN and the infinities as the strings JSON needs (JSON.stringify would write null).
function text(x, dtype) {
  if (dtype === "float32") x = Math.fround(x);
  if (Number.isNaN(x)) return '"NaN"';
  if (x === Infinity) return '"Infinity"';
  if (x === -Infinity) return '"-Infinity"';
  return String(x);
}

/** Writes the JSON-lines memstate: a header, records, an end line; each line goes straight to the file. */
export class Recorder {
  constructor(file, implementation) {
    this.file = file;
    this.fd = fs.openSync(file, "w");
    this.header = { memstate: "jsonl/1", implementation, device: "cpu", versions: { node: process.version } };
    this.declared = new Set();
    this.started = false;
    this.ended = false;
    this.dtype = "float32"; // the float dtype of plain arrays; main() sets the job's
  }

  describe(device, versions = {}) {
    this.header.device = device;
    Object.assign(this.header.versions, versions);
  }

  /** Records this port does not compute (a matmul fused with its bias add, no loss); before the first record. */
  missing(...names) {
    for (const n of names) this.declared.add(n);
  }

  /** This port's matmuls round their operands to "tf32", "bfloat16" or "float16" (before the first record). */
  precision(matmul) {
    this.header.precision = { ...this.header.precision, matmul };
  }

  /** This port keeps every tensor in "bfloat16" or "float16" (recorded as float32); before the first record. */
  storage(format) {
    this.header.precision = { ...this.header.precision, storage: format };
  }

  /** This port keeps its sums' running totals in "bfloat16" or "float16" too; before the first record. */
  accumulate(format) {
    this.header.precision = { ...this.header.precision, accumulate: format };
  }

  load(name, shape, data, dtype) {
    this.#write('"load"', name, shape, data, dtype);
  }

  /** One tensor of step `step`, row-major; dtype from a typed array, else `dtype`, else the job's. */
  record(step, name, shape, data, dtype) {
    if (this.declared.has(name)) throw new Error(`record "${name}" was declared missing (not computed) but is recorded`);
    this.#write(String(step), name, shape, data, dtype);
  }

  #write(step, name, shape, data, dtype) {
    dtype = dtype || (DTYPE_OF.find(([T]) => data instanceof T) || [])[1] || this.dtype;
    const n = shape.reduce((a, b) => a * b, 1);
    if (data.length !== n) throw new Error(`record "${name}": shape ${JSON.stringify(shape)} needs ${n} values, got ${data.length}`);
    const head = `{"step": ${step}, "name": ${JSON.stringify(name)}, "dtype": "${dtype}", "shape": ${JSON.stringify(shape)}`;
    if ((dtype === "float32" || dtype === "float64") && !NUMBERS) return this.#line(`${head}, "base64": "${bytes(data, dtype)}"}`);
    const values = dtype.startsWith("float") ? Array.from(data, (x) => text(x, dtype)) : Array.from(data, (x) => String(x));
    this.#line(`${head}, "data": [${values.join(", ")}]}`);
  }

  #line(line) {
    if (!this.started) {
      this.started = true;
      if (this.declared.size) this.header.missing = [...this.declared];
      fs.writeSync(this.fd, JSON.stringify(this.header) + "\n");
    }
    fs.writeSync(this.fd, line + "\n");
  }

  #end(obj) {
    if (this.ended) return;
    this.ended = true;
    this.#line(JSON.stringify(obj));
    fs.closeSync(this.fd);
  }

  complete() { this.#end({ end: "complete" }); }
  fail(error) { this.#end({ end: "error", error: String(error && error.message || error) }); }
  /** Refuse the job's config: reported as unsupported, not as a crash. */
  unsupported(reason) { this.#end({ end: "unsupported", reason }); }
}

/**
 * Run a port: `node port.mjs JOB_DIR OUT` opens the job, calls train(job, rec), and ends the memstate
 * as complete, unsupported (train threw Unsupported) or error (anything else thrown; exit code 1).
 */
export function main(implementation, train) {
  const [jobDir, out] = process.argv.slice(2);
  if (!jobDir || !out) {
    console.error("usage: node PORT JOB_DIR OUT.jsonl");
    process.exit(2);
  }
  const rec = new Recorder(out, implementation);
  try {
    const job = openJob(jobDir);
    rec.dtype = job.config.dtype;
    train(job, rec);
    rec.complete();
  } catch (e) {
    if (e instanceof Unsupported) return rec.unsupported(e.message);
    rec.fail(e);
    console.error(e);
    process.exitCode = 1;
  }
}
