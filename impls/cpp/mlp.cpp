// The MLP (784 -> hidden layers -> 10, inverted dropout optional) in C++17, standard library only:
// loops over row-major std::vector.
//
//   mlp JOB_DIR OUT.jsonl
//
// Reads job.json, params.json and the batches (images.u8 and labels.u8, or for an indexed job
// the image pool and batches.u32, and a keep mask per hidden layer with dropout) from JOB_DIR,
// trains for the job's steps in float or double (the config's dtype), and writes every record as
// JSON lines, a tensor's values as the base64 of their bytes (in the harness's "train" capture
// mode only the loss of each step and the state after the last). A job that asks for bfloat16 storage
// (--precision-b bfloat16-storage) gets every tensor rounded to bfloat16 as it is stored: each op still
// computes in float, from stored values.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

// ---------------------------------------------------------------- a small JSON reader
struct Json {
    enum Kind { Null, Bool, Number, String, Array, Object } kind = Null;
    double number = 0;
    std::string text;
    std::vector<Json> items;
    std::map<std::string, Json> fields;

    const Json& operator[](const std::string& key) const {
        auto it = fields.find(key);
        if (kind != Object || it == fields.end()) throw std::runtime_error("JSON: missing key '" + key + "'");
        return it->second;
    }
};

class JsonParser {
  public:
    explicit JsonParser(const std::string& s) : s_(s) {}
    Json parse() {
        Json v = value();
        skip();
        if (i_ != s_.size()) fail("trailing characters");
        return v;
    }

  private:
    const std::string& s_;
    size_t i_ = 0;
    [[noreturn]] void fail(const std::string& what) {
        throw std::runtime_error("JSON: " + what + " at offset " + std::to_string(i_));
    }
    void skip() {
        while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\n' || s_[i_] == '\t' || s_[i_] == '\r')) ++i_;
    }
    bool eat(char c) {
        skip();
        if (i_ < s_.size() && s_[i_] == c) { ++i_; return true; }
        return false;
    }
    Json value() {
        skip();
        if (i_ >= s_.size()) fail("unexpected end");
        Json v;
        char c = s_[i_];
        if (c == '{') {
            ++i_;
            v.kind = Json::Object;
            if (eat('}')) return v;
            do {
                skip();
                std::string key = string();
                if (!eat(':')) fail("expected ':'");
                v.fields[key] = value();
            } while (eat(','));
            if (!eat('}')) fail("expected '}'");
        } else if (c == '[') {
            ++i_;
            v.kind = Json::Array;
            if (eat(']')) return v;
            do v.items.push_back(value()); while (eat(','));
            if (!eat(']')) fail("expected ']'");
        } else if (c == '"') {
            v.kind = Json::String;
            v.text = string();
        } else if (s_.compare(i_, 4, "true") == 0 || s_.compare(i_, 5, "false") == 0) {
            v.kind = Json::Bool;
            v.number = s_[i_] == 't';
            i_ += s_[i_] == 't' ? 4 : 5;
        } else if (s_.compare(i_, 4, "null") == 0) {
            i_ += 4;
        } else {
            char* end = nullptr;
            v.kind = Json::Number;
            v.number = std::strtod(s_.c_str() + i_, &end);
            if (end == s_.c_str() + i_) fail("expected a value");
            i_ = end - s_.c_str();
        }
        return v;
    }
    std::string string() {
        if (i_ >= s_.size() || s_[i_] != '"') fail("expected a string");
        std::string out;
        for (++i_; i_ < s_.size() && s_[i_] != '"'; ++i_) {
            if (s_[i_] == '\\') ++i_;  // keys and values here need no escapes beyond \" and \\.
            out += s_[i_];
        }
        if (i_ >= s_.size()) fail("unterminated string");
        ++i_;
        return out;
    }
};

static std::string json_escape(const std::string& s) {
    std::string out;
    for (char c : s) {
        if (c == '"' || c == '\\') out += '\\';
        if (c == '\n') { out += "\\n"; continue; }
        out += c;
    }
    return out;
}

