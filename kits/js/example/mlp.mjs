// The MLP in plain JavaScript (Node.js, no packages), instrumented with the memstate kit: the kit
// reads the job and writes the records; every number here is the port's own. Any number of hidden
// layers, inverted dropout with the job's masks, the loss conventions, SGD, momentum and Adam, and
// replays from a checkpoint.   node mlp.mjs JOB_DIR OUT.jsonl
// JavaScript numbers are doubles; for float32 every op's result goes through Math.fround.
import { main, Unsupported } from "../memstate.mjs";

main("js-kit", (job, rec) => {
  if (job.precision !== "float32" || job.storage !== "float32")
    throw new Unsupported(`full precision only; the job asks for ${job.precision} matmuls, ${job.storage} storage`);
  const cfg = job.config, m = job.batchSize, C = 10, L = job.widths.length;
  const r = cfg.dtype === "float32" ? Math.fround : (x) => x;
  const { sizes, names: layer } = job;
  const p = {}, shapes = {}, key = {};
  for (let k = 0; k <= L; k++) {
    for (const [kind, t] of [["weight", "W"], ["bias", "b"]]) {
      const n = `${layer[k]}/${kind}`;
      key[n] = `${t}${k + 1}`;
      p[n] = job.params[key[n]].data.map(r);
      shapes[n] = job.params[key[n]].shape;
    }
  }
  const names = Object.keys(p);
  for (const n of names) rec.load(n, shapes[n], p[n]);
  const start = (buffers, n) => (buffers ? buffers[key[n]].data.map(r) : new Array(p[n].length).fill(0));
  const vel = Object.fromEntries(names.map((n) => [n, start(job.velocity, n)]));
  const mom1 = Object.fromEntries(names.map((n) => [n, start(job.adamM, n)]));
  const mom2 = Object.fromEntries(names.map((n) => [n, start(job.adamV, n)]));
  const d = cfg.batch_reduction === "sum" ? 1 : m; // the loss over the batch: its mean or its sum
  const perOutput = { mean: 0.1, sum: 1, half_sum: 0.5 }[cfg.squared_error || "mean"]; // mse: the factor on a sample's sum
  const act = { relu: (z) => (z > 0 ? z : 0), sigmoid: (z) => 1 / (1 + Math.exp(-z)), tanh: Math.tanh }[cfg.activation];
  const slope = { relu: (z, a) => (z > 0 ? 1 : 0), sigmoid: (z, a) => a * (1 - a), tanh: (z, a) => 1 - a * a }[cfg.activation];

  for (let s = job.firstStep; s < job.firstStep + job.steps; s++) {
    const D = sizes[0], X = Array.from(job.images(s), (byte) => r(byte / 255)), y = job.labels(s);
    if (cfg.input_min !== 0 || cfg.input_max !== 1)
      for (let k = 0; k < X.length; k++) X[k] = r(r(X[k] * r(cfg.input_max - cfg.input_min)) + r(cfg.input_min));
    rec.record(s, "input/x", [m, D], X);
    rec.record(s, "input/y", [m], y);

    // forward: O[k] is what layer k + 1 reads, (m, sizes[k]); Z[k], A[k] its pre-activation and activation
    const O = [X], Z = [], A = [], keep = [];
    for (let k = 0; k <= L; k++) {
      const F = sizes[k], W = sizes[k + 1], w = p[layer[k] + "/weight"], b = p[layer[k] + "/bias"], x = O[k];
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
      rec.record(s, layer[k] + "/matmul", [m, W], M);
      rec.record(s, layer[k] + "/bias_add", [m, W], Z[k]);
      if (k === L) break;
      rec.record(s, layer[k] + "/activation", [m, W], A[k]);
      let o = A[k];
      const drop = job.dropout[k + 1];
      if (drop) { // inverted dropout: Dk = Ak * mask / (1 - p)
        const bits = drop.mask(s), scale = r(1 / (1 - drop.p));
        keep[k] = Array.from(bits, (bit) => (bit ? scale : 0));
        o = A[k].map((a, e) => r(a * keep[k][e]));
        rec.record(s, layer[k] + "/dropout_mask", [m, W], bits);
        rec.record(s, layer[k] + "/dropout", [m, W], o);
      }
      O.push(o);
    }

    const Zo = Z[L], P = new Array(m * C), sums = new Array(m).fill(0), ce = cfg.loss === "cross_entropy";
    for (let i = 0; i < m; i++) { // each row's exponentials (shifted by its max) and their sum
      const row = Zo.slice(i * C, i * C + C), top = Math.max(...row);
      for (let c = 0; c < C; c++) {
        P[i * C + c] = ce ? r(Math.exp(row[c] - top)) : r(1 / (1 + Math.exp(-row[c])));
        sums[i] = r(sums[i] + P[i * C + c]);
      }
    }
    let dZ = new Array(m * C), loss = 0;
    for (let i = 0; i < m; i++) {
      const total = sums[i];
      for (let c = 0; c < C; c++) {
        if (ce) P[i * C + c] = r(P[i * C + c] / total);
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
    rec.record(s, ce ? "output/softmax" : "output/sigmoid", [m, C], P);
    rec.record(s, "loss/value", [], [loss]);
    rec.record(s, "output/grad_logits", [m, C], dZ);

    // backward, from the output layer down: dZ is the gradient at layer k + 1's pre-activation
    const grads = {};
    for (let k = L; k >= 0; k--) {
      const F = sizes[k], W = sizes[k + 1], x = O[k];
      if (k < L) { // a hidden layer: dZ holds the gradient at its output
        let dA = dZ;
        if (keep[k]) {
          rec.record(s, layer[k] + "/grad_dropout", [m, W], dZ);
          dA = dZ.map((g, e) => r(g * keep[k][e]));
        }
        rec.record(s, layer[k] + "/grad_activation", [m, W], dA);
        dZ = dA.map((g, e) => r(g * slope(Z[k][e], A[k][e])));
        rec.record(s, layer[k] + "/grad_preactivation", [m, W], dZ);
      }
      const dW = new Array(W * F).fill(0), db = new Array(W).fill(0);
      for (let j = 0; j < W; j++)
        for (let i = 0; i < m; i++) {
          const g = dZ[i * W + j];
          db[j] = r(db[j] + g);
          for (let f = 0; f < F; f++) dW[j * F + f] = r(dW[j * F + f] + r(g * x[i * F + f]));
        }
      rec.record(s, layer[k] + "/grad_weight", [W, F], dW);
      rec.record(s, layer[k] + "/grad_bias", [W], db);
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

    // the update; the learning rate's decay, 1 - beta and beta^t in float64, rounded once
    const lr = r(cfg.lr_decay !== 1 ? cfg.lr * cfg.lr_decay ** Math.floor(s / cfg.epoch_steps) : cfg.lr);
    const [b1, b2, ob1, ob2] = [cfg.adam_beta1, cfg.adam_beta2, 1 - cfg.adam_beta1, 1 - cfg.adam_beta2].map(r);
    const [c1, c2] = [1 - cfg.adam_beta1 ** (s + 1), 1 - cfg.adam_beta2 ** (s + 1)].map(r);
    for (const n of names) {
      for (let k = 0; k < p[n].length; k++) {
        let g = r(grads[n][k] + r(cfg.weight_decay * p[n][k]));
        if (cfg.optimizer === "adam") {
          mom1[n][k] = r(r(b1 * mom1[n][k]) + r(ob1 * g));
          mom2[n][k] = r(r(b2 * mom2[n][k]) + r(ob2 * r(g * g)));
          g = r(r(mom1[n][k] / c1) / r(r(Math.sqrt(r(mom2[n][k] / c2))) + r(cfg.adam_eps)));
        } else if (cfg.optimizer === "momentum") g = vel[n][k] = r(r(cfg.momentum * vel[n][k]) + g);
        p[n][k] = r(p[n][k] - r(lr * g));
      }
    }
    if (cfg.optimizer === "momentum") for (const n of names) rec.record(s, n + "_velocity", shapes[n], vel[n]);
    if (cfg.optimizer === "adam") {
      for (const n of names) rec.record(s, n + "_adam_m", shapes[n], mom1[n]);
      for (const n of names) rec.record(s, n + "_adam_v", shapes[n], mom2[n]);
    }
    for (const n of names) rec.record(s, n, shapes[n], p[n]);
  }
});
