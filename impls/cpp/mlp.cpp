// The 784-H-10 MLP in C++17, standard library only: loops over row-major std::vector.
//
//   mlp JOB_DIR OUT.jsonl
//
// Reads job.json, params.json and the batches (images.u8 and labels.u8, or for an indexed job
// the image pool and batches.u32) from JOB_DIR, trains for the job's steps in float or double
// (the config's dtype), and writes every record as JSON lines (in the harness's "train" capture
// mode only the loss of each step and the state after the last).
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
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

    template <typename T>
    void record(const std::string& step, const std::string& name, const std::vector<T>& v,
                const std::vector<size_t>& shape) {
        const bool single = sizeof(T) == sizeof(float);
        std::fprintf(f_, "{\"step\": %s, \"name\": \"%s\", \"dtype\": \"%s\", \"shape\": [", step.c_str(),
                     name.c_str(), single ? "float32" : "float64");
        for (size_t k = 0; k < shape.size(); ++k) std::fprintf(f_, k ? ", %zu" : "%zu", shape[k]);
        std::fputs("], \"data\": [", f_);
        char buf[40];
        for (size_t k = 0; k < v.size(); ++k) {
            double x = static_cast<double>(v[k]);
            if (std::isnan(x)) std::snprintf(buf, sizeof buf, "\"NaN\"");
            else if (std::isinf(x)) std::snprintf(buf, sizeof buf, x > 0 ? "\"Infinity\"" : "\"-Infinity\"");
            else std::snprintf(buf, sizeof buf, single ? "%.9g" : "%.17g", x);  // enough digits to round-trip
            if (k) std::fputc(',', f_);
            std::fputs(buf, f_);
        }
        std::fputs("]}\n", f_);
    }
    void labels(int step, const std::vector<int64_t>& y) {
        std::fprintf(f_, "{\"step\": %d, \"name\": \"input/y\", \"dtype\": \"int64\", \"shape\": [%zu], \"data\": [",
                     step, y.size());
        for (size_t k = 0; k < y.size(); ++k) std::fprintf(f_, k ? ",%lld" : "%lld", static_cast<long long>(y[k]));
        std::fputs("]}\n", f_);
    }

  private:
    FILE* f_;
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
};

