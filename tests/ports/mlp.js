// The 784-H-10 MLP in plain JavaScript (Node.js, no packages), written from docs/porting.md.
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
  const m = job.batch_size, D = 784, C = 10;
  const t = JSON.parse(fs.readFileSync(path.join(jobDir, job.params), "utf8")).tensors;
  const H = t.W1.shape[0];
  // JSON.stringify writes the shortest text that reads back to the same double (and so float32) value;
  // it would write NaN and Infinity as null, so those become strings.
  const num = (x) => (Number.isNaN(x) ? "NaN" : x === Infinity ? "Infinity" : x === -Infinity ? "-Infinity" : x);
  const rec = (step, name, data, shape) =>
    write({ step, name, dtype: cfg.dtype, shape, data: Array.from(data, num) });

  const p = { "hidden/weight": t.W1.data.map(r), "hidden/bias": t.b1.data.map(r),
              "output/weight": t.W2.data.map(r), "output/bias": t.b2.data.map(r) };
  const shapes = { "hidden/weight": [H, D], "hidden/bias": [H], "output/weight": [C, H], "output/bias": [C] };
  const names = Object.keys(p);
  write({ memstate: "jsonl/1", implementation: "javascript", device: "cpu", versions: { node: process.version } });
  for (const n of names) rec("load", n, p[n], shapes[n]);
  const vel = Object.fromEntries(names.map((n) => [n, new Array(p[n].length).fill(0)]));
  const images = fs.readFileSync(path.join(jobDir, job.images));
  const labels = fs.readFileSync(path.join(jobDir, job.labels));
  const act = { relu: (z) => (z > 0 ? z : 0), sigmoid: (z) => 1 / (1 + Math.exp(-z)), tanh: Math.tanh }[cfg.activation];
  const slope = { relu: (z, a) => (z > 0 ? 1 : 0), sigmoid: (z, a) => a * (1 - a), tanh: (z, a) => 1 - a * a }[cfg.activation];

  for (let s = 0; s < job.steps; s++) {
    const [W1, b1, W2, b2] = names.map((n) => p[n]);
    const X = new Array(m * D), y = new Array(m);
    for (let k = 0; k < m * D; k++) X[k] = r(images[s * m * D + k] / 255);
    for (let i = 0; i < m; i++) y[i] = labels[s * m + i];
    rec(s, "input/x", X, [m, D]);
    write({ step: s, name: "input/y", dtype: "int64", shape: [m], data: y });

    const M1 = new Array(m * H), Z1 = new Array(m * H), A1 = new Array(m * H);
    for (let i = 0; i < m; i++)
      for (let j = 0; j < H; j++) {
        let acc = 0;
        for (let k = 0; k < D; k++) acc = r(acc + r(X[i * D + k] * W1[j * D + k]));
        M1[i * H + j] = acc;
        Z1[i * H + j] = r(acc + b1[j]);
        A1[i * H + j] = r(act(Z1[i * H + j]));
      }
    const M2 = new Array(m * C), Z2 = new Array(m * C), P = new Array(m * C), dZ2 = new Array(m * C);
    for (let i = 0; i < m; i++)
      for (let c = 0; c < C; c++) {
        let acc = 0;
        for (let j = 0; j < H; j++) acc = r(acc + r(A1[i * H + j] * W2[c * H + j]));
        M2[i * C + c] = acc;
        Z2[i * C + c] = r(acc + b2[c]);
      }
    for (const [n, v, sh] of [["hidden/matmul", M1, [m, H]], ["hidden/bias_add", Z1, [m, H]],
      ["hidden/activation", A1, [m, H]], ["output/matmul", M2, [m, C]], ["output/bias_add", Z2, [m, C]]]) rec(s, n, v, sh);

    let loss = 0;
    const ce = cfg.loss === "cross_entropy";
    for (let i = 0; i < m; i++) {
      const row = Z2.slice(i * C, i * C + C);
      const top = Math.max(...row);
      let sum = 0;
      for (let c = 0; c < C; c++) {
        P[i * C + c] = ce ? r(Math.exp(row[c] - top)) : r(1 / (1 + Math.exp(-row[c])));
        sum = r(sum + P[i * C + c]);
      }
      for (let c = 0; c < C; c++) {
        if (ce) P[i * C + c] = r(P[i * C + c] / sum);
        const d = r(P[i * C + c] - (c === y[i] ? 1 : 0));
        if (ce) dZ2[i * C + c] = r(d / m);
        else {
          loss = r(loss + r(d * d));
          dZ2[i * C + c] = r((2 * d * P[i * C + c] * (1 - P[i * C + c])) / (C * m));
        }
      }
      if (ce) loss = r(loss - Math.log(P[i * C + y[i]]));
    }
    loss = r(loss / (ce ? m : m * C));
    rec(s, ce ? "output/softmax" : "output/sigmoid", P, [m, C]);
    rec(s, "loss/value", [loss], []);

    const dW2 = new Array(C * H).fill(0), db2 = new Array(C).fill(0);
    const dA1 = new Array(m * H), dZ1 = new Array(m * H), dW1 = new Array(H * D).fill(0), db1 = new Array(H).fill(0);
    for (let c = 0; c < C; c++)
      for (let i = 0; i < m; i++) {
        db2[c] = r(db2[c] + dZ2[i * C + c]);
        for (let j = 0; j < H; j++) dW2[c * H + j] = r(dW2[c * H + j] + r(dZ2[i * C + c] * A1[i * H + j]));
      }
    for (let i = 0; i < m; i++)
      for (let j = 0; j < H; j++) {
        let acc = 0;
        for (let c = 0; c < C; c++) acc = r(acc + r(dZ2[i * C + c] * W2[c * H + j]));
        dA1[i * H + j] = acc;
        dZ1[i * H + j] = r(acc * slope(Z1[i * H + j], A1[i * H + j]));
      }
    for (let j = 0; j < H; j++)
      for (let i = 0; i < m; i++) {
        const g = dZ1[i * H + j];
        db1[j] = r(db1[j] + g);
        for (let k = 0; k < D; k++) dW1[j * D + k] = r(dW1[j * D + k] + r(g * X[i * D + k]));
      }
    for (const [n, v, sh] of [["output/grad_logits", dZ2, [m, C]], ["output/grad_weight", dW2, [C, H]],
      ["output/grad_bias", db2, [C]], ["hidden/grad_activation", dA1, [m, H]], ["hidden/grad_preactivation", dZ1, [m, H]],
      ["hidden/grad_weight", dW1, [H, D]], ["hidden/grad_bias", db1, [H]]]) rec(s, n, v, sh);

    const grads = { "hidden/weight": dW1, "hidden/bias": db1, "output/weight": dW2, "output/bias": db2 };
    for (const n of names) {
      for (let k = 0; k < p[n].length; k++) {
        let g = r(grads[n][k] + r(cfg.weight_decay * p[n][k]));
        if (cfg.optimizer === "momentum") g = vel[n][k] = r(r(cfg.momentum * vel[n][k]) + g);
        p[n][k] = r(p[n][k] - r(cfg.lr * g));
      }
      if (cfg.optimizer === "momentum") rec(s, n + "_velocity", vel[n], shapes[n]);
    }
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
