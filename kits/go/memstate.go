// Package memstate is the Go kit for memstate ports: it opens the job the harness hands a port and
// writes the port's records as memstate JSON lines (docs/protocol.md). It does no arithmetic: the
// port's math stays the port's. Standard library only; add it with a replace directive or copy it.
//
//	func main() {
//		memstate.Main("go-mlp", func(job *memstate.Job, rec *memstate.Recorder) error {
//			... rec.Record(s, "hidden/matmul", []int{m, h}, M) ...
//			return nil
//		})
//	}
package memstate

import (
	"bufio"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
)

// Config is job.json's "config": every field of docs/comparing.md's configuration.
type Config struct {
	Inputs         int       `json:"inputs"`
	Hidden         int       `json:"hidden"`
	Layers         []int     `json:"layers"`
	Dropout        []float64 `json:"dropout"`
	Activation     string    `json:"activation"`
	Loss           string    `json:"loss"`
	Optimizer      string    `json:"optimizer"`
	LR             float64   `json:"lr"`
	Momentum       float64   `json:"momentum"`
	WeightDecay    float64   `json:"weight_decay"`
	BatchSize      int       `json:"batch_size"`
	Steps          int       `json:"steps"`
	Dtype          string    `json:"dtype"`
	Seed           int       `json:"seed"`
	AdamBeta1      float64   `json:"adam_beta1"`
	AdamBeta2      float64   `json:"adam_beta2"`
	AdamEps        float64   `json:"adam_eps"`
	LRDecay        float64   `json:"lr_decay"`
	EpochSteps     int       `json:"epoch_steps"`
	InputMin       float64   `json:"input_min"`
	InputMax       float64   `json:"input_max"`
	TargetMin      float64   `json:"target_min"`
	TargetMax      float64   `json:"target_max"`
	LogEps         float64   `json:"log_eps"`
	SquaredError   string    `json:"squared_error"`
	BatchReduction string    `json:"batch_reduction"`
}

// Tensor is one parameter (or optimizer buffer) as the job holds it: row-major float64 values.
type Tensor struct {
	Shape []int     `json:"shape"`
	Data  []float64 `json:"data"`
}

// Dropout is one hidden layer's dropout: its p, and its keep masks (Job.Mask).
type Dropout struct {
	Layer int     // hidden layer, from 1 at the input side
	P     float64 // the drop probability
	bits  []byte
	width int
}

// Job is the job directory, checked: every file present and of the size job.json says.
type Job struct {
	Dir        string
	Config     Config
	FirstStep  int               // the first step to run (a replay's checkpoint + 1; 0 for a whole run)
	Steps      int               // how many steps to run: FirstStep .. FirstStep+Steps-1
	BatchSize  int               // m
	Pixels     int               // inputs per sample (784 for MNIST)
	Widths     []int             // hidden widths, input side first
	Names      []string          // layer record prefixes: "hidden" (or "hidden1".."hiddenL"), then "output"
	Params     map[string]Tensor // "W1", "b1", ..., "W(L+1)", "b(L+1)"
	Velocity   map[string]Tensor // a momentum replay's starting velocities, keyed as Params; nil otherwise
	AdamM      map[string]Tensor // an Adam replay's starting moments; nil otherwise
	AdamV      map[string]Tensor
	Dropout    map[int]*Dropout // by hidden layer (from 1); a layer not in it has no dropout
	Precision  string           // the matmul precision the harness asks for: "float32", "tf32", "bfloat16", "float16"
	Storage    string           // the format it asks every tensor to be kept in: "float32", "bfloat16", "float16"
	Accumulate string           // the format it asks sums' running totals to be kept in: "float32", "bfloat16", "float16"
	images     []byte
	labels     []byte
	batches    []uint32 // an indexed job: sample i of step s is pool image batches[s*m+i]
}

