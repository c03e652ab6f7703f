// One tiled matrix product for every conv and dense pass, forward and backward:
//   C[m, n] = Σ_k A(m, k) · B(k, n)  (+ bias[n]) (then ReLU)
// where A and B are read through the gathers below, chosen by the MODE override constant, so conv needs no
// im2col buffer. CPU references: kiln-core kernels::{dense, conv2d_3x3_same} (forward) and kiln-train
// layers::{dense, conv2d} (backward).
//
// MODE 0  dense forward            A = x [batch, cin]           B = w [cin, cout]        C = y [batch, cout]
// MODE 1  conv forward             A = im2col(x) [pixels, 9·cin] B = w [9·cin, cout]      C = y [pixels, cout]
// MODE 2  dense input gradient     A = dy [batch, cout]         B = wᵀ [cout, cin]       C = dx [batch, cin]
// MODE 3  conv input gradient      A = im2col'(dy) [pixels, 9·cout] B = w' [9·cout, cin]  C = dx [pixels, cin]
// MODE 4  dense weight gradient    A = xᵀ [cin, batch]          B = dy [batch, cout]     C = dw [cin, cout]
// MODE 5  conv weight gradient     A = im2col(x)ᵀ [9·cin, pixels] B = dy [pixels, cout]   C = dw [9·cin, cout]
//
// Tiling: a 16×16 workgroup computes a 64×64 block of C, each invocation a 4×4 sub-block; 64×16 of A and
// 16×64 of B are staged in workgroup memory per step (8 KiB, inside WebGPU's 16 KiB default).

override MODE: u32 = 0u;
// How B's values are stored (forward modes on packed models; training is always f32), dequantized as they are
// loaded, numbered by the .kiln dtype codes: 1 f32, 2 f16, 3 int8 (an f32 scale per output channel), 4 int4 and
// 5 int2 (an f16 scale per block of
// `block` values; int2 levels are q + 0.5). Bit layouts are the .kiln format's (docs/FORMAT.md): little-endian,
// low bits first. CPU reference: kiln-core format::Values::decode.
override DTYPE: u32 = 1u;

