// memstate.hpp: the memstate C++17 kit, one header, standard library only. It opens the job the harness
// hands a port and writes the port's records as memstate JSON lines (docs/protocol.md); it does no
// arithmetic: the port's math stays the port's.
//
//   #include "memstate.hpp"
//   int main(int argc, char** argv) {
//       return memstate::run(argc, argv, "cpp-mlp", [](const memstate::Job& job, memstate::Recorder& rec) {
//           ... rec.record(s, "hidden/bias_add", {m, h}, Z); ...
//       });
//   }
#pragma once
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace memstate {

// ---- a small JSON reader: enough for job.json and params.json -------------------------------------
struct Json {
    enum Kind { Null, Bool, Number, String, Array, Object } kind = Null;
    double number = 0;
    bool boolean = false;
    std::string text;
    std::vector<Json> items;
    std::map<std::string, Json> fields;
    bool has(const std::string& k) const { return kind == Object && fields.count(k) > 0; }
    const Json& operator[](const std::string& k) const {
        static const Json none;
        auto it = fields.find(k);
        return it == fields.end() ? none : it->second;
    }
};

class JsonReader {
  public:
    JsonReader(const std::string& s, const std::string& file) : s_(s), file_(file) {}
    Json parse() {
        Json v = value();
        space();
        if (i_ != s_.size()) error("text after the JSON value");
        return v;
    }

  private:
    const std::string& s_;
    std::string file_;
    size_t i_ = 0;
    [[noreturn]] void error(const std::string& what) {
        throw std::runtime_error(file_ + ": not the JSON expected: " + what + " at byte " + std::to_string(i_));
    }
    void space() { while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) ++i_; }
    bool eat(char c) { space(); if (i_ < s_.size() && s_[i_] == c) { ++i_; return true; } return false; }
    Json value() {
        space();
        if (i_ >= s_.size()) error("unexpected end");
        Json v;
        char c = s_[i_];
        if (c == '{') {
            ++i_;
            v.kind = Json::Object;
            if (eat('}')) return v;
            do {
                space();
                std::string key = string();
                if (!eat(':')) error("expected ':'");
                v.fields[key] = value();
            } while (eat(','));
            if (!eat('}')) error("expected '}'");
        } else if (c == '[') {
            ++i_;
            v.kind = Json::Array;
            if (eat(']')) return v;
            do v.items.push_back(value()); while (eat(','));
            if (!eat(']')) error("expected ']'");
        } else if (c == '"') {
            v.kind = Json::String;
            v.text = string();
        } else if (s_.compare(i_, 4, "true") == 0 || s_.compare(i_, 5, "false") == 0) {
            v.kind = Json::Bool;
            v.boolean = s_[i_] == 't';
            i_ += v.boolean ? 4 : 5;
        } else if (s_.compare(i_, 4, "null") == 0) {
            i_ += 4;
        } else {
            const char* start = s_.c_str() + i_;
            char* end = nullptr;
            v.kind = Json::Number;
            v.number = std::strtod(start, &end);
            if (end == start) error("expected a value");
            i_ += static_cast<size_t>(end - start);
        }
        return v;
    }
    std::string string() {
        if (i_ >= s_.size() || s_[i_] != '"') error("expected a string");
        std::string out;
        for (++i_; i_ < s_.size() && s_[i_] != '"'; ++i_) {
            if (s_[i_] == '\\' && i_ + 1 < s_.size()) {
                char e = s_[++i_];
                out += e == 'n' ? '\n' : e == 't' ? '\t' : e;  // \uXXXX is not needed in job files
            } else {
                out += s_[i_];
            }
        }
        if (i_ >= s_.size()) error("unterminated string");
        ++i_;
        return out;
    }
};

