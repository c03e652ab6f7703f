// Parameter updates, one invocation per value. CPU reference: kiln-train optim::Optimizer::apply
// (TF1 semantics: Momentum accumulates a = μ·a + g, w −= lr·a; Adam folds the bias correction into lr_t).

struct Params {
    len: u32,
    lr: f32,
    // Adam: lr · sqrt(1 − β2^t) / (1 − β1^t), computed on the host as the CPU does.
    lr_t: f32,
    momentum: f32,
    beta1: f32,
    beta2: f32,
    epsilon: f32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> grad: array<f32>;
@group(0) @binding(2) var<storage, read_write> weights: array<f32>;
@group(0) @binding(3) var<storage, read_write> slot0: array<f32>;
@group(0) @binding(4) var<storage, read_write> slot1: array<f32>;

fn element(wid: vec3<u32>, lid: vec3<u32>, groups: vec3<u32>) -> u32 {
    return (wid.y * groups.x + wid.x) * 256u + lid.x;
}

@compute @workgroup_size(256)
fn sgd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
       @builtin(num_workgroups) groups: vec3<u32>) {
    let i = element(wid, lid, groups);
    if (i < p.len) {
        weights[i] -= p.lr * grad[i];
    }
}

@compute @workgroup_size(256)
fn momentum(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
            @builtin(num_workgroups) groups: vec3<u32>) {
    let i = element(wid, lid, groups);
    if (i < p.len) {
        let a = p.momentum * slot0[i] + grad[i];
        slot0[i] = a;
        weights[i] -= p.lr * a;
    }
}

@compute @workgroup_size(256)
fn adam(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(num_workgroups) groups: vec3<u32>) {
    let i = element(wid, lid, groups);
    if (i < p.len) {
        let g = grad[i];
        let m = p.beta1 * slot0[i] + (1.0 - p.beta1) * g;
        let v = p.beta2 * slot1[i] + (1.0 - p.beta2) * g * g;
        slot0[i] = m;
        slot1[i] = v;
        weights[i] -= p.lr_t * m / (sqrt(v) + p.epsilon);
    }
}