template <typename T>
static std::vector<T> load_tensor(const Json& tensors, const std::string& key) {
    std::vector<T> out;
    for (const Json& x : tensors[key]["data"].items) out.push_back(static_cast<T>(x.number));
    return out;
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
    const size_t H = static_cast<size_t>(tensors["W1"]["shape"].items[0].number), D = 784, C = 10, m = cfg.m;
    std::vector<std::vector<T>> p = {load_tensor<T>(tensors, "W1"), load_tensor<T>(tensors, "b1"),
                                     load_tensor<T>(tensors, "W2"), load_tensor<T>(tensors, "b2")};
    const std::vector<std::string> names = {"hidden/weight", "hidden/bias", "output/weight", "output/bias"};
    const std::vector<std::vector<size_t>> shapes = {{H, D}, {H}, {C, H}, {C}};
    for (int k = 0; k < 4; ++k) rec.record("\"load\"", names[k], p[k], shapes[k]);
    // optimizer buffers: zeros, or for a replay (first_step > 0) those of its checkpoint
    std::map<std::string, std::vector<std::vector<T>>> state;
    for (const std::string kind : {"velocity", "adam_m", "adam_v"}) {
        for (auto& t : p) state[kind].emplace_back(t.size(), T(0));
        if (job.fields.count(kind)) {
            const Json saved = JsonParser(read_file(job_dir + "/" + job[kind].text)).parse()["tensors"];
            state[kind] = {load_tensor<T>(saved, "W1"), load_tensor<T>(saved, "b1"), load_tensor<T>(saved, "W2"),
                           load_tensor<T>(saved, "b2")};
        }
    }
    std::vector<std::vector<T>>&vel = state["velocity"], &mom1 = state["adam_m"], &mom2 = state["adam_v"];

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
        const std::vector<T>&W1 = p[0], &b1 = p[1], &W2 = p[2], &b2 = p[3];
        std::vector<T> X(m * D);                 // (m, 784)
        std::vector<int64_t> y(m);               // (m,)
        for (size_t i = 0; i < m; ++i) {
            const size_t at = sample(s, i);
            for (size_t k = 0; k < D; ++k) {
                X[i * D + k] = static_cast<T>(static_cast<uint8_t>(images[at * D + k])) / T(255);
                if (scaled) X[i * D + k] = X[i * D + k] * scale + low;
            }
            y[i] = static_cast<uint8_t>(labels[at]);
        }
        if (full) rec.record(step, "input/x", X, {m, D});
        if (full) rec.labels(static_cast<int>(global), y);

        std::vector<T> M1(m * H), Z1(m * H), A1(m * H), M2(m * C), Z2(m * C), P(m * C);
        for (size_t i = 0; i < m; ++i)
            for (size_t j = 0; j < H; ++j) {
                T acc = 0;
                for (size_t k = 0; k < D; ++k) acc += X[i * D + k] * W1[j * D + k];
                M1[i * H + j] = acc;
                Z1[i * H + j] = acc + b1[j];
                A1[i * H + j] = activate(cfg.activation, Z1[i * H + j]);
            }
        for (size_t i = 0; i < m; ++i)
            for (size_t c = 0; c < C; ++c) {
                T acc = 0;
                for (size_t j = 0; j < H; ++j) acc += A1[i * H + j] * W2[c * H + j];
                M2[i * C + c] = acc;
                Z2[i * C + c] = acc + b2[c];
            }
        if (full) {
            rec.record(step, "hidden/matmul", M1, {m, H});
            rec.record(step, "hidden/bias_add", Z1, {m, H});
            rec.record(step, "hidden/activation", A1, {m, H});
            rec.record(step, "output/matmul", M2, {m, C});
            rec.record(step, "output/bias_add", Z2, {m, C});
        }

        std::vector<T> dZ2(m * C);               // (m, 10)
        T loss = 0;
        const bool ce = cfg.loss == "cross_entropy";
        for (size_t i = 0; i < m; ++i) {
            T top = Z2[i * C];
            for (size_t c = 1; c < C; ++c) top = std::max(top, Z2[i * C + c]);
            T sum = 0;
            for (size_t c = 0; c < C; ++c) {
                P[i * C + c] = ce ? std::exp(Z2[i * C + c] - top) : T(1) / (T(1) + std::exp(-Z2[i * C + c]));
                sum += P[i * C + c];
            }
            for (size_t c = 0; c < C; ++c) {
                if (ce) P[i * C + c] /= sum;  // per sample
                const T hot = static_cast<T>(cfg.target_max), cold = static_cast<T>(cfg.target_min);
                const T target = static_cast<int64_t>(c) == y[i] ? hot : cold, d = P[i * C + c] - target;
                if (ce) {
                    dZ2[i * C + c] = d / static_cast<T>(m);
                } else {
                    loss += d * d;
                    dZ2[i * C + c] = T(2) * d * P[i * C + c] * (T(1) - P[i * C + c]) / static_cast<T>(C * m);
                }
            }
            if (ce) loss -= std::log(P[i * C + y[i]] + static_cast<T>(cfg.log_eps));
        }
        loss /= static_cast<T>(ce ? m : m * C);
        if (full) rec.record(step, ce ? "output/softmax" : "output/sigmoid", P, {m, C});
        rec.record(step, "loss/value", std::vector<T>{loss}, {});

        std::vector<T> dW2(C * H, T(0)), db2(C, T(0)), dA1(m * H), dZ1(m * H), dW1(H * D, T(0)), db1(H, T(0));
        for (size_t c = 0; c < C; ++c)
            for (size_t i = 0; i < m; ++i) {
                db2[c] += dZ2[i * C + c];
                for (size_t j = 0; j < H; ++j) dW2[c * H + j] += dZ2[i * C + c] * A1[i * H + j];
            }
        for (size_t i = 0; i < m; ++i)
            for (size_t j = 0; j < H; ++j) {
                T acc = 0;
                for (size_t c = 0; c < C; ++c) acc += dZ2[i * C + c] * W2[c * H + j];
                dA1[i * H + j] = acc;
                dZ1[i * H + j] = acc * slope(cfg.activation, Z1[i * H + j], A1[i * H + j]);
            }
        for (size_t j = 0; j < H; ++j)
            for (size_t i = 0; i < m; ++i) {
                const T g = dZ1[i * H + j];
                db1[j] += g;
                for (size_t k = 0; k < D; ++k) dW1[j * D + k] += g * X[i * D + k];
            }
        if (full) {
            rec.record(step, "output/grad_logits", dZ2, {m, C});
            rec.record(step, "output/grad_weight", dW2, {C, H});
            rec.record(step, "output/grad_bias", db2, {C});
            rec.record(step, "hidden/grad_activation", dA1, {m, H});
            rec.record(step, "hidden/grad_preactivation", dZ1, {m, H});
            rec.record(step, "hidden/grad_weight", dW1, {H, D});
            rec.record(step, "hidden/grad_bias", db1, {H});
        }

        const std::vector<const std::vector<T>*> grads = {&dW1, &db1, &dW2, &db2};
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
        for (int t = 0; t < 4; ++t) {
            for (size_t k = 0; k < p[t].size(); ++k) {
                T g = (*grads[t])[k] + wd * p[t][k];
                if (momentum) g = vel[t][k] = mu * vel[t][k] + g;
                if (adam) {
                    mom1[t][k] = beta1 * mom1[t][k] + rest1 * g;
                    mom2[t][k] = beta2 * mom2[t][k] + rest2 * g * g;
                    g = (mom1[t][k] / c1) / (std::sqrt(mom2[t][k] / c2) + eps);
                }
                p[t][k] -= lr * g;
            }
        }
        if (full || last) {
            for (int t = 0; t < 4 && momentum; ++t) rec.record(step, names[t] + "_velocity", vel[t], shapes[t]);
            for (int t = 0; t < 4 && adam; ++t) rec.record(step, names[t] + "_adam_m", mom1[t], shapes[t]);
            for (int t = 0; t < 4 && adam; ++t) rec.record(step, names[t] + "_adam_v", mom2[t], shapes[t]);
            for (int t = 0; t < 4; ++t) rec.record(step, names[t], p[t], shapes[t]);
        }
        std::fflush(rec.file());  // a crash later keeps this step
    }
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
                             c["target_max"].number, c["log_eps"].number, train_mode};
            std::fprintf(rec.file(), "{\"memstate\": \"jsonl/1\", \"implementation\": \"cpp\", \"device\": \"cpu\", "
                         "\"versions\": {\"compiler\": \"%s\"}}\n", __VERSION__);
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