type jobFile struct {
	Format    string          `json:"format"`
	Config    json.RawMessage `json:"config"`
	Params    string          `json:"params"`
	Images    string          `json:"images"`
	Labels    string          `json:"labels"`
	PoolImg   string          `json:"pool_images"`
	PoolLab   string          `json:"pool_labels"`
	Batches   string          `json:"batches"`
	PoolSize  int             `json:"pool_size"`
	Steps     int             `json:"steps"`
	BatchSize int             `json:"batch_size"`
	Pixels    int             `json:"pixels"`
	Widths    []int           `json:"widths"`
	FirstStep int             `json:"first_step"`
	Velocity  string          `json:"velocity"`
	AdamM     string          `json:"adam_m"`
	AdamV     string          `json:"adam_v"`
	Precision struct {
		Matmul     string `json:"matmul"`
		Storage    string `json:"storage"`
		Accumulate string `json:"accumulate"`
	} `json:"precision"`
	Dropout []struct {
		Layer int     `json:"layer"`
		P     float64 `json:"p"`
		File  string  `json:"file"`
	} `json:"dropout"`
}

// Open reads and checks the job directory; an error names the file and what was expected.
func Open(dir string) (*Job, error) {
	path := filepath.Join(dir, "job.json")
	var f jobFile
	if err := readJSON(path, &f); err != nil {
		return nil, err
	}
	if f.Format != "memstate-job/1" {
		return nil, fmt.Errorf("%s: field 'format' must be \"memstate-job/1\", got %q", path, f.Format)
	}
	j := &Job{Dir: dir, FirstStep: f.FirstStep, Steps: f.Steps, BatchSize: f.BatchSize, Pixels: f.Pixels,
		Precision: f.Precision.Matmul, Storage: f.Precision.Storage, Accumulate: f.Precision.Accumulate}
	if j.Precision == "" {
		j.Precision = "float32"
	}
	if j.Storage == "" {
		j.Storage = "float32"
	}
	if j.Accumulate == "" {
		j.Accumulate = "float32"
	}
	j.Config = Config{SquaredError: "mean", BatchReduction: "mean", LRDecay: 1, InputMax: 1, TargetMax: 1}
	if err := json.Unmarshal(f.Config, &j.Config); err != nil || len(f.Config) == 0 {
		return nil, fmt.Errorf("%s: field 'config' must be an object of the config's fields (%v)", path, err)
	}
	if j.Pixels == 0 {
		j.Pixels = 784
	}
	if j.Steps < 1 || j.BatchSize < 1 || j.Pixels < 1 || j.FirstStep < 0 {
		return nil, fmt.Errorf("%s: fields 'steps', 'batch_size', 'pixels' must be positive and 'first_step' "+
			"not negative, got %d, %d, %d, %d", path, j.Steps, j.BatchSize, j.Pixels, j.FirstStep)
	}
	j.Widths = f.Widths
	if len(j.Widths) == 0 {
		j.Widths = j.Config.Layers
	}
	if len(j.Widths) == 0 {
		j.Widths = []int{j.Config.Hidden}
	}
	for k := range j.Widths {
		if len(j.Widths) == 1 {
			j.Names = append(j.Names, "hidden")
		} else {
			j.Names = append(j.Names, "hidden"+strconv.Itoa(k+1))
		}
	}
	j.Names = append(j.Names, "output")
	var err error
	if j.Params, err = j.readParams(f.Params, "params"); err != nil {
		return nil, err
	}
	for _, b := range []struct {
		file string
		into *map[string]Tensor
	}{{f.Velocity, &j.Velocity}, {f.AdamM, &j.AdamM}, {f.AdamV, &j.AdamV}} {
		if b.file != "" {
			if *b.into, err = j.readParams(b.file, "an optimizer buffer"); err != nil {
				return nil, err
			}
		}
	}
	n := j.Steps * j.BatchSize
	if f.Batches != "" {
		if err = j.readPool(f, n); err != nil {
			return nil, err
		}
	} else {
		if j.images, err = readBytes(dir, f.Images, "images", n*j.Pixels); err != nil {
			return nil, err
		}
		if j.labels, err = readBytes(dir, f.Labels, "labels", n); err != nil {
			return nil, err
		}
	}
	for i, l := range j.labels {
		if l > 9 && f.Batches == "" {
			return nil, fmt.Errorf("%s: byte %d is %d, expected a class 0-9", filepath.Join(dir, f.Labels), i, l)
		}
	}
	j.Dropout = map[int]*Dropout{}
	for _, e := range f.Dropout {
		if e.Layer < 1 || e.Layer > len(j.Widths) || e.P < 0 || e.P >= 1 {
			return nil, fmt.Errorf("%s: a 'dropout' entry has layer %d and p %g; expected a hidden layer 1..%d "+
				"and 0 <= p < 1", path, e.Layer, e.P, len(j.Widths))
		}
		w := j.Widths[e.Layer-1]
		bits, err := readBytes(dir, e.File, "a dropout mask", n*w)
		if err != nil {
			return nil, err
		}
		j.Dropout[e.Layer] = &Dropout{Layer: e.Layer, P: e.P, bits: bits, width: w}
	}
	return j, nil
}

