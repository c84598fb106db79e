// softmax_xent: softmax cross-entropy with PyTorch's label smoothing ε (target
// q = (1 - ε)·onehot + ε/cols), fused. One thread per row, 256 rows per workgroup, as
// many workgroups as the batch needs: it writes the gradient of the batch-mean loss,
// (softmax - q) / rows, and sums its workgroup's [Σ loss, #correct]. With one workgroup
// (`partial` = 0) those sums and the row count are added into stats, so training metrics
// accumulate on the GPU between reads; with several, each workgroup writes its two sums to
// slot [2·group] of a scratch buffer and `loss_sums` adds them into stats.
// CPU twin: src/cpu/loss.rs. Test: tests/cross_check_loss.rs.

struct Params {
    rows: u32,
    cols: u32,
    // loss_sums: workgroups whose sums to add.
    groups: u32,
    // softmax_xent: write the workgroup's sums to the scratch instead of adding them to stats.
    partial: u32,
    // softmax_xent: label smoothing ε (0: plain cross-entropy).
    smoothing: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<u32>;
@group(0) @binding(3) var<storage, read_write> grad: array<f32>;
@group(0) @binding(4) var<storage, read_write> stats: array<f32>;

var<workgroup> part_loss: array<f32, 256>;
var<workgroup> part_correct: array<f32, 256>;

// Adds part_loss and part_correct over the workgroup into element 0 of each.
fn workgroup_sums(t: u32) {
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if t < s {
            part_loss[t] += part_loss[t + s];
            part_correct[t] += part_correct[t + s];
        }
        workgroupBarrier();
    }
}

@compute @workgroup_size(256)
fn softmax_xent(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let cols = params.cols;
    let inv_rows = 1.0 / f32(params.rows);
    let keep = 1.0 - params.smoothing;
    let spread = params.smoothing / f32(cols);
    var loss = 0.0;
    var correct = 0.0;
    let r = group.x * 256u + t;
    if r < params.rows {
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
            // ε·Σx only with smoothing (a uniform branch): Σx of a row holding -inf is -inf,
            // and 0·inf is NaN.
            var smoothed = 0.0;
            if params.smoothing != 0.0 {
                var total = 0.0;
                for (var j = 0u; j < cols; j++) {
                    total += logits[base + j];
                }
                smoothed = spread * total;
            }
            loss = max_v + log(sum) - keep * logits[base + label] - smoothed;
        }
        if argmax == label {
            correct = 1.0;
        }
        for (var j = 0u; j < cols; j++) {
            let p = exp(logits[base + j] - max_v) / sum;
            grad[base + j] = (p - keep * select(0.0, 1.0, j == label) - spread) * inv_rows;
        }
    }
    part_loss[t] = loss;
    part_correct[t] = correct;
    workgroup_sums(t);
    if t == 0u {
        if params.partial != 0u {
            stats[2u * group.x] = part_loss[0];
            stats[2u * group.x + 1u] = part_correct[0];
        } else {
            stats[0] += part_loss[0];
            stats[1] += part_correct[0];
            stats[2] += f32(params.rows);
        }
    }
}

// loss_sums: stats += [Σ loss, Σ correct, rows] over the `groups` workgroup sums that
// softmax_xent left at [2·g] of the scratch (bound as `partials`).
@group(0) @binding(1) var<storage, read> partials: array<f32>;
@group(0) @binding(2) var<storage, read_write> loss_stats: array<f32>;

@compute @workgroup_size(256)
fn loss_sums(@builtin(local_invocation_index) t: u32) {
    var loss = 0.0;
    var correct = 0.0;
    for (var g = t; g < params.groups; g += 256u) {
        loss += partials[2u * g];
        correct += partials[2u * g + 1u];
    }
    part_loss[t] = loss;
    part_correct[t] = correct;
    workgroup_sums(t);
    if t == 0u {
        loss_stats[0] += part_loss[0];
        loss_stats[1] += part_correct[0];
        loss_stats[2] += f32(params.rows);
    }
}
