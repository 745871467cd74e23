// An MLP on plain slices, the way goml writes one, instrumented with the memstate Go kit: the kit
// reads the job and writes the records; every number here is the port's own. Any depth, dropout,
// the loss conventions, SGD, momentum and Adam, float32 or float64, and replays from a checkpoint.
//
//	go build -o mlp . && ./mlp JOB_DIR OUT.jsonl
package main

import (
	"math"
	"strconv"

	memstate "memstate/kit"
)

type float interface{ float32 | float64 }

func main() {
	memstate.Main("go-kit", func(job *memstate.Job, rec *memstate.Recorder) error {
		if job.Precision != "float32" || job.Storage != "float32" { // plain Go: float32 or float64 throughout
			return memstate.Refuse("full precision only; the job asks for %s matmuls, %s storage", job.Precision, job.Storage)
		}
		if job.Config.Dtype == "float64" {
			return train[float64](job, rec)
		}
		return train[float32](job, rec)
	})
}

// param is one weight or bias with its optimizer buffers.
type param[T float] struct {
	name, key   string // "hidden/weight", "W1"
	shape       []int
	w, v, m, v2 []T // value; velocity; Adam's first and second moments
}

func convert[T float](xs []float64) []T {
	out := make([]T, len(xs))
	for i, x := range xs {
		out[i] = T(x)
	}
	return out
}

func train[T float](job *memstate.Job, rec *memstate.Recorder) error {
	c, m, sizes, L := job.Config, job.BatchSize, job.Sizes(), len(job.Widths)
	var params []*param[T]
	for k := 0; k <= L; k++ {
		for _, kind := range []string{"weight", "bias"} {
			key := map[string]string{"weight": "W", "bias": "b"}[kind] + strconv.Itoa(k+1)
			t := job.Params[key]
			p := &param[T]{name: job.Names[k] + "/" + kind, key: key, shape: t.Shape, w: convert[T](t.Data)}
			p.v, p.m, p.v2 = make([]T, len(p.w)), make([]T, len(p.w)), make([]T, len(p.w))
			if job.Velocity != nil {
				p.v = convert[T](job.Velocity[key].Data)
			}
			if job.AdamM != nil {
				p.m, p.v2 = convert[T](job.AdamM[key].Data), convert[T](job.AdamV[key].Data)
			}
			params = append(params, p)
			rec.Load(p.name, p.shape, p.w)
		}
	}
	act := func(z T) T {
		switch c.Activation {
		case "relu":
			if z > 0 {
				return z
			}
			return 0
		case "sigmoid":
			return T(1 / (1 + math.Exp(-float64(z))))
		}
		return T(math.Tanh(float64(z)))
	}
	slope := func(z, a T) T {
		switch c.Activation {
		case "relu":
			if z > 0 {
				return 1
			}
			return 0
		case "sigmoid":
			return a * (1 - a)
		}
		return 1 - a*a
	}
	d := T(m) // the batch's divisor: its mean or its sum
	if c.BatchReduction == "sum" {
		d = 1
	}
	per := T(map[string]float64{"mean": 0.1, "sum": 1, "half_sum": 0.5}[c.SquaredError])
	for s := job.FirstStep; s < job.FirstStep+job.Steps; s++ {
		pixels, labels := job.Images(s), job.Labels(s)
		X := make([]T, len(pixels)) // (m, D)
		for i, p := range pixels {
			X[i] = T(p) / 255
			if c.InputMin != 0 || c.InputMax != 1 {
				X[i] = X[i]*T(c.InputMax-c.InputMin) + T(c.InputMin)
			}
		}
		y := make([]int, m)
		for i, l := range labels {
			y[i] = int(l)
		}
		rec.Record(s, "input/x", []int{m, sizes[0]}, X)
		rec.Record(s, "input/y", []int{m}, y)

		// forward: out[k] is what layer k+1 reads, (m, sizes[k])
		out, Z, A, keep := [][]T{X}, make([][]T, L+1), make([][]T, L), make([][]T, L)
		for k := 0; k <= L; k++ {
			F, W, w, b := sizes[k], sizes[k+1], params[2*k].w, params[2*k+1].w
			M, z := make([]T, m*W), make([]T, m*W)
			for i := 0; i < m; i++ {
				for j := 0; j < W; j++ {
					var acc T
					for f := 0; f < F; f++ {
						acc += out[k][i*F+f] * w[j*F+f]
					}
					M[i*W+j], z[i*W+j] = acc, acc+b[j]
				}
			}
			Z[k] = z
			rec.Record(s, job.Names[k]+"/matmul", []int{m, W}, M)
			rec.Record(s, job.Names[k]+"/bias_add", []int{m, W}, z)
			if k == L {
				break
			}
			A[k] = make([]T, m*W)
			for e := range z {
				A[k][e] = act(z[e])
			}
			rec.Record(s, job.Names[k]+"/activation", []int{m, W}, A[k])
			o := A[k]
			if drop := job.Dropout[k+1]; drop != nil { // inverted dropout with the job's mask
				bits, scale := job.Mask(k+1, s), T(1/(1-drop.P))
				keep[k], o = make([]T, m*W), make([]T, m*W)
				for e, bit := range bits {
					if bit != 0 {
						keep[k][e] = scale
					}
					o[e] = A[k][e] * keep[k][e]
				}
				rec.Record(s, job.Names[k]+"/dropout_mask", []int{m, W}, bits)
				rec.Record(s, job.Names[k]+"/dropout", []int{m, W}, o)
			}
			out = append(out, o)
		}

		// the output: softmax and cross-entropy, or sigmoid and squared error
		P, sums, ce := make([]T, m*10), make([]T, m), c.Loss == "cross_entropy"
		for i := 0; i < m; i++ {
			row, top := Z[L][i*10:i*10+10], Z[L][i*10]
			for _, v := range row {
				top = T(math.Max(float64(top), float64(v)))
			}
			for j, v := range row {
				if ce {
					P[i*10+j] = T(math.Exp(float64(v - top)))
				} else {
					P[i*10+j] = T(1 / (1 + math.Exp(-float64(v))))
				}
			}
			sums[i] = sum(P[i*10 : i*10+10])
		}
		dZ, loss := make([]T, m*10), T(0)
		for i := 0; i < m; i++ {
			for j := 0; j < 10; j++ {
				if ce {
					P[i*10+j] /= sums[i]
				}
				target := T(c.TargetMin)
				if j == y[i] {
					target = T(c.TargetMax)
				}
				e := P[i*10+j] - target
				if ce {
					dZ[i*10+j] = e / d
				} else {
					loss += e * e
					dZ[i*10+j] = 2 * per * e * P[i*10+j] * (1 - P[i*10+j]) / d
				}
			}
			if ce {
				loss -= T(math.Log(float64(P[i*10+y[i]]) + c.LogEps))
			}
		}
		if ce {
			loss /= d
			rec.Record(s, "output/softmax", []int{m, 10}, P)
		} else {
			loss = per * loss / d
			rec.Record(s, "output/sigmoid", []int{m, 10}, P)
		}
		rec.Record(s, "loss/value", []int{}, []T{loss})
		rec.Record(s, "output/grad_logits", []int{m, 10}, dZ)

		// backward, from the output down: dZ is the gradient at layer k+1's pre-activation
		grads := make([][]T, 2*(L+1))
		for k := L; k >= 0; k-- {
			F, W, x := sizes[k], sizes[k+1], out[k]
			if k < L {
				dA := dZ
				if keep[k] != nil {
					rec.Record(s, job.Names[k]+"/grad_dropout", []int{m, W}, dZ)
					dA = make([]T, m*W)
					for e := range dZ {
						dA[e] = dZ[e] * keep[k][e]
					}
				}
				rec.Record(s, job.Names[k]+"/grad_activation", []int{m, W}, dA)
				dZ = make([]T, m*W)
				for e := range dA {
					dZ[e] = dA[e] * slope(Z[k][e], A[k][e])
				}
				rec.Record(s, job.Names[k]+"/grad_preactivation", []int{m, W}, dZ)
			}
			dW, db := make([]T, W*F), make([]T, W)
			for j := 0; j < W; j++ {
				for i := 0; i < m; i++ {
					g := dZ[i*W+j]
					db[j] += g
					for f := 0; f < F; f++ {
						dW[j*F+f] += g * x[i*F+f]
					}
				}
			}
			rec.Record(s, job.Names[k]+"/grad_weight", []int{W, F}, dW)
			rec.Record(s, job.Names[k]+"/grad_bias", []int{W}, db)
			grads[2*k], grads[2*k+1] = dW, db
			if k > 0 { // the gradient at the output of the layer below: dZ W
				w, below := params[2*k].w, make([]T, m*F)
				for i := 0; i < m; i++ {
					for f := 0; f < F; f++ {
						var acc T
						for j := 0; j < W; j++ {
							acc += dZ[i*W+j] * w[j*F+f]
						}
						below[i*F+f] = acc
					}
				}
				dZ = below
			}
		}
		update(c, s, params, grads)
		for _, p := range params {
			if c.Optimizer == "momentum" {
				rec.Record(s, p.name+"_velocity", p.shape, p.v)
			}
		}
		for _, suffix := range []string{"_adam_m", "_adam_v"} {
			for _, p := range params {
				if c.Optimizer == "adam" {
					rec.Record(s, p.name+suffix, p.shape, map[string][]T{"_adam_m": p.m, "_adam_v": p.v2}[suffix])
				}
			}
		}
		for _, p := range params {
			rec.Record(s, p.name, p.shape, p.w)
		}
	}
	return nil
}