// Sizes is every layer's width: [Pixels, H1, ..., HL, 10].
func (j *Job) Sizes() []int {
	return append(append([]int{j.Pixels}, j.Widths...), 10)
}

// Images is step s's pixel bytes, (m, Pixels) row-major; s counts from FirstStep.
func (j *Job) Images(s int) []byte {
	m, d, i := j.BatchSize, j.Pixels, j.index(s)
	if j.batches == nil {
		return j.images[i*m*d : (i+1)*m*d]
	}
	out := make([]byte, 0, m*d)
	for _, b := range j.batches[i*m : (i+1)*m] {
		out = append(out, j.images[int(b)*d:(int(b)+1)*d]...)
	}
	return out
}

// Labels is step s's classes, (m,).
func (j *Job) Labels(s int) []byte {
	m, i := j.BatchSize, j.index(s)
	if j.batches == nil {
		return j.labels[i*m : (i+1)*m]
	}
	out := make([]byte, m)
	for k, b := range j.batches[i*m : (i+1)*m] {
		out[k] = j.labels[b]
	}
	return out
}

// Mask is step s's keep mask of hidden layer k (from 1), (m, width) bytes, 1 for a kept unit; nil
// where the layer has no dropout.
func (j *Job) Mask(k, s int) []byte {
	d := j.Dropout[k]
	if d == nil {
		return nil
	}
	i, n := j.index(s), j.BatchSize*d.width
	return d.bits[i*n : (i+1)*n]
}

func (j *Job) index(s int) int {
	i := s - j.FirstStep
	if i < 0 || i >= j.Steps {
		panic(fmt.Sprintf("memstate: step %d is outside this job's steps %d..%d", s, j.FirstStep, j.FirstStep+j.Steps-1))
	}
	return i
}

func (j *Job) readParams(name, what string) (map[string]Tensor, error) {
	path := filepath.Join(j.Dir, name)
	var p struct {
		Format  string            `json:"format"`
		Tensors map[string]Tensor `json:"tensors"`
	}
	if name == "" {
		return nil, fmt.Errorf("%s: field 'params' is missing", filepath.Join(j.Dir, "job.json"))
	}
	if err := readJSON(path, &p); err != nil {
		return nil, err
	}
	if p.Format != "memstate-params/1" {
		return nil, fmt.Errorf("%s: field 'format' must be \"memstate-params/1\" (%s), got %q", path, what, p.Format)
	}
	sizes := j.Sizes()
	for k := 1; k < len(sizes); k++ {
		for _, t := range []struct {
			key   string
			shape []int
		}{{"W" + strconv.Itoa(k), []int{sizes[k], sizes[k-1]}}, {"b" + strconv.Itoa(k), []int{sizes[k]}}} {
			got, ok := p.Tensors[t.key]
			if !ok {
				return nil, fmt.Errorf("%s: tensor %q is missing", path, t.key)
			}
			if fmt.Sprint(got.Shape) != fmt.Sprint(t.shape) || len(got.Data) != product(t.shape) {
				return nil, fmt.Errorf("%s: tensor %q must have shape %v and %d values, got shape %v and %d values",
					path, t.key, t.shape, product(t.shape), got.Shape, len(got.Data))
			}
		}
	}
	return p.Tensors, nil
}

