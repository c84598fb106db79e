// softmax_xent: softmax cross-entropy, fused. One workgroup walks the batch (a thread per row):
// it writes the gradient of the batch-mean loss, (softmax - onehot) / rows, and adds
// [Σ loss, #correct, rows] into stats, so training metrics accumulate on the GPU between reads.
// CPU twin: src/cpu/loss.rs. Test: tests/cross_check_loss.rs.

struct Params {
    rows: u32,
    cols: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<u32>;
@group(0) @binding(3) var<storage, read_write> grad: array<f32>;
@group(0) @binding(4) var<storage, read_write> stats: array<f32>;

var<workgroup> part_loss: array<f32, 256>;
var<workgroup> part_correct: array<f32, 256>;

@compute @workgroup_size(256)
fn softmax_xent(@builtin(local_invocation_index) t: u32) {
    let cols = params.cols;
    let inv_rows = 1.0 / f32(params.rows);
    var loss = 0.0;
    var correct = 0.0;
    for (var r = t; r < params.rows; r += 256u) {
        let base = r * cols;
        var max_v = logits[base];
        var argmax = 0u;
        for (var j = 1u; j < cols; j++) {
            let v = logits[base + j];
            if v > max_v {
                max_v = v;
                argmax = j;
            }
        }
        var sum = 0.0;
        for (var j = 0u; j < cols; j++) {
            sum += exp(logits[base + j] - max_v);
        }
        let label = labels[r];
        if label < cols {
            loss += max_v + log(sum) - logits[base + label];
        }
        if argmax == label {
            correct += 1.0;
        }
        for (var j = 0u; j < cols; j++) {
            let p = exp(logits[base + j] - max_v) / sum;
            grad[base + j] = (p - select(0.0, 1.0, j == label)) * inv_rows;
        }
    }
    part_loss[t] = loss;
    part_correct[t] = correct;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if t < s {
            part_loss[t] += part_loss[t + s];
            part_correct[t] += part_correct[t + s];
        }
        workgroupBarrier();
    }
    if t == 0u {
        stats[0] += part_loss[0];
        stats[1] += part_correct[0];
        stats[2] += f32(params.rows);
    }
}
