// Element-wise and window layers, forward next to backward: zero padding, 2x2 max pooling, ReLU.
// CPU references: kiln-core kernels::{pad, maxpool_2x2, relu} (forward) and kiln-train
// layers::{pad, maxpool, relu} (backward). One invocation per element; the grid may be two-dimensional
// (more than 65,535 workgroups of 256).

struct Params {
    // Elements to produce.
    len: u32,
    // Input geometry [batch, h, w, c].
    batch: u32,
    h: u32,
    w: u32,
    c: u32,
    // Padding (pad layers only).
    top: u32,
    left: u32,
    // Output height and width (pad: h + top + bottom, w + left + right; pool: h/2, w/2).
    out_h: u32,
    out_w: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
@group(0) @binding(3) var<storage, read_write> winners: array<u32>;

fn element(wid: vec3<u32>, lid: vec3<u32>, groups: vec3<u32>) -> u32 {
    return (wid.y * groups.x + wid.x) * 256u + lid.x;
}

// (image, y, x, channel) of flat index `i` into a [batch, h, w, c] tensor.
fn nhwc(i: u32, h: u32, w: u32, c: u32) -> vec4<u32> {
    return vec4<u32>(i / (c * w * h), (i / (c * w)) % h, (i / c) % w, i % c);
}

// x [batch, h, w, c] → y [batch, out_h, out_w, c], zeros around.
@compute @workgroup_size(256)
fn pad_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
               @builtin(num_workgroups) groups: vec3<u32>) {
    let i = element(wid, lid, groups);
    if (i >= p.len) {
        return;
    }
    let at = nhwc(i, p.out_h, p.out_w, p.c);
    let image = at.x;
    let oy = at.y;
    let ox = at.z;
    let ch = at.w;
    let y = i32(oy) - i32(p.top);
    let x = i32(ox) - i32(p.left);
    var v = 0.0;
    if (y >= 0 && y < i32(p.h) && x >= 0 && x < i32(p.w)) {
        v = src[((image * p.h + u32(y)) * p.w + u32(x)) * p.c + ch];
    }
    dst[i] = v;
}

// dy [batch, out_h, out_w, c] → dx [batch, h, w, c]: the gradient inside the border.
@compute @workgroup_size(256)
fn pad_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
                @builtin(num_workgroups) groups: vec3<u32>) {
    let i = element(wid, lid, groups);
    if (i >= p.len) {
        return;
    }
    let at = nhwc(i, p.h, p.w, p.c);
    let image = at.x;
    let y = at.y;
    let x = at.z;
    let ch = at.w;
    dst[i] = src[((image * p.out_h + y + p.top) * p.out_w + x + p.left) * p.c + ch];
}

// x [batch, h, w, c] → y [batch, h/2, w/2, c], and which of the four won (dy·2 + dx; ties go to the first).
@compute @workgroup_size(256)
fn pool_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
                @builtin(num_workgroups) groups: vec3<u32>) {
    let i = element(wid, lid, groups);
    if (i >= p.len) {
        return;
    }
    let at = nhwc(i, p.out_h, p.out_w, p.c);
    let image = at.x;
    let oy = at.y;
    let ox = at.z;
    let ch = at.w;
    var best = 0.0;
    var best_at = 0u;
    for (var pos = 0u; pos < 4u; pos++) {
        let y = 2u * oy + pos / 2u;
        let x = 2u * ox + pos % 2u;
        let v = src[((image * p.h + y) * p.w + x) * p.c + ch];
        if (pos == 0u || v > best) {
            best = v;
            best_at = pos;
        }
    }
    dst[i] = best;
    winners[i] = best_at;
}

// dy [batch, h/2, w/2, c] → dx [batch, h, w, c]: each input gets its window's gradient if it won.
@compute @workgroup_size(256)
fn pool_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
                 @builtin(num_workgroups) groups: vec3<u32>) {
    let i = element(wid, lid, groups);
    if (i >= p.len) {
        return;
    }
    let at = nhwc(i, p.h, p.w, p.c);
    let image = at.x;
    let y = at.y;
    let x = at.z;
    let ch = at.w;
    let oy = y / 2u;
    let ox = x / 2u;
    var g = 0.0;
    if (oy < p.out_h && ox < p.out_w) {
        let out = ((image * p.out_h + oy) * p.out_w + ox) * p.c + ch;
        if (winners[out] == (y % 2u) * 2u + x % 2u) {
            g = src[out];
        }
    }
    dst[i] = g;
}

// ReLU in place on dst.
@compute @workgroup_size(256)
fn relu_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
                @builtin(num_workgroups) groups: vec3<u32>) {
    let i = element(wid, lid, groups);
    if (i < p.len) {
        dst[i] = max(dst[i], 0.0);
    }
}

// ReLU backward in place: dst (the gradient) is zeroed where the forward output src was not positive.
@compute @workgroup_size(256)
fn relu_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
                 @builtin(num_workgroups) groups: vec3<u32>) {
    let i = element(wid, lid, groups);
    if (i < p.len && !(src[i] > 0.0)) {
        dst[i] = 0.0;
    }
}