func (j *Job) readPool(f jobFile, n int) error {
	raw, err := readBytes(j.Dir, f.Batches, "batches", 4*n)
	if err != nil {
		return err
	}
	if f.PoolSize < 1 {
		return fmt.Errorf("%s: field 'pool_size' must be positive, got %d", filepath.Join(j.Dir, "job.json"), f.PoolSize)
	}
	j.batches = make([]uint32, n)
	for i := range j.batches {
		j.batches[i] = binary.LittleEndian.Uint32(raw[4*i:])
		if int(j.batches[i]) >= f.PoolSize {
			return fmt.Errorf("%s: index %d is %d, outside the pool of %d images", filepath.Join(j.Dir, f.Batches),
				i, j.batches[i], f.PoolSize)
		}
	}
	if j.images, err = readBytes(j.Dir, f.PoolImg, "pool_images", f.PoolSize*j.Pixels); err != nil {
		return err
	}
	if j.labels, err = readBytes(j.Dir, f.PoolLab, "pool_labels", f.PoolSize); err != nil {
		return err
	}
	for i, l := range j.labels {
		if l > 9 {
			return fmt.Errorf("%s: byte %d is %d, expected a class 0-9", filepath.Join(j.Dir, f.PoolLab), i, l)
		}
	}
	return nil
}

func readJSON(path string, into any) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("%s: cannot read: %v", path, err)
	}
	if err := json.Unmarshal(raw, into); err != nil {
		return fmt.Errorf("%s: not the JSON expected: %v", path, err)
	}
	return nil
}

func readBytes(dir, name, field string, want int) ([]byte, error) {
	if name == "" {
		return nil, fmt.Errorf("%s: field %q is missing", filepath.Join(dir, "job.json"), field)
	}
	path := filepath.Join(dir, name)
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: cannot read: %v", path, err)
	}
	if len(raw) != want {
		return nil, fmt.Errorf("%s: %d bytes, expected %d (job.json's steps, batch_size and pixels)", path, len(raw), want)
	}
	return raw, nil
}

func product(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}

// Recorder writes the JSON-lines memstate: a header, records, an end line; flushed at every new step.
type Recorder struct {
	f       *os.File
	w       *bufio.Writer
	header  map[string]any
	started bool
	step    string
	missing map[string]bool
	ended   bool
	err     error
}

// Create opens the memstate file; the header is written with the first record.
func Create(path, implementation string) (*Recorder, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("%s: cannot write: %v", path, err)
	}
	header := map[string]any{"memstate": "jsonl/1", "implementation": implementation, "device": "cpu",
		"versions": map[string]string{"go": runtime.Version()}}
	return &Recorder{f: f, w: bufio.NewWriterSize(f, 1<<20), header: header, missing: map[string]bool{}}, nil
}

// Describe sets the device and adds library versions (before the first record).
func (r *Recorder) Describe(device string, versions map[string]string) {
	r.header["device"] = device
	for k, v := range versions {
		r.header["versions"].(map[string]string)[k] = v
	}
}

// Missing declares records this port does not compute (a matmul fused with its bias add, no loss):
// the comparator judges what reads them from this port's own inputs (docs/protocol.md). Call it
// before the first record.
func (r *Recorder) Missing(names ...string) {
	for _, n := range names {
		r.missing[n] = true
	}
}

// Precision declares that this port's matmuls round their operands to "tf32", "bfloat16" or "float16"
// and accumulate in float32 (a GPU's tensor cores); before the first record. A port that cannot compute
// in the precision the job asks for (Job.Precision) refuses it: return Refuse(...).
func (r *Recorder) Precision(matmul string) {
	r.precision("matmul", matmul)
}

// Storage declares that this port keeps every tensor in "bfloat16" or "float16", computing each op in
// float32 from the stored values (record them as float32); before the first record.
func (r *Recorder) Storage(format string) {
	r.precision("storage", format)
}