static std::string read_file(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw std::runtime_error("cannot open " + path);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

// ---------------------------------------------------------------- recording as JSON lines
class Recorder {
  public:
    explicit Recorder(const std::string& path) : f_(std::fopen(path.c_str(), "w")) {
        if (!f_) throw std::runtime_error("cannot write " + path);
    }
    ~Recorder() { if (f_) std::fclose(f_); }
    FILE* file() { return f_; }

    // A tensor's values as the base64 of their little-endian bytes ("base64" in place of "data", docs/memstate.md):
    // exact by construction, and read by the harness many times faster than printed numbers.
    template <typename T>
    void record(const std::string& step, const std::string& name, const std::vector<T>& v,
                const std::vector<size_t>& shape) {
        static_assert(sizeof(T) == 4 || sizeof(T) == 8, "float or double");
        std::fprintf(f_, "{\"step\": %s, \"name\": \"%s\", \"dtype\": \"%s\", \"shape\": [", step.c_str(),
                     name.c_str(), sizeof(T) == 4 ? "float32" : "float64");
        for (size_t k = 0; k < shape.size(); ++k) std::fprintf(f_, k ? ", %zu" : "%zu", shape[k]);
        std::fputs("], \"base64\": \"", f_);
        bytes_.resize(v.size() * sizeof(T));
        for (size_t k = 0; k < v.size(); ++k) {  // little-endian whatever the machine's order
            uint64_t bits = 0;
            if constexpr (sizeof(T) == 4) { uint32_t b; std::memcpy(&b, &v[k], 4); bits = b; }
            else std::memcpy(&bits, &v[k], 8);
            for (size_t j = 0; j < sizeof(T); ++j) bytes_[k * sizeof(T) + j] = static_cast<unsigned char>(bits >> (8 * j));
        }
        encode(bytes_);
        std::fputs("\"}\n", f_);
    }
    void mask(const std::string& step, const std::string& name, const unsigned char* bits, size_t m, size_t w) {
        std::fprintf(f_, "{\"step\": %s, \"name\": \"%s\", \"dtype\": \"uint8\", \"shape\": [%zu, %zu], \"data\": [",
                     step.c_str(), name.c_str(), m, w);
        for (size_t k = 0; k < m * w; ++k) std::fputs(k ? (bits[k] ? ",1" : ",0") : (bits[k] ? "1" : "0"), f_);
        std::fputs("]}\n", f_);
    }
    void labels(int step, const std::vector<int64_t>& y) {
        std::fprintf(f_, "{\"step\": %d, \"name\": \"input/y\", \"dtype\": \"int64\", \"shape\": [%zu], \"data\": [",
                     step, y.size());
        for (size_t k = 0; k < y.size(); ++k) std::fprintf(f_, k ? ",%lld" : "%lld", static_cast<long long>(y[k]));
        std::fputs("]}\n", f_);
    }

  private:
    // RFC 4648 base64 with padding, written straight to the file.
    void encode(const std::vector<unsigned char>& in) {
        static const char* abc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        text_.resize(4 * ((in.size() + 2) / 3));
        size_t o = 0, i = 0;
        for (; i + 3 <= in.size(); i += 3) {
            const uint32_t w = (uint32_t(in[i]) << 16) | (uint32_t(in[i + 1]) << 8) | in[i + 2];
            text_[o++] = abc[w >> 18]; text_[o++] = abc[(w >> 12) & 63];
            text_[o++] = abc[(w >> 6) & 63]; text_[o++] = abc[w & 63];
        }
        if (i < in.size()) {  // one or two bytes left: two or three characters, then padding
            const uint32_t w = (uint32_t(in[i]) << 16) | (i + 1 < in.size() ? uint32_t(in[i + 1]) << 8 : 0);
            text_[o++] = abc[w >> 18]; text_[o++] = abc[(w >> 12) & 63];
            text_[o++] = i + 1 < in.size() ? abc[(w >> 6) & 63] : '=';
            text_[o++] = '=';
        }
        std::fwrite(text_.data(), 1, text_.size(), f_);
    }
    FILE* f_;
    std::vector<unsigned char> bytes_;
    std::string text_;
};

// ---------------------------------------------------------------- the network
struct Config {
    std::string activation, loss, optimizer;
    double lr, momentum, weight_decay;
    size_t steps, m;
    double beta1, beta2, eps, lr_decay;
    size_t epoch_steps, first;
    double input_min, input_max, target_min, target_max, log_eps;
    bool train_mode;  // record only loss/value and the final state
    std::vector<size_t> widths;  // the hidden layers' widths, input side first
    double per_output;  // mse: a sample's squared error over the outputs times 0.1 (mean), 1 (sum) or 0.5 (half)
    bool batch_mean;  // the loss over the batch: its mean, else its sum
    size_t pixels;  // per image: 784 for MNIST
};

// A hidden layer's dropout: its keep masks for every step of the job and the scale of a kept unit.
struct Dropout {
    std::string bits;  // (steps, m, width) bytes, 1 keeps a unit
    double p = 0;
};

template <typename T>
static std::vector<T> load_tensor(const Json& tensors, const std::string& key) {
    std::vector<T> out;
    for (const Json& x : tensors[key]["data"].items) out.push_back(static_cast<T>(x.number));
    return out;
}

// ---------------------------------------------------------------- bfloat16 storage
static bool bfloat16_storage = false;  // set from the job's "precision"

// x as stored: rounded to bfloat16 (float's top 16 bits, to nearest, ties to even) when the job asks for it.
template <typename T>
static T st(T x) {
    if constexpr (sizeof(T) == sizeof(float)) {
        if (!bfloat16_storage || std::isnan(x)) return x;
        uint32_t bits;
        std::memcpy(&bits, &x, sizeof bits);
        bits = (bits + 0x7FFFu + ((bits >> 16) & 1u)) & 0xFFFF0000u;  // a carry into the exponent is right
        std::memcpy(&x, &bits, sizeof bits);
    }
    return x;
}

template <typename T>
static void st(std::vector<T>& v) {
    for (T& x : v) x = st(x);
}

template <typename T>
static T activate(const std::string& kind, T z) {
    if (kind == "relu") return z > T(0) ? z : T(0);
    if (kind == "sigmoid") return T(1) / (T(1) + std::exp(-z));
    return std::tanh(z);
}

template <typename T>
static T slope(const std::string& kind, T z, T a) {
    if (kind == "relu") return z > T(0) ? T(1) : T(0);
    if (kind == "sigmoid") return a * (T(1) - a);
    return T(1) - a * a;
}

template <typename T>
static void train(const Config& cfg, const std::string& job_dir, const Json& job, Recorder& rec) {
    const Json tensors = JsonParser(read_file(job_dir + "/" + job["params"].text)).parse()["tensors"];
    const size_t L = cfg.widths.size(), D = cfg.pixels, C = 10, m = cfg.m;  // D: 784 pixels for MNIST
    std::vector<size_t> size = {D};  // size[k]: the width of layer k's output, size[0] the pixels
    for (size_t w : cfg.widths) size.push_back(w);
    size.push_back(C);
    std::vector<std::string> layer;  // hidden (hidden1, hidden2, ...) and output
    for (size_t k = 1; k <= L; ++k) layer.push_back(L == 1 ? "hidden" : "hidden" + std::to_string(k));
    layer.push_back("output");
    // p[2k] is layer k+1's weight (size[k+1], size[k]), p[2k+1] its bias; names and shapes alike
    std::vector<std::vector<T>> p;
    std::vector<std::string> names, keys;
    std::vector<std::vector<size_t>> shapes;
    for (size_t k = 0; k <= L; ++k) {
        keys.push_back("W" + std::to_string(k + 1));
        keys.push_back("b" + std::to_string(k + 1));
        names.push_back(layer[k] + "/weight");
        names.push_back(layer[k] + "/bias");
        shapes.push_back({size[k + 1], size[k]});
        shapes.push_back({size[k + 1]});
    }
    for (const std::string& key : keys) p.push_back(load_tensor<T>(tensors, key));
    for (auto& t : p) st(t);
    const size_t n = p.size();
    for (size_t t = 0; t < n; ++t) rec.record("\"load\"", names[t], p[t], shapes[t]);
    // optimizer buffers: zeros, or for a replay (first_step > 0) those of its checkpoint
    std::map<std::string, std::vector<std::vector<T>>> state;
    for (const std::string kind : {"velocity", "adam_m", "adam_v"}) {
        for (auto& t : p) state[kind].emplace_back(t.size(), T(0));
        if (job.fields.count(kind)) {
            const Json saved = JsonParser(read_file(job_dir + "/" + job[kind].text)).parse()["tensors"];
            for (size_t t = 0; t < n; ++t) st(state[kind][t] = load_tensor<T>(saved, keys[t]));
        }
    }
    std::vector<std::vector<T>>&vel = state["velocity"], &mom1 = state["adam_m"], &mom2 = state["adam_v"];
    std::map<size_t, Dropout> dropout;  // by hidden layer, 1-based
    if (job.fields.count("dropout"))
        for (const Json& e : job["dropout"].items) {
            Dropout& d = dropout[static_cast<size_t>(e["layer"].number)];
            d.bits = read_file(job_dir + "/" + e["file"].text);
            d.p = e["p"].number;
            if (d.bits.size() != cfg.steps * m * size[static_cast<size_t>(e["layer"].number)])
                throw std::runtime_error(e["file"].text + " has the wrong size for the job");
        }

    // batches: step-major images and labels, or an indexed job's pool and per-sample indices
    const bool indexed = job.fields.count("batches") > 0;
    const std::string images = read_file(job_dir + "/" + job[indexed ? "pool_images" : "images"].text);
    const std::string labels = read_file(job_dir + "/" + job[indexed ? "pool_labels" : "labels"].text);
    const std::string order = indexed ? read_file(job_dir + "/" + job["batches"].text) : std::string();
    if (indexed ? (order.size() != cfg.steps * m * 4 || images.size() != labels.size() * D)
                : (images.size() != cfg.steps * m * D || labels.size() != cfg.steps * m))
        throw std::runtime_error("the batch files have the wrong size for the job");
    auto sample = [&](size_t s, size_t i) -> size_t {  // where sample i of step s sits in the files
        if (!indexed) return s * m + i;
        const unsigned char* b = reinterpret_cast<const unsigned char*>(order.data()) + 4 * (s * m + i);
        const size_t at = b[0] | (b[1] << 8) | (b[2] << 16) | (static_cast<size_t>(b[3]) << 24);  // little-endian
        if (at >= labels.size()) throw std::runtime_error("batches.u32: index out of the pool");
        return at;
    };
    const T scale = static_cast<T>(cfg.input_max - cfg.input_min), low = static_cast<T>(cfg.input_min);
    const bool scaled = cfg.input_min != 0.0 || cfg.input_max != 1.0;

    for (size_t s = 0; s < cfg.steps; ++s) {
        const size_t global = cfg.first + s;  // a replay numbers its steps from first_step
        const std::string step = std::to_string(global);
        const bool full = !cfg.train_mode;
        const bool last = s + 1 == cfg.steps;
        std::vector<T> X(m * D);                 // (m, D)
        std::vector<int64_t> y(m);               // (m,)
        for (size_t i = 0; i < m; ++i) {
            const size_t at = sample(s, i);
            for (size_t k = 0; k < D; ++k) {
                X[i * D + k] = static_cast<T>(static_cast<uint8_t>(images[at * D + k])) / T(255);
                if (scaled) X[i * D + k] = X[i * D + k] * scale + low;
                X[i * D + k] = st(X[i * D + k]);
            }
            y[i] = static_cast<uint8_t>(labels[at]);
        }
        if (full) rec.record(step, "input/x", X, {m, D});
        if (full) rec.labels(static_cast<int>(global), y);

        // forward: in[k] is what layer k+1 reads (m, size[k]); Z[k], A[k] its pre-activation and activation
        std::vector<std::vector<T>> in = {X}, Z(L + 1), A(L + 1), keep(L + 1);
        for (size_t k = 0; k <= L; ++k) {
            const size_t F = size[k], W = size[k + 1];
            const std::vector<T>&w = p[2 * k], &b = p[2 * k + 1], &x = in[k];
            std::vector<T> M(m * W);
            Z[k].resize(m * W);
            A[k].resize(m * W);
            for (size_t i = 0; i < m; ++i)
                for (size_t j = 0; j < W; ++j) {
                    T acc = 0;
                    for (size_t f = 0; f < F; ++f) acc += x[i * F + f] * w[j * F + f];
                    M[i * W + j] = st(acc);
                    Z[k][i * W + j] = st(acc + b[j]);
                    if (k < L) A[k][i * W + j] = st(activate(cfg.activation, Z[k][i * W + j]));
                }
            if (full) rec.record(step, layer[k] + "/matmul", M, {m, W});
            if (full) rec.record(step, layer[k] + "/bias_add", Z[k], {m, W});
            if (k == L) break;
            if (full) rec.record(step, layer[k] + "/activation", A[k], {m, W});
            std::vector<T> out = A[k];
            auto drop = dropout.find(k + 1);
            if (drop != dropout.end()) {  // inverted dropout: kept units times 1 / (1 - p), dropped ones 0
                const unsigned char* bits = reinterpret_cast<const unsigned char*>(drop->second.bits.data()) + s * m * W;
                const T factor = static_cast<T>(1.0 / (1.0 - drop->second.p));
                keep[k].resize(m * W);
                for (size_t e = 0; e < m * W; ++e) {
                    keep[k][e] = bits[e] ? factor : T(0);
                    out[e] = st(A[k][e] * keep[k][e]);
                }
                if (full) rec.mask(step, layer[k] + "/dropout_mask", bits, m, W);
                if (full) rec.record(step, layer[k] + "/dropout", out, {m, W});
            }
            in.push_back(out);
        }

        const std::vector<T>& Zo = Z[L];
        std::vector<T> P(m * C), dZ(m * C);      // (m, 10)
        T loss = 0;
        const bool ce = cfg.loss == "cross_entropy";
        // the loss is divided by this: m or 1 by the batch reduction, times 10, 1 or 2 by the squared error (mse)
        const T denom = static_cast<T>((ce ? 1.0 : 1.0 / cfg.per_output) * (cfg.batch_mean ? double(m) : 1.0));
        const T per_sample = static_cast<T>(cfg.batch_mean ? double(m) : 1.0);
        for (size_t i = 0; i < m; ++i) {
            T top = Zo[i * C];
            for (size_t c = 1; c < C; ++c) top = std::max(top, Zo[i * C + c]);
            T sum = 0;
            for (size_t c = 0; c < C; ++c) {
                P[i * C + c] = ce ? std::exp(Zo[i * C + c] - top) : T(1) / (T(1) + std::exp(-Zo[i * C + c]));
                sum += P[i * C + c];
            }
            for (size_t c = 0; c < C; ++c) {
                if (ce) P[i * C + c] /= sum;  // per sample
                P[i * C + c] = st(P[i * C + c]);
                const T hot = static_cast<T>(cfg.target_max), cold = static_cast<T>(cfg.target_min);
                const T target = static_cast<int64_t>(c) == y[i] ? hot : cold, d = P[i * C + c] - target;
                if (ce) {
                    dZ[i * C + c] = st(d / per_sample);
                } else {
                    loss += d * d;
                    dZ[i * C + c] = st(T(2) * d * P[i * C + c] * (T(1) - P[i * C + c]) / denom);
                }
            }
            if (ce) loss -= std::log(P[i * C + y[i]] + static_cast<T>(cfg.log_eps));
        }
        loss = st(loss / denom);
        if (full) rec.record(step, ce ? "output/softmax" : "output/sigmoid", P, {m, C});
        rec.record(step, "loss/value", std::vector<T>{loss}, {});
        if (full) rec.record(step, "output/grad_logits", dZ, {m, C});

        // backward, from the output layer down: dZ is the gradient at layer k+1's pre-activation
        std::vector<std::vector<T>> grads(n);
        for (size_t k = L + 1; k-- > 0;) {
            const size_t F = size[k], W = size[k + 1];
            if (k < L) {  // a hidden layer: dZ from the gradient at its output (dOut, still in dZ)
                std::vector<T> dA = dZ;
                if (!keep[k].empty()) {
                    if (full) rec.record(step, layer[k] + "/grad_dropout", dZ, {m, W});
                    for (size_t e = 0; e < m * W; ++e) dA[e] = st(dZ[e] * keep[k][e]);
                }
                if (full) rec.record(step, layer[k] + "/grad_activation", dA, {m, W});
                for (size_t e = 0; e < m * W; ++e) dZ[e] = st(dA[e] * slope(cfg.activation, Z[k][e], A[k][e]));
                if (full) rec.record(step, layer[k] + "/grad_preactivation", dZ, {m, W});
            }
            std::vector<T> dW(W * F, T(0)), db(W, T(0));
            const std::vector<T>& x = in[k];
            for (size_t j = 0; j < W; ++j)
                for (size_t i = 0; i < m; ++i) {
                    const T g = dZ[i * W + j];
                    db[j] += g;
                    for (size_t f = 0; f < F; ++f) dW[j * F + f] += g * x[i * F + f];
                }
            st(dW);  // the sums accumulate in float, stored once done
            st(db);
            if (full) rec.record(step, layer[k] + "/grad_weight", dW, {W, F});
            if (full) rec.record(step, layer[k] + "/grad_bias", db, {W});
            grads[2 * k] = std::move(dW);
            grads[2 * k + 1] = std::move(db);
            if (k > 0) {  // the gradient at the output of the layer below: dZ W, (m, F)
                std::vector<T> dOut(m * F);
                const std::vector<T>& w = p[2 * k];
                for (size_t i = 0; i < m; ++i)
                    for (size_t f = 0; f < F; ++f) {
                        T acc = 0;
                        for (size_t j = 0; j < W; ++j) acc += dZ[i * W + j] * w[j * F + f];
                        dOut[i * F + f] = st(acc);
                    }
                dZ = std::move(dOut);
            }
        }

        // the learning rate decays once per epoch; Adam's bias corrections count steps from 1 (in double)
        double rate = cfg.lr;
        if (cfg.lr_decay != 1.0 && cfg.epoch_steps) rate *= std::pow(cfg.lr_decay, double(global / cfg.epoch_steps));
        const T lr = static_cast<T>(rate), wd = static_cast<T>(cfg.weight_decay), mu = static_cast<T>(cfg.momentum);
        const T beta1 = static_cast<T>(cfg.beta1), beta2 = static_cast<T>(cfg.beta2), eps = static_cast<T>(cfg.eps);
        // 1 - beta in double: in float, 1 - 0.999f is 0.00099998713, 1.3e-5 off (the spec's pitfall)
        const T rest1 = static_cast<T>(1 - cfg.beta1), rest2 = static_cast<T>(1 - cfg.beta2);
        const T c1 = static_cast<T>(1 - std::pow(cfg.beta1, double(global + 1)));
        const T c2 = static_cast<T>(1 - std::pow(cfg.beta2, double(global + 1)));
        const bool momentum = cfg.optimizer == "momentum", adam = cfg.optimizer == "adam";
        for (size_t t = 0; t < n; ++t) {
            for (size_t k = 0; k < p[t].size(); ++k) {
                T g = grads[t][k] + wd * p[t][k];
                if (momentum) g = vel[t][k] = st(mu * vel[t][k] + g);
                if (adam) {
                    mom1[t][k] = st(beta1 * mom1[t][k] + rest1 * g);
                    mom2[t][k] = st(beta2 * mom2[t][k] + rest2 * g * g);
                    g = (mom1[t][k] / c1) / (std::sqrt(mom2[t][k] / c2) + eps);
                }
                p[t][k] = st(p[t][k] - lr * g);
            }
        }
        if (full || last) {
            for (size_t t = 0; t < n && momentum; ++t) rec.record(step, names[t] + "_velocity", vel[t], shapes[t]);
            for (size_t t = 0; t < n && adam; ++t) rec.record(step, names[t] + "_adam_m", mom1[t], shapes[t]);
            for (size_t t = 0; t < n && adam; ++t) rec.record(step, names[t] + "_adam_v", mom2[t], shapes[t]);
            for (size_t t = 0; t < n; ++t) rec.record(step, names[t], p[t], shapes[t]);
        }
        std::fflush(rec.file());  // a crash later keeps this step
    }
}

// The hidden widths: the config's "layers", or one layer of "hidden" where that list is empty or absent.
static std::vector<size_t> widths(const Json& c) {
    std::vector<size_t> out;
    if (c.fields.count("layers"))
        for (const Json& w : c["layers"].items) out.push_back(static_cast<size_t>(w.number));
    if (out.empty()) out.push_back(static_cast<size_t>(c["hidden"].number));
    return out;
}

static double per_output(const Json& c) {
    const std::string kind = c.fields.count("squared_error") ? c["squared_error"].text : "mean";
    return kind == "sum" ? 1.0 : kind == "half_sum" ? 0.5 : 0.1;
}

int main(int argc, char** argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: %s JOB_DIR OUT.jsonl\n", argv[0]);
        return 2;
    }
    const std::string job_dir = argv[1];
    try {
        Recorder rec(argv[2]);
        try {
            const Json job = JsonParser(read_file(job_dir + "/job.json")).parse();
            const Json& c = job["config"];
            const bool train_mode = job.fields.count("capture") && job["capture"]["mode"].text == "train";
            const Config cfg{c["activation"].text, c["loss"].text, c["optimizer"].text, c["lr"].number,
                             c["momentum"].number, c["weight_decay"].number,
                             static_cast<size_t>(job["steps"].number), static_cast<size_t>(job["batch_size"].number),
                             c["adam_beta1"].number, c["adam_beta2"].number, c["adam_eps"].number,
                             c["lr_decay"].number, static_cast<size_t>(c["epoch_steps"].number),
                             job.fields.count("first_step") ? static_cast<size_t>(job["first_step"].number) : 0,
                             c["input_min"].number, c["input_max"].number, c["target_min"].number,
                             c["target_max"].number, c["log_eps"].number, train_mode, widths(c),
                             per_output(c), !c.fields.count("batch_reduction") || c["batch_reduction"].text == "mean",
                             job.fields.count("pixels") ? static_cast<size_t>(job["pixels"].number) : 784};
            // the precision the harness asks for: float32 throughout, or every tensor stored in bfloat16
            const Json none;
            const Json& asked = job.fields.count("precision") ? job["precision"] : none;
            auto field = [&](const char* key) {
                return asked.fields.count(key) ? asked[key].text : std::string("float32");
            };
            const std::string matmul = field("matmul"), storage = field("storage");
            const bool supported = matmul == "float32" && (storage == "float32" ||
                                                           (storage == "bfloat16" && c["dtype"].text == "float32"));
            bfloat16_storage = supported && storage == "bfloat16";
            std::fprintf(rec.file(), "{\"memstate\": \"jsonl/1\", \"implementation\": \"cpp\", \"device\": \"cpu\", "
                         "\"versions\": {\"compiler\": \"%s\"}%s}\n", __VERSION__,
                         bfloat16_storage ? ", \"precision\": {\"storage\": \"bfloat16\"}" : "");
            if (!supported) {
                const std::string why = "full float32 matmuls, and float32 or (for float32) bfloat16 storage only; the "
                                        "job asks for " + matmul + " matmuls, " + storage + " storage, " +
                                        c["dtype"].text;
                std::fprintf(rec.file(), "{\"end\": \"unsupported\", \"reason\": \"%s\"}\n",
                             json_escape(why).c_str());
                return 0;
            }
            if (c["dtype"].text == "float64") train<double>(cfg, job_dir, job, rec);
            else train<float>(cfg, job_dir, job, rec);
            std::fputs("{\"end\": \"complete\"}\n", rec.file());
        } catch (const std::exception& e) {
            std::fprintf(rec.file(), "{\"end\": \"error\", \"error\": \"%s\"}\n", json_escape(e.what()).c_str());
            std::fprintf(stderr, "error: %s\n", e.what());
            return 1;
        }
    } catch (const std::exception& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
    return 0;
}