inline std::string read_file(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw std::runtime_error(path + ": cannot read");
    std::ostringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

inline Json read_json(const std::string& path) {
    std::string text = read_file(path);
    return JsonReader(text, path).parse();
}

// ---- the job ------------------------------------------------------------------------------------
struct Tensor {
    std::vector<size_t> shape;
    std::vector<double> data;  // row-major
};

struct Config {  // job.json's "config" (docs/comparing.md, "Configuration")
    std::string activation, loss, optimizer, dtype, squared_error = "mean", batch_reduction = "mean";
    double lr = 0, momentum = 0, weight_decay = 0, adam_beta1 = 0.9, adam_beta2 = 0.999, adam_eps = 1e-8;
    double lr_decay = 1, input_min = 0, input_max = 1, target_min = 0, target_max = 1, log_eps = 0;
    long epoch_steps = 0;
    std::vector<double> dropout;
};

class Job {
  public:
    std::string dir;
    Config config;
    size_t first_step = 0, steps = 0, batch_size = 0, pixels = 784;
    std::vector<size_t> widths;             // hidden widths, input side first
    std::vector<std::string> names;         // "hidden" (or "hidden1".."hiddenL"), then "output"
    std::map<std::string, Tensor> params;   // "W1", "b1", ...
    std::map<std::string, Tensor> velocity, adam_m, adam_v;  // a replay's starting buffers; empty otherwise
    std::map<size_t, double> dropout_p;     // hidden layer (from 1) -> p, for the layers with dropout
    std::string matmul_precision = "float32";  // asked for by the harness: "tf32", "bfloat16", "float16"
    std::string storage = "float32";           // the format it asks every tensor to be kept in
    std::string accumulate = "float32";        // the format it asks sums' running totals to be kept in

    explicit Job(const std::string& d) : dir(d) {
        const std::string path = dir + "/job.json";
        const Json j = read_json(path);
        if (j["format"].text != "memstate-job/1") throw std::runtime_error(path + ": field 'format' must be \"memstate-job/1\"");
        const Json& c = j["config"];
        if (c.kind != Json::Object) throw std::runtime_error(path + ": field 'config' must be an object");
        auto str = [&](const char* k, std::string& out) { if (c[k].kind == Json::String) out = c[k].text; };
        auto num = [&](const char* k, double& out) { if (c[k].kind == Json::Number) out = c[k].number; };
        str("activation", config.activation); str("loss", config.loss); str("optimizer", config.optimizer);
        str("dtype", config.dtype); str("squared_error", config.squared_error); str("batch_reduction", config.batch_reduction);
        num("lr", config.lr); num("momentum", config.momentum); num("weight_decay", config.weight_decay);
        num("adam_beta1", config.adam_beta1); num("adam_beta2", config.adam_beta2); num("adam_eps", config.adam_eps);
        num("lr_decay", config.lr_decay); num("input_min", config.input_min); num("input_max", config.input_max);
        num("target_min", config.target_min); num("target_max", config.target_max); num("log_eps", config.log_eps);
        config.epoch_steps = static_cast<long>(c["epoch_steps"].number);
        for (const Json& p : c["dropout"].items) config.dropout.push_back(p.number);
        auto count = [&](const char* k, size_t& out, bool positive) {
            const Json& v = j[k];
            if (v.kind == Json::Null && !positive) return;
            if (v.kind != Json::Number || v.number < (positive ? 1 : 0) || v.number != std::floor(v.number))
                throw std::runtime_error(path + ": field '" + k + "' must be a " + (positive ? "positive" : "non-negative") + " integer");
            out = static_cast<size_t>(v.number);
        };
        count("steps", steps, true); count("batch_size", batch_size, true); count("first_step", first_step, false);
        if (j.has("pixels")) count("pixels", pixels, true);
        for (const Json& w : j["widths"].items) widths.push_back(static_cast<size_t>(w.number));
        if (widths.empty()) {
            for (const Json& w : c["layers"].items) widths.push_back(static_cast<size_t>(w.number));
            if (widths.empty()) widths.push_back(static_cast<size_t>(c["hidden"].number));
        }
        for (size_t k = 1; k <= widths.size(); ++k) names.push_back(widths.size() == 1 ? "hidden" : "hidden" + std::to_string(k));
        names.push_back("output");
        if (j["precision"]["matmul"].kind == Json::String) matmul_precision = j["precision"]["matmul"].text;
        if (j["precision"]["storage"].kind == Json::String) storage = j["precision"]["storage"].text;
        if (j["precision"]["accumulate"].kind == Json::String) accumulate = j["precision"]["accumulate"].text;
        params = tensors(j["params"].text, "params");
        if (j.has("velocity")) velocity = tensors(j["velocity"].text, "an optimizer buffer");
        if (j.has("adam_m")) adam_m = tensors(j["adam_m"].text, "an optimizer buffer");
        if (j.has("adam_v")) adam_v = tensors(j["adam_v"].text, "an optimizer buffer");
        const size_t n = steps * batch_size;
        if (j.has("batches")) {  // an indexed job: sample i of step s is pool image batches[s*m + i]
            size_t pool = 0;
            count("pool_size", pool, true);
            std::string raw = bytes(j["batches"].text, "batches", 4 * n);
            std::string pool_images = bytes(j["pool_images"].text, "pool_images", pool * pixels);
            std::string pool_labels = bytes(j["pool_labels"].text, "pool_labels", pool);
            images_.reserve(n * pixels);
            for (size_t i = 0; i < n; ++i) {
                const auto* b = reinterpret_cast<const unsigned char*>(raw.data() + 4 * i);
                size_t idx = b[0] | (b[1] << 8) | (b[2] << 16) | (static_cast<size_t>(b[3]) << 24);
                if (idx >= pool) throw std::runtime_error(dir + "/" + j["batches"].text + ": index " + std::to_string(i) + " is outside the pool");
                images_.append(pool_images, idx * pixels, pixels);
                labels_ += pool_labels[idx];
            }
        } else {
            images_ = bytes(j["images"].text, "images", n * pixels);
            labels_ = bytes(j["labels"].text, "labels", n);
        }
        for (size_t i = 0; i < labels_.size(); ++i)
            if (static_cast<unsigned char>(labels_[i]) > 9)
                throw std::runtime_error(dir + ": label " + std::to_string(i) + " is " + std::to_string(static_cast<unsigned char>(labels_[i])) + ", expected a class 0-9");
        for (const Json& e : j["dropout"].items) {
            size_t layer = static_cast<size_t>(e["layer"].number);
            if (layer < 1 || layer > widths.size()) throw std::runtime_error(path + ": a 'dropout' entry names no hidden layer");
            masks_[layer] = bytes(e["file"].text, "dropout", n * widths[layer - 1]);
            dropout_p[layer] = e["p"].number;
        }
    }

    std::vector<size_t> sizes() const {  // {pixels, H1, ..., HL, 10}
        std::vector<size_t> s{pixels};
        s.insert(s.end(), widths.begin(), widths.end());
        s.push_back(10);
        return s;
    }
    // Step s's pixel bytes, (m, pixels), its labels (m,), a dropout layer's mask (m, width): s counts from first_step.
    const unsigned char* images(size_t s) const { return at(images_, s, batch_size * pixels); }
    const unsigned char* labels(size_t s) const { return at(labels_, s, batch_size); }
    const unsigned char* mask(size_t layer, size_t s) const { return at(masks_.at(layer), s, batch_size * widths[layer - 1]); }

  private:
    std::string images_, labels_;
    std::map<size_t, std::string> masks_;

    const unsigned char* at(const std::string& b, size_t s, size_t per) const {
        if (s < first_step || s >= first_step + steps) throw std::runtime_error("step " + std::to_string(s) + " is outside the job's steps");
        return reinterpret_cast<const unsigned char*>(b.data()) + (s - first_step) * per;
    }
    std::string bytes(const std::string& name, const char* field, size_t want) const {
        if (name.empty()) throw std::runtime_error(dir + "/job.json: field '" + field + "' is missing");
        std::string b = read_file(dir + "/" + name);
        if (b.size() != want)
            throw std::runtime_error(dir + "/" + name + ": " + std::to_string(b.size()) + " bytes, expected " + std::to_string(want) + " (job.json's steps, batch_size and pixels)");
        return b;
    }
    std::map<std::string, Tensor> tensors(const std::string& name, const char* what) const {
        const std::string path = dir + "/" + name;
        const Json p = read_json(path);
        if (p["format"].text != "memstate-params/1") throw std::runtime_error(path + ": field 'format' must be \"memstate-params/1\" (" + what + ")");
        std::map<std::string, Tensor> out;
        const std::vector<size_t> s = sizes();
        for (size_t k = 1; k < s.size(); ++k)
            for (int bias = 0; bias < 2; ++bias) {
                const std::string key = (bias ? "b" : "W") + std::to_string(k);
                const std::vector<size_t> shape = bias ? std::vector<size_t>{s[k]} : std::vector<size_t>{s[k], s[k - 1]};
                const Json& t = p["tensors"][key];
                Tensor& o = out[key];
                for (const Json& d : t["shape"].items) o.shape.push_back(static_cast<size_t>(d.number));
                for (const Json& v : t["data"].items) o.data.push_back(v.number);
                size_t n = bias ? s[k] : s[k] * s[k - 1];
                if (o.shape != shape || o.data.size() != n)
                    throw std::runtime_error(path + ": tensor \"" + key + "\" must have " + std::to_string(n) + " values of the config's shape");
            }
        return out;
    }
};

// ---- the recorder -------------------------------------------------------------------------------
struct Unsupported : std::runtime_error {  // throw it from the port to refuse a config
    using std::runtime_error::runtime_error;
};

class Recorder {
  public:
    Recorder(const std::string& path, const std::string& implementation) : impl_(implementation) {
        f_ = std::fopen(path.c_str(), "w");
        if (!f_) throw std::runtime_error(path + ": cannot write");
    }
    ~Recorder() { if (f_) std::fclose(f_); }
    void describe(const std::string& device, const std::map<std::string, std::string>& versions = {}) {
        device_ = device;
        for (const auto& kv : versions) versions_[kv.first] = kv.second;
    }
    // This port's matmuls round their operands to "tf32", "bfloat16" or "float16"; before the first record.
    void precision(const std::string& matmul) { precision_ = matmul; }
    // This port keeps every tensor in "bfloat16" or "float16" (recorded as float); before the first record.
    void storage(const std::string& format) { storage_ = format; }
    // This port keeps its sums' running totals in "bfloat16" or "float16" too; before the first record.
    void accumulate(const std::string& format) { accumulate_ = format; }
    // Records this port does not compute (a matmul fused with its bias add, no loss); before the first record.
    void missing(std::initializer_list<std::string> names) { missing_.insert(names.begin(), names.end()); }

    template <class T> void load(const std::string& name, std::vector<size_t> shape, const std::vector<T>& data) { write("\"load\"", name, shape, data); }
    // One tensor of step s, row-major: float, double, or an integer type (labels, masks).
    template <class T> void record(size_t s, const std::string& name, std::vector<size_t> shape, const std::vector<T>& data) {
        if (missing_.count(name)) throw std::runtime_error("record \"" + name + "\" was declared missing (not computed) but is recorded");
        write(std::to_string(s), name, shape, data);
    }
    template <class T> void record(size_t s, const std::string& name, std::vector<size_t> shape, const T* data) {
        size_t n = 1;
        for (size_t d : shape) n *= d;
        record(s, name, shape, std::vector<T>(data, data + n));
    }
    void complete() { end("{\"end\": \"complete\"}"); }
    void fail(const std::string& error) { end("{\"end\": \"error\", \"error\": " + quote(error) + "}"); }
    void unsupported(const std::string& reason) { end("{\"end\": \"unsupported\", \"reason\": " + quote(reason) + "}"); }

  private:
    std::FILE* f_ = nullptr;
    std::string impl_, device_ = "cpu", step_;
    std::map<std::string, std::string> versions_{{"compiler", __VERSION__}};
    std::set<std::string> missing_;
    std::string precision_, storage_, accumulate_;
    bool started_ = false, ended_ = false;

    static std::string quote(const std::string& s) {
        std::string o = "\"";
        for (char c : s) {
            if (c == '"' || c == '\\') o += '\\';
            if (c == '\n') { o += "\\n"; continue; }
            if (static_cast<unsigned char>(c) < 0x20) continue;
            o += c;
        }
        return o + "\"";
    }
    template <class T> static void put(std::string& out, T x) {
        char buf[40];
        if constexpr (std::is_floating_point_v<T>) {
            if (std::isnan(x)) out += "\"NaN\"";
            else if (std::isinf(x)) out += x > 0 ? "\"Infinity\"" : "\"-Infinity\"";
            else {  // the shortest text that reads back as x (C++17's to_chars, several times faster than printf)
#if defined(__cpp_lib_to_chars) && __cpp_lib_to_chars >= 201611L
                out.append(buf, std::to_chars(buf, buf + sizeof buf, x).ptr);
#else
                std::snprintf(buf, sizeof buf, sizeof(T) == 4 ? "%.9g" : "%.17g", static_cast<double>(x));
                out += buf;
#endif
            }
        } else {
            out += std::to_string(static_cast<long long>(x));
        }
    }
    template <class T> static const char* dtype() {
        if constexpr (std::is_same_v<T, float>) return "float32";
        else if constexpr (std::is_same_v<T, double>) return "float64";
        else if constexpr (std::is_same_v<T, unsigned char>) return "uint8";
        else return "int64";
    }
    template <class T> void write(const std::string& step, const std::string& name, const std::vector<size_t>& shape, const std::vector<T>& data) {
        size_t n = 1;
        std::string dims = "[";
        for (size_t k = 0; k < shape.size(); ++k) { n *= shape[k]; dims += (k ? ", " : "") + std::to_string(shape[k]); }
        if (n != data.size()) throw std::runtime_error("record \"" + name + "\": its shape needs " + std::to_string(n) + " values, got " + std::to_string(data.size()));
        std::string line = "{\"step\": " + step + ", \"name\": " + quote(name) + ", \"dtype\": \"" + dtype<T>() + "\", \"shape\": " + dims + "], ";
        if constexpr (std::is_floating_point_v<T>) {
            if (!numbers()) {  // "base64": each value's little-endian bytes, exact whatever the digits
                std::string raw(sizeof(T) * n, '\0');
                for (size_t k = 0; k < n; ++k) {
                    uint64_t bits = 0;
                    if constexpr (sizeof(T) == 4) { uint32_t b; std::memcpy(&b, &data[k], 4); bits = b; }
                    else std::memcpy(&bits, &data[k], 8);
                    for (size_t j = 0; j < sizeof(T); ++j) raw[sizeof(T) * k + j] = static_cast<char>(bits >> (8 * j));
                }
                emit(step, line + "\"base64\": \"" + base64(raw) + "\"}\n");
                return;
            }
        }
        line += "\"data\": [";
        line.reserve(line.size() + 16 * n);
        for (size_t k = 0; k < n; ++k) { if (k) line += ", "; put(line, data[k]); }
        emit(step, line + "]}\n");
    }
    // Floats are written as "base64" (exact, and read many times faster than numbers) unless
    // MEMSTATE_VALUES=numbers is in the environment: then as numbers a person can read.
    static bool numbers() {  // read once a run, as the Go and JavaScript kits do
        static const bool asked = [] {
            const char* v = std::getenv("MEMSTATE_VALUES");
            return v && std::string(v) == "numbers";
        }();
        return asked;
    }
    static std::string base64(const std::string& in) {  // RFC 4648, padded with '='
        static const char* abc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        std::string out;
        out.reserve(4 * ((in.size() + 2) / 3));
        for (size_t i = 0; i < in.size(); i += 3) {
            const size_t left = in.size() - i;
            uint32_t w = uint32_t(static_cast<unsigned char>(in[i])) << 16;
            if (left > 1) w |= uint32_t(static_cast<unsigned char>(in[i + 1])) << 8;
            if (left > 2) w |= static_cast<unsigned char>(in[i + 2]);
            out += abc[w >> 18];
            out += abc[(w >> 12) & 63];
            out += left > 1 ? abc[(w >> 6) & 63] : '=';
            out += left > 2 ? abc[w & 63] : '=';
        }
        return out;
    }
    void emit(const std::string& step, const std::string& line) {
        if (!started_) {
            started_ = true;
            std::string h = "{\"memstate\": \"jsonl/1\", \"implementation\": " + quote(impl_) + ", \"device\": " + quote(device_) + ", \"versions\": {";
            bool first = true;
            for (const auto& kv : versions_) { h += (first ? "" : ", ") + quote(kv.first) + ": " + quote(kv.second); first = false; }
            h += "}";
            std::string p;  // the precision declared: each field given, in order
            for (const auto& kv : {std::make_pair("matmul", &precision_), std::make_pair("storage", &storage_),
                                   std::make_pair("accumulate", &accumulate_)})
                if (!kv.second->empty()) p += (p.empty() ? "" : ", ") + quote(kv.first) + ": " + quote(*kv.second);
            if (!p.empty()) h += ", \"precision\": {" + p + "}";
            if (!missing_.empty()) {
                h += ", \"missing\": [";
                first = true;
                for (const auto& m : missing_) { h += (first ? "" : ", ") + quote(m); first = false; }
                h += "]";
            }
            std::fputs((h + "}\n").c_str(), f_);
        }
        if (step != step_) std::fflush(f_);  // the step before is whole on disk before the next begins
        step_ = step;
        std::fputs(line.c_str(), f_);
    }
    void end(const std::string& line) {
        if (ended_) return;
        ended_ = true;
        emit("end", line + "\n");
        std::fflush(f_);
    }
};

// Run a port: `mlp JOB_DIR OUT` opens the job, calls train(job, rec), and ends the memstate as complete,
// unsupported (train threw memstate::Unsupported) or error (anything else thrown; exit code 1).
inline int run(int argc, char** argv, const std::string& implementation, const std::function<void(const Job&, Recorder&)>& train) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: %s JOB_DIR OUT.jsonl\n", argv[0]);
        return 2;
    }
    std::unique_ptr<Recorder> rec;
    try {
        rec = std::make_unique<Recorder>(argv[2], implementation);
        Job job(argv[1]);
        train(job, *rec);
        rec->complete();
        return 0;
    } catch (const Unsupported& e) {
        rec->unsupported(e.what());
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "%s\n", e.what());
        if (rec) rec->fail(e.what());
        return 1;
    }
}

}  // namespace memstate