struct Params {
    m: u32,
    n: u32,
    k: u32,
    // Image geometry for the conv modes: batch, height, width, input and output channels.
    batch: u32,
    h: u32,
    w: u32,
    cin: u32,
    cout: u32,
    // bit 0: add bias; bit 1: ReLU.
    flags: u32,
    // Values per scale for int4 and int2.
    block: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a_src: array<f32>;
@group(0) @binding(2) var<storage, read> b_words: array<u32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> c_out: array<f32>;
@group(0) @binding(5) var<storage, read> b_scales: array<u32>;

const TILE: u32 = 64u;
const STEP: u32 = 16u;

var<workgroup> tile_a: array<array<f32, 16>, 64>;
var<workgroup> tile_b: array<array<f32, 64>, 16>;

// Value of pixel `pixel` (flat over batch, y, x) shifted by tap `tap` (ky·3 + kx, offsets -1..1), channel
// `ch` of a `[batch, h, w, channels]` tensor in `a_src`; zero outside the image (SAME padding).
fn tap_of_a(pixel: u32, tap: u32, ch: u32, channels: u32, sign: i32) -> f32 {
    let hw = p.h * p.w;
    let image = pixel / hw;
    let y = i32((pixel / p.w) % p.h) + sign * (i32(tap / 3u) - 1);
    let x = i32(pixel % p.w) + sign * (i32(tap % 3u) - 1);
    if (y < 0 || y >= i32(p.h) || x < 0 || x >= i32(p.w)) {
        return 0.0;
    }
    return a_src[((image * p.h + u32(y)) * p.w + u32(x)) * channels + ch];
}

fn load_a(row: u32, col: u32) -> f32 {
    if (row >= p.m || col >= p.k) {
        return 0.0;
    }
    switch MODE {
        case 1u: {
            return tap_of_a(row, col / p.cin, col % p.cin, p.cin, 1);
        }
        case 3u: {
            // dx[pixel, ci] gathers dy at pixel − offset for every tap.
            return tap_of_a(row, col / p.cout, col % p.cout, p.cout, -1);
        }
        case 4u: {
            return a_src[col * p.m + row];
        }
        case 5u: {
            return tap_of_a(col, row / p.cin, row % p.cin, p.cin, 1);
        }
        default: {
            return a_src[row * p.k + col];
        }
    }
}

fn half_at(words: u32, odd: bool) -> f32 {
    let pair = unpack2x16float(words);
    return select(pair.x, pair.y, odd);
}

// Value `i` (flat, row-major) of B as stored.
fn weight(i: u32) -> f32 {
    switch DTYPE {
        case 2u: {
            return half_at(b_words[i / 2u], (i & 1u) == 1u);
        }
        case 3u: {
            let q = extractBits(i32(b_words[i / 4u]), 8u * (i % 4u), 8u);
            return f32(q) * bitcast<f32>(b_scales[i % p.n]);
        }
        case 4u: {
            let q = extractBits(i32(b_words[i / 8u]), 4u * (i % 8u), 4u);
            let b = i / p.block;
            return f32(q) * half_at(b_scales[b / 2u], (b & 1u) == 1u);
        }
        case 5u: {
            let q = extractBits(i32(b_words[i / 16u]), 2u * (i % 16u), 2u);
            let b = i / p.block;
            return (f32(q) + 0.5) * half_at(b_scales[b / 2u], (b & 1u) == 1u);
        }
        default: {
            return bitcast<f32>(b_words[i]);
        }
    }
}

fn load_b(row: u32, col: u32) -> f32 {
    if (row >= p.k || col >= p.n) {
        return 0.0;
    }
    switch MODE {
        case 2u: {
            // wᵀ: w is [cin, cout] = [n, k].
            return weight(col * p.k + row);
        }
        case 3u: {
            // w'[(tap, o), ci] = w[(tap · cin + ci) · cout + o].
            let tap = row / p.cout;
            let o = row % p.cout;
            return weight((tap * p.cin + col) * p.cout + o);
        }
        default: {
            return weight(row * p.n + col);
        }
    }
}

@compute @workgroup_size(16, 16)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let row0 = wid.y * TILE;
    let col0 = wid.x * TILE;
    let tid = lid.y * 16u + lid.x;
    var acc: array<array<f32, 4>, 4>;
    for (var k0 = 0u; k0 < p.k; k0 += STEP) {
        for (var i = 0u; i < 4u; i++) {
            let index = tid + i * 256u;
            let r = index / STEP;
            let c = index % STEP;
            tile_a[r][c] = load_a(row0 + r, k0 + c);
            let rb = index / TILE;
            let cb = index % TILE;
            tile_b[rb][cb] = load_b(k0 + rb, col0 + cb);
        }
        workgroupBarrier();
        for (var kk = 0u; kk < STEP; kk++) {
            var av: array<f32, 4>;
            var bv: array<f32, 4>;
            for (var i = 0u; i < 4u; i++) {
                av[i] = tile_a[lid.y * 4u + i][kk];
                bv[i] = tile_b[kk][lid.x + i * 16u];
            }
            for (var i = 0u; i < 4u; i++) {
                for (var j = 0u; j < 4u; j++) {
                    acc[i][j] = fma(av[i], bv[j], acc[i][j]);
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let row = row0 + lid.y * 4u + i;
        for (var j = 0u; j < 4u; j++) {
            let col = col0 + lid.x + j * 16u;
            if (row < p.m && col < p.n) {
                var v = acc[i][j];
                if ((p.flags & 1u) != 0u) {
                    v += bias[col];
                }
                if ((p.flags & 2u) != 0u) {
                    v = max(v, 0.0);
                }
                c_out[row * p.n + col] = v;
            }
        }
    }
}
