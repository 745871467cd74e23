// A per-sample C++ port in the style of the mnist-from-scratch one, instrumented with memstate.hpp:
// each sample goes forward and backward on its own and its gradient is added to the batch's. Its sums
// start at the bias (no separate matmul) and it computes no loss, so it declares those records missing
// and the comparator judges what reads them from this port's own inputs. One hidden layer, no dropout:
// anything else is refused as unsupported. SGD, momentum and Adam; float32 or float64; replays.
#include <cmath>

#include "memstate.hpp"

template <class T>
void train(const memstate::Job& job, memstate::Recorder& rec) {
    const memstate::Config& c = job.config;
    if (job.matmul_precision != "float32" || job.storage != "float32")
        throw memstate::Unsupported("full precision only; the job asks for " + job.matmul_precision + " matmuls, " + job.storage + " storage");
    if (job.widths.size() != 1 || !job.dropout_p.empty())
        throw memstate::Unsupported("one hidden layer without dropout only (this config has " +
                                    std::to_string(job.widths.size()) + " and dropout on " + std::to_string(job.dropout_p.size()) + ")");
    rec.missing({"hidden/matmul", "output/matmul", "loss/value"});
    const size_t m = job.batch_size, D = job.pixels, H = job.widths[0], C = 10;
    const bool ce = c.loss == "cross_entropy";
    const char* names[] = {"hidden/weight", "hidden/bias", "output/weight", "output/bias"};
    const char* keys[] = {"W1", "b1", "W2", "b2"};
    std::vector<T> p[4], vel[4], m1[4], m2[4];
    std::vector<size_t> shape[4] = {{H, D}, {H}, {C, H}, {C}};
    auto cast = [](const memstate::Tensor& t) { return std::vector<T>(t.data.begin(), t.data.end()); };
    for (int k = 0; k < 4; ++k) {
        p[k] = cast(job.params.at(keys[k]));
        vel[k] = job.velocity.empty() ? std::vector<T>(p[k].size()) : cast(job.velocity.at(keys[k]));
        m1[k] = job.adam_m.empty() ? std::vector<T>(p[k].size()) : cast(job.adam_m.at(keys[k]));
        m2[k] = job.adam_v.empty() ? std::vector<T>(p[k].size()) : cast(job.adam_v.at(keys[k]));
        rec.load(names[k], shape[k], p[k]);
    }
    auto f = [&](T z) -> T { return c.activation == "relu" ? (z > 0 ? z : T(0)) : c.activation == "sigmoid" ? T(1) / (T(1) + std::exp(-z)) : std::tanh(z); };
    auto df = [&](T z, T a) -> T { return c.activation == "relu" ? T(z > 0) : c.activation == "sigmoid" ? a * (T(1) - a) : T(1) - a * a; };
    const T d = c.batch_reduction == "sum" ? T(1) : T(m);
    const T per = c.squared_error == "sum" ? T(1) : c.squared_error == "half_sum" ? T(0.5) : T(0.1);
    for (size_t s = job.first_step; s < job.first_step + job.steps; ++s) {
        const unsigned char* px = job.images(s);
        const unsigned char* lab = job.labels(s);
        std::vector<T> X(m * D), Z1(m * H), A1(m * H), Z2(m * C), P(m * C), dZ2(m * C), dA1(m * H), dZ1(m * H);
        std::vector<T> g[4] = {std::vector<T>(H * D), std::vector<T>(H), std::vector<T>(C * H), std::vector<T>(C)};
        std::vector<T> sums(m);  // each sample's sum of exponentials (shifted by its largest logit)
        for (size_t i = 0; i < m; ++i) {  // forward, one sample at a time
            T* x = &X[i * D];
            for (size_t k = 0; k < D; ++k) x[k] = T(px[i * D + k]) / T(255) * T(c.input_max - c.input_min) + T(c.input_min);
            for (size_t j = 0; j < H; ++j) {
                T acc = p[1][j];  // the sum starts at the bias
                for (size_t k = 0; k < D; ++k) acc += p[0][j * D + k] * x[k];
                Z1[i * H + j] = acc;
                A1[i * H + j] = f(acc);
            }
            T top = -INFINITY;
            for (size_t o = 0; o < C; ++o) {
                T acc = p[3][o];
                for (size_t j = 0; j < H; ++j) acc += p[2][o * H + j] * A1[i * H + j];
                Z2[i * C + o] = acc;
                top = std::max(top, acc);
            }
            for (size_t o = 0; o < C; ++o) {
                P[i * C + o] = ce ? std::exp(Z2[i * C + o] - top) : T(1) / (T(1) + std::exp(-Z2[i * C + o]));
                sums[i] += P[i * C + o];
            }
        }
        for (size_t i = 0; i < m; ++i) {  // backward, one sample at a time
            const T* x = &X[i * D];
            const T sum = sums[i];
            for (size_t o = 0; o < C; ++o) {
                if (ce) P[i * C + o] /= sum;
                const T e = P[i * C + o] - T(o == lab[i] ? c.target_max : c.target_min);
                dZ2[i * C + o] = ce ? e / d : T(2) * per * e * P[i * C + o] * (T(1) - P[i * C + o]) / d;
                g[3][o] += dZ2[i * C + o];
                for (size_t j = 0; j < H; ++j) g[2][o * H + j] += dZ2[i * C + o] * A1[i * H + j];
            }
            for (size_t j = 0; j < H; ++j) {
                T acc = 0;
                for (size_t o = 0; o < C; ++o) acc += dZ2[i * C + o] * p[2][o * H + j];
                dA1[i * H + j] = acc;
                dZ1[i * H + j] = acc * df(Z1[i * H + j], A1[i * H + j]);
                g[1][j] += dZ1[i * H + j];
                for (size_t k = 0; k < D; ++k) g[0][j * D + k] += dZ1[i * H + j] * x[k];
            }
        }
        std::vector<int> y(lab, lab + m);
        rec.record(s, "input/x", {m, D}, X);
        rec.record(s, "input/y", {m}, y);
        rec.record(s, "hidden/bias_add", {m, H}, Z1);
        rec.record(s, "hidden/activation", {m, H}, A1);
        rec.record(s, "output/bias_add", {m, C}, Z2);
        rec.record(s, ce ? "output/softmax" : "output/sigmoid", {m, C}, P);
        rec.record(s, "output/grad_logits", {m, C}, dZ2);
        rec.record(s, "output/grad_weight", {C, H}, g[2]);
        rec.record(s, "output/grad_bias", {C}, g[3]);
        rec.record(s, "hidden/grad_activation", {m, H}, dA1);
        rec.record(s, "hidden/grad_preactivation", {m, H}, dZ1);
        rec.record(s, "hidden/grad_weight", {H, D}, g[0]);
        rec.record(s, "hidden/grad_bias", {H}, g[1]);
        // the update; the decay, 1 - beta and beta^t in double, rounded once
        const T lr = T(c.lr * (c.lr_decay != 1 ? std::pow(c.lr_decay, std::floor(double(s) / double(c.epoch_steps))) : 1.0));
        const T b1 = T(c.adam_beta1), b2 = T(c.adam_beta2), ob1 = T(1 - c.adam_beta1), ob2 = T(1 - c.adam_beta2);
        const T c1 = T(1 - std::pow(c.adam_beta1, double(s + 1))), c2 = T(1 - std::pow(c.adam_beta2, double(s + 1)));
        for (int k = 0; k < 4; ++k)
            for (size_t e = 0; e < p[k].size(); ++e) {
                T grad = g[k][e] + T(c.weight_decay) * p[k][e];
                if (c.optimizer == "momentum") grad = vel[k][e] = T(c.momentum) * vel[k][e] + grad;
                if (c.optimizer == "adam") {
                    m1[k][e] = b1 * m1[k][e] + ob1 * grad;
                    m2[k][e] = b2 * m2[k][e] + ob2 * grad * grad;
                    grad = (m1[k][e] / c1) / (std::sqrt(m2[k][e] / c2) + T(c.adam_eps));
                }
                p[k][e] -= lr * grad;
            }
        for (int k = 0; c.optimizer == "momentum" && k < 4; ++k) rec.record(s, std::string(names[k]) + "_velocity", shape[k], vel[k]);
        for (int k = 0; c.optimizer == "adam" && k < 4; ++k) rec.record(s, std::string(names[k]) + "_adam_m", shape[k], m1[k]);
        for (int k = 0; c.optimizer == "adam" && k < 4; ++k) rec.record(s, std::string(names[k]) + "_adam_v", shape[k], m2[k]);
        for (int k = 0; k < 4; ++k) rec.record(s, names[k], shape[k], p[k]);
    }
}

int main(int argc, char** argv) {
    return memstate::run(argc, argv, "cpp-kit", [](const memstate::Job& job, memstate::Recorder& rec) {
        if (job.config.dtype == "float64") train<double>(job, rec);
        else train<float>(job, rec);
    });
}