// update applies the optimizer to every parameter; constants are taken in float64 and rounded once.
func update[T float](c memstate.Config, s int, params []*param[T], grads [][]T) {
	lr := c.LR
	if c.LRDecay != 1 && c.EpochSteps > 0 {
		lr *= math.Pow(c.LRDecay, float64(s/c.EpochSteps))
	}
	b1, b2 := T(c.AdamBeta1), T(c.AdamBeta2)
	ob1, ob2 := T(1-c.AdamBeta1), T(1-c.AdamBeta2)
	c1, c2 := T(1-math.Pow(c.AdamBeta1, float64(s+1))), T(1-math.Pow(c.AdamBeta2, float64(s+1)))
	for n, p := range params {
		for e, g := range grads[n] {
			g += T(c.WeightDecay) * p.w[e]
			switch c.Optimizer {
			case "momentum":
				p.v[e] = T(c.Momentum)*p.v[e] + g
				p.w[e] -= T(lr) * p.v[e]
			case "adam":
				p.m[e] = b1*p.m[e] + ob1*g
				p.v2[e] = b2*p.v2[e] + ob2*g*g
				p.w[e] -= T(lr) * (p.m[e] / c1) / (T(math.Sqrt(float64(p.v2[e]/c2))) + T(c.AdamEps))
			default:
				p.w[e] -= T(lr) * g
			}
		}
	}
}

// sum adds the values in order.
func sum[T float](xs []T) T {
	var total T
	for _, x := range xs {
		total += x
	}
	return total
}