// Accumulate declares that this port keeps its sums' running totals (matmuls, sums over the batch) in
// "bfloat16" or "float16" as well, rounding each addition; before the first record.
func (r *Recorder) Accumulate(format string) {
	r.precision("accumulate", format)
}

func (r *Recorder) precision(key, value string) {
	p, ok := r.header["precision"].(map[string]string)
	if !ok {
		p = map[string]string{}
		r.header["precision"] = p
	}
	p[key] = value
}

// Load records a parameter as loaded, under the pseudo-step "load".
func (r *Recorder) Load(name string, shape []int, data any) error {
	return r.write("\"load\"", name, shape, data)
}

// Record records one tensor of step s: data is []float32, []float64, []int, []int64 or []byte (uint8),
// row-major, with len(data) the product of shape (a scalar has shape []int{} and one value). Floats are
// written as "base64" (see numbers), integers as numbers.
func (r *Recorder) Record(s int, name string, shape []int, data any) error {
	return r.write(strconv.Itoa(s), name, shape, data)
}

func (r *Recorder) write(step, name string, shape []int, data any) error {
	if r.err != nil {
		return r.err
	}
	if r.missing[name] && step != "\"load\"" {
		return r.fail(fmt.Errorf("record %q was declared missing (not computed) but is recorded", name))
	}
	var b strings.Builder
	dtype, n, field := "", 0, "data"
	b.Grow(64 + 12*product(shape))
	switch v := data.(type) {
	case []float32:
		dtype, n = "float32", len(v)
		if !numbers {
			field = "base64"
			b.WriteString(packed(len(v), 4, func(i int) uint64 { return uint64(math.Float32bits(v[i])) }))
			break
		}
		for i, x := range v {
			sep(&b, i)
			b.WriteString(float(float64(x), 32))
		}
	case []float64:
		dtype, n = "float64", len(v)
		if !numbers {
			field = "base64"
			b.WriteString(packed(len(v), 8, func(i int) uint64 { return math.Float64bits(v[i]) }))
			break
		}
		for i, x := range v {
			sep(&b, i)
			b.WriteString(float(x, 64))
		}
	case []int:
		dtype, n = "int64", len(v)
		for i, x := range v {
			sep(&b, i)
			b.WriteString(strconv.Itoa(x))
		}
	case []int64:
		dtype, n = "int64", len(v)
		for i, x := range v {
			sep(&b, i)
			b.WriteString(strconv.FormatInt(x, 10))
		}
	case []byte:
		dtype, n = "uint8", len(v)
		for i, x := range v {
			sep(&b, i)
			b.WriteString(strconv.Itoa(int(x)))
		}
	default:
		return r.fail(fmt.Errorf("record %q: data is %T, expected []float32, []float64, []int, []int64 or []byte", name, data))
	}
	if n != product(shape) {
		return r.fail(fmt.Errorf("record %q: shape %v needs %d values, got %d", name, shape, product(shape), n))
	}
	if err := r.begin(step); err != nil {
		return err
	}
	dims, _ := json.Marshal(shape)
	if shape == nil {
		dims = []byte("[]")
	}
	quoted, _ := json.Marshal(name)
	if field == "base64" {
		fmt.Fprintf(r.w, "{\"step\": %s, \"name\": %s, \"dtype\": %q, \"shape\": %s, \"base64\": \"%s\"}\n",
			step, quoted, dtype, dims, b.String())
		return nil
	}
	fmt.Fprintf(r.w, "{\"step\": %s, \"name\": %s, \"dtype\": %q, \"shape\": %s, \"data\": [%s]}\n",
		step, quoted, dtype, dims, b.String())
	return nil
}

// packed is the base64 of n values of width bytes each, little-endian; bits(i) is the i-th value's bits.
func packed(n, width int, bits func(i int) uint64) string {
	raw := make([]byte, width*n)
	for i := 0; i < n; i++ {
		x := bits(i)
		for j := 0; j < width; j++ {
			raw[width*i+j] = byte(x >> (8 * j))
		}
	}
	return base64.StdEncoding.EncodeToString(raw)
}

