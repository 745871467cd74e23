// The MLP in plain JavaScript (Node.js, no packages), written from docs/porting.md and docs/protocol.md:
// any number of hidden layers (config.layers, or [config.hidden]), inverted dropout with the job's masks,
// the loss conventions, SGD and momentum.
//   node mlp.js JOB_DIR OUT.jsonl
// JavaScript numbers are doubles; for float32 every op's result goes through Math.fround.
"use strict";
const fs = require("fs");
const path = require("path");

const [jobDir, outPath] = process.argv.slice(2);
const out = fs.openSync(outPath, "w");
const write = (obj) => fs.writeSync(out, JSON.stringify(obj) + "\n");

function main() {
  const job = JSON.parse(fs.readFileSync(path.join(jobDir, "job.json"), "utf8"));
  const cfg = job.config;
  const f32 = cfg.dtype === "float32";
  const r = f32 ? Math.fround : (x) => x;
  const m = job.batch_size, D = job.pixels || 784, C = 10;
  const widths = cfg.layers && cfg.layers.length ? cfg.layers : [cfg.hidden];
  const L = widths.length;
  const size = [D, ...widths, C]; // size[k]: the width of layer k's output, size[0] the pixels
  const layer = widths.map((_, k) => (L === 1 ? "hidden" : "hidden" + (k + 1))).concat(["output"]);
  const t = JSON.parse(fs.readFileSync(path.join(jobDir, job.params), "utf8")).tensors;
  // JSON.stringify writes the shortest text that reads back to the same double (and so float32) value;
  // it would write NaN and Infinity as null, so those become strings.
  const num = (x) => (Number.isNaN(x) ? "NaN" : x === Infinity ? "Infinity" : x === -Infinity ? "-Infinity" : x);
  const rec = (step, name, data, shape, dtype) =>
    write({ step, name, dtype: dtype || cfg.dtype, shape, data: Array.from(data, num) });

  const p = {}, shapes = {};
  for (let k = 0; k <= L; k++) {
    p[layer[k] + "/weight"] = t["W" + (k + 1)].data.map(r);
    p[layer[k] + "/bias"] = t["b" + (k + 1)].data.map(r);
    shapes[layer[k] + "/weight"] = [size[k + 1], size[k]];
    shapes[layer[k] + "/bias"] = [size[k + 1]];
  }
  const names = Object.keys(p);
  write({ memstate: "jsonl/1", implementation: "javascript", device: "cpu", versions: { node: process.version } });
  for (const n of names) rec("load", n, p[n], shapes[n]);
  const vel = Object.fromEntries(names.map((n) => [n, new Array(p[n].length).fill(0)]));
  const images = fs.readFileSync(path.join(jobDir, job.images));
  const labels = fs.readFileSync(path.join(jobDir, job.labels));
  const masks = {}; // hidden layer (from 1) -> [bytes of (S, m, H), 1 / (1 - p) rounded once]
  for (const e of job.dropout || []) masks[e.layer] = [fs.readFileSync(path.join(jobDir, e.file)), r(1 / (1 - e.p))];
  const d = cfg.batch_reduction === "sum" ? 1 : m; // the loss over the batch: its mean or its sum
  const perOutput = { mean: 0.1, sum: 1, half_sum: 0.5 }[cfg.squared_error || "mean"]; // mse: the factor on a sample's sum
  const act = { relu: (z) => (z > 0 ? z : 0), sigmoid: (z) => 1 / (1 + Math.exp(-z)), tanh: Math.tanh }[cfg.activation];
  const slope = { relu: (z, a) => (z > 0 ? 1 : 0), sigmoid: (z, a) => a * (1 - a), tanh: (z, a) => 1 - a * a }[cfg.activation];

  for (let s = 0; s < job.steps; s++) {
    const X = new Array(m * D), y = new Array(m);
    for (let k = 0; k < m * D; k++) X[k] = r(images[s * m * D + k] / 255);
    for (let i = 0; i < m; i++) y[i] = labels[s * m + i];
    rec(s, "input/x", X, [m, D]);
    write({ step: s, name: "input/y", dtype: "int64", shape: [m], data: y });

    // forward: O[k] is what layer k + 1 reads, (m, size[k]); Z[k], A[k] its pre-activation and activation
    const O = [X], Z = [], A = [], keep = [];
    for (let k = 0; k <= L; k++) {
      const F = size[k], W = size[k + 1], w = p[layer[k] + "/weight"], b = p[layer[k] + "/bias"], x = O[k];
      const M = new Array(m * W);
      Z[k] = new Array(m * W);
      A[k] = new Array(m * W);
      for (let i = 0; i < m; i++)
        for (let j = 0; j < W; j++) {
          let acc = 0;
          for (let f = 0; f < F; f++) acc = r(acc + r(x[i * F + f] * w[j * F + f]));
          M[i * W + j] = acc;
          Z[k][i * W + j] = r(acc + b[j]);
          if (k < L) A[k][i * W + j] = r(act(Z[k][i * W + j]));
        }
      rec(s, layer[k] + "/matmul", M, [m, W]);
      rec(s, layer[k] + "/bias_add", Z[k], [m, W]);
      if (k === L) break;
      rec(s, layer[k] + "/activation", A[k], [m, W]);
      let o = A[k];
      if (masks[k + 1]) { // inverted dropout: Dk = Ak * mask / (1 - p)
        const [bytes, scale] = masks[k + 1];
        const bits = Array.from(bytes.subarray(s * m * W, (s + 1) * m * W));
        keep[k] = bits.map((bit) => (bit ? scale : 0));
        o = A[k].map((a, e) => r(a * keep[k][e]));
        rec(s, layer[k] + "/dropout_mask", bits, [m, W], "uint8");
        rec(s, layer[k] + "/dropout", o, [m, W]);
      }
      O.push(o);
    }

    const Zo = Z[L], P = new Array(m * C);
    let dZ = new Array(m * C);
    let loss = 0;
    const ce = cfg.loss === "cross_entropy";
    for (let i = 0; i < m; i++) {
      const row = Zo.slice(i * C, i * C + C);
      const top = Math.max(...row);
      let sum = 0;
      for (let c = 0; c < C; c++) {
        P[i * C + c] = ce ? r(Math.exp(row[c] - top)) : r(1 / (1 + Math.exp(-row[c])));
        sum = r(sum + P[i * C + c]);
      }
      for (let c = 0; c < C; c++) {
        if (ce) P[i * C + c] = r(P[i * C + c] / sum);
        const target = c === y[i] ? cfg.target_max : cfg.target_min;
        const e = r(P[i * C + c] - target);
        if (ce) dZ[i * C + c] = r(e / d);
        else {
          loss = r(loss + r(e * e));
          dZ[i * C + c] = r((2 * perOutput * e * P[i * C + c] * (1 - P[i * C + c])) / d);
        }
      }
      if (ce) loss = r(loss - Math.log(P[i * C + y[i]] + cfg.log_eps));
    }
    loss = r(ce ? loss / d : (perOutput * loss) / d);
    rec(s, ce ? "output/softmax" : "output/sigmoid", P, [m, C]);
    rec(s, "loss/value", [loss], []);
    rec(s, "output/grad_logits", dZ, [m, C]);

    // backward, from the output layer down: dZ is the gradient at layer k + 1's pre-activation
    const grads = {};
    for (let k = L; k >= 0; k--) {
      const F = size[k], W = size[k + 1], x = O[k];
      if (k < L) { // a hidden layer: dZ holds the gradient at its output
        let dA = dZ;
        if (keep[k]) {
          rec(s, layer[k] + "/grad_dropout", dZ, [m, W]);
          dA = dZ.map((g, e) => r(g * keep[k][e]));
        }
        rec(s, layer[k] + "/grad_activation", dA, [m, W]);
        dZ = dA.map((g, e) => r(g * slope(Z[k][e], A[k][e])));
        rec(s, layer[k] + "/grad_preactivation", dZ, [m, W]);
      }
      const dW = new Array(W * F).fill(0), db = new Array(W).fill(0);
      for (let j = 0; j < W; j++)
        for (let i = 0; i < m; i++) {
          const g = dZ[i * W + j];
          db[j] = r(db[j] + g);
          for (let f = 0; f < F; f++) dW[j * F + f] = r(dW[j * F + f] + r(g * x[i * F + f]));
        }
      rec(s, layer[k] + "/grad_weight", dW, [W, F]);
      rec(s, layer[k] + "/grad_bias", db, [W]);
      grads[layer[k] + "/weight"] = dW;
      grads[layer[k] + "/bias"] = db;
      if (k > 0) { // the gradient at the layer below's output: dZ W
        const w = p[layer[k] + "/weight"], below = new Array(m * F);
        for (let i = 0; i < m; i++)
          for (let f = 0; f < F; f++) {
            let acc = 0;
            for (let j = 0; j < W; j++) acc = r(acc + r(dZ[i * W + j] * w[j * F + f]));
            below[i * F + f] = acc;
          }
        dZ = below;
      }
    }

    for (const n of names) {
      for (let k = 0; k < p[n].length; k++) {
        let g = r(grads[n][k] + r(cfg.weight_decay * p[n][k]));
        if (cfg.optimizer === "momentum") g = vel[n][k] = r(r(cfg.momentum * vel[n][k]) + g);
        p[n][k] = r(p[n][k] - r(cfg.lr * g));
      }
    }
    if (cfg.optimizer === "momentum") for (const n of names) rec(s, n + "_velocity", vel[n], shapes[n]);
    for (const n of names) rec(s, n, p[n], shapes[n]);
  }
  write({ end: "complete" });
}

try {
  main();
} catch (e) {
  write({ end: "error", error: String(e) });
  console.error(e);
  process.exitCode = 1;
}
