// Softmax cross-entropy with its gradient, the batch totals, and the bias gradient's column sums.
// CPU references: kiln-train layers::loss::softmax_cross_entropy and the bias sums in layers::{dense, conv2d}.

struct Params {
    // Rows (examples, or pixels for column sums) and columns (classes, or channels).
    rows: u32,
    cols: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<u32>;
// [rows, cols]: dlogits = (softmax − one-hot) / rows.
@group(0) @binding(3) var<storage, read_write> dlogits: array<f32>;
// [rows, 2]: each example's loss and 1.0 if its argmax (first on ties) is the label.
@group(0) @binding(4) var<storage, read_write> per_example: array<f32>;

@compute @workgroup_size(64)
fn softmax_xent(@builtin(global_invocation_id) gid: vec3<u32>) {
    let row = gid.x;
    if (row >= p.rows) {
        return;
    }
    let base = row * p.cols;
    let label = labels[row];
    var top = logits[base];
    var best = 0u;
    for (var k = 1u; k < p.cols; k++) {
        if (logits[base + k] > top) {
            top = logits[base + k];
            best = k;
        }
    }
    var sum = 0.0;
    for (var k = 0u; k < p.cols; k++) {
        sum += exp(logits[base + k] - top);
    }
    let log_sum = top + log(sum);
    for (var k = 0u; k < p.cols; k++) {
        let prob = exp(logits[base + k] - log_sum);
        dlogits[base + k] = (prob - select(0.0, 1.0, k == label)) / f32(p.rows);
    }
    per_example[2u * row] = log_sum - logits[base + label];
    per_example[2u * row + 1u] = select(0.0, 1.0, best == label);
}

// Sums over rows, in a fixed order (deterministic): one workgroup per column of a [rows, cols] matrix.
// Used for the batch totals (per_example as [rows, 2]) and for bias gradients (dy as [pixels, cout]).
@group(0) @binding(5) var<storage, read> matrix: array<f32>;
@group(0) @binding(6) var<storage, read_write> sums: array<f32>;

var<workgroup> partial: array<f32, 256>;

@compute @workgroup_size(256)
fn column_sums(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
               @builtin(num_workgroups) groups: vec3<u32>) {
    let col = wid.y * groups.x + wid.x;
    var s = 0.0;
    if (col < p.cols) {
        for (var row = lid.x; row < p.rows; row += 256u) {
            s += matrix[row * p.cols + col];
        }
    }
    partial[lid.x] = s;
    workgroupBarrier();
    for (var stride = 128u; stride > 0u; stride /= 2u) {
        if (lid.x < stride) {
            partial[lid.x] += partial[lid.x + stride];
        }
        workgroupBarrier();
    }
    if (lid.x == 0u && col < p.cols) {
        sums[col] = partial[0];
    }
}