// numbers: MEMSTATE_VALUES=numbers in the environment writes floats as lists of numbers (a person can read
// them) instead of "base64", their little-endian bytes (exact, and read many times faster).
var numbers = os.Getenv("MEMSTATE_VALUES") == "numbers"

func sep(b *strings.Builder, i int) {
	if i > 0 {
		b.WriteString(", ")
	}
}

// float prints the shortest text that reads back to the same float32 or float64; NaN and the
// infinities as the strings JSON needs.
func float(x float64, bits int) string {
	switch {
	case x != x:
		return "\"NaN\""
	case math.IsInf(x, 1):
		return "\"Infinity\""
	case math.IsInf(x, -1):
		return "\"-Infinity\""
	}
	return strconv.FormatFloat(x, 'g', -1, bits)
}

func (r *Recorder) begin(step string) error {
	if !r.started {
		r.started = true
		if len(r.missing) > 0 {
			names := []string{}
			for n := range r.missing {
				names = append(names, n)
			}
			r.header["missing"] = names
		}
		line, _ := json.Marshal(r.header)
		r.w.Write(append(line, '\n'))
	}
	if step != r.step && r.step != "" {
		if err := r.w.Flush(); err != nil { // a step is written whole before the next begins
			return r.fail(err)
		}
	}
	r.step = step
	return nil
}

func (r *Recorder) fail(err error) error {
	if r.err == nil {
		r.err = err
	}
	return r.err
}

func (r *Recorder) end(obj map[string]string) error {
	if r.ended {
		return nil
	}
	r.ended = true
	r.begin(r.step)
	line, _ := json.Marshal(obj)
	r.w.Write(append(line, '\n'))
	if err := r.w.Flush(); err != nil {
		return err
	}
	return r.f.Close()
}

// Complete ends the memstate as complete, or as an error if a record could not be written.
func (r *Recorder) Complete() error {
	if r.err != nil {
		r.end(map[string]string{"end": "error", "error": r.err.Error()})
		return r.err
	}
	return r.end(map[string]string{"end": "complete"})
}

// Fail ends the memstate with the port's error.
func (r *Recorder) Fail(err error) error {
	return r.end(map[string]string{"end": "error", "error": err.Error()})
}

// Unsupported ends the memstate refusing the job's config: reported as unsupported, not as a crash.
func (r *Recorder) Unsupported(reason string) error {
	return r.end(map[string]string{"end": "unsupported", "reason": reason})
}

// Refusal is an error a port returns from Main's function to refuse a config (see Refuse).
type Refusal struct{ Reason string }

func (e Refusal) Error() string { return "unsupported: " + e.Reason }

// Refuse returns a Refusal: `return memstate.Refuse("batch_size 1 only")` ends the run as unsupported.
func Refuse(format string, args ...any) error { return Refusal{fmt.Sprintf(format, args...)} }

// Main runs a port: `mlp JOB_DIR OUT` opens the job, calls train, and ends the memstate as complete,
// unsupported (train returned a Refusal), or error (train returned one or panicked); exits 1 on an error.
func Main(implementation string, train func(job *Job, rec *Recorder) error) {
	if len(os.Args) != 3 {
		fmt.Fprintf(os.Stderr, "usage: %s JOB_DIR OUT.jsonl\n", os.Args[0])
		os.Exit(2)
	}
	rec, err := Create(os.Args[2], implementation)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	err = func() (err error) {
		defer func() {
			if p := recover(); p != nil {
				err = fmt.Errorf("panic: %v", p)
			}
		}()
		job, err := Open(os.Args[1])
		if err != nil {
			return err
		}
		return train(job, rec)
	}()
	var refusal Refusal
	switch {
	case errors.As(err, &refusal):
		rec.Unsupported(refusal.Reason)
	case err != nil:
		rec.Fail(err)
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	default:
		if err := rec.Complete(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
}
