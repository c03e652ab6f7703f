//! One small struct per dispatch, one module per WGSL file: each op holds its pipeline, bind group, uniform
//! parameters and grid, made once, and knows its own per-image shape, so a new batch size is one
//! [`set_batch`](Dispatch::set_batch) call (a uniform write, no new objects).
//!
//! Parameters travel in uniform buffers rather than push constants, which WebGPU does not have. Each
//! uniform struct's size is checked at compile time against its WGSL twin ([`wgsl_struct_size`]).

pub mod gemm;
pub mod layers;
pub mod loss;
pub mod optimizer;

use crate::context::{Gpu, GpuError};

/// Invocations per workgroup of the element-wise kernels.
pub(crate) const LANES: u32 = 256;
/// Largest workgroup count in one grid dimension (WebGPU's default limit).
const MAX_GROUPS: u32 = 65_535;

/// A grid covering `count` workgroups within the per-dimension limit.
pub(crate) fn grid(count: u32) -> (u32, u32) {
    let count = count.max(1);
    let x = count.min(MAX_GROUPS);
    (x, count.div_ceil(x))
}

/// One dispatch: pipeline, bind group, parameters, grid.
#[derive(Debug)]
pub(crate) struct Op {
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    params: wgpu::Buffer,
    groups: (u32, u32),
}

impl Op {
    pub(crate) fn new(
        gpu: &Gpu,
        label: &'static str,
        pipeline: &wgpu::ComputePipeline,
        params: &[u8],
        buffers: &[(u32, &wgpu::Buffer)],
        groups: (u32, u32),
    ) -> Result<Op, GpuError> {
        Self::with_layout(gpu, label, pipeline, &pipeline.get_bind_group_layout(0), params, buffers, groups)
    }

    pub(crate) fn with_layout(
        gpu: &Gpu,
        label: &'static str,
        pipeline: &wgpu::ComputePipeline,
        layout: &wgpu::BindGroupLayout,
        params: &[u8],
        buffers: &[(u32, &wgpu::Buffer)],
        groups: (u32, u32),
    ) -> Result<Op, GpuError> {
        gpu.scoped(|| {
            let params_buffer = gpu.uniform(label, params);
            let mut entries = vec![wgpu::BindGroupEntry { binding: 0, resource: params_buffer.as_entire_binding() }];
            entries.extend(
                buffers
                    .iter()
                    .map(|&(binding, buffer)| wgpu::BindGroupEntry { binding, resource: buffer.as_entire_binding() }),
            );
            let bind_group = gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(label),
                layout,
                entries: &entries,
            });
            Op { pipeline: pipeline.clone(), bind_group, params: params_buffer, groups }
        })
    }

    /// Records the dispatch into `pass`.
    pub(crate) fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        pass.dispatch_workgroups(self.groups.0, self.groups.1, 1);
    }

    /// New parameters and grid (a different batch size): a queue write, no new objects.
    pub(crate) fn update(&mut self, queue: &wgpu::Queue, params: &[u8], groups: (u32, u32)) {
        queue.write_buffer(&self.params, 0, params);
        self.groups = groups;
    }

    pub(crate) fn groups(&self) -> (u32, u32) {
        self.groups
    }
}

/// Any op that runs once per batch, in the order recorded.
#[derive(Debug)]
pub(crate) enum Dispatch {
    Gemm(gemm::GemmOp),
    Layer(layers::LayerOp),
    ColumnSums(loss::ColumnSumsOp),
    SoftmaxXent(loss::SoftmaxXentOp),
}

impl Dispatch {
    /// Re-targets the op at `batch` images.
    pub(crate) fn set_batch(&mut self, queue: &wgpu::Queue, batch: usize) {
        match self {
            Dispatch::Gemm(op) => op.set_batch(queue, batch),
            Dispatch::Layer(op) => op.set_batch(queue, batch),
            Dispatch::ColumnSums(op) => op.set_batch(queue, batch),
            Dispatch::SoftmaxXent(op) => op.set_batch(queue, batch),
        }
    }

    pub(crate) fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        match self {
            Dispatch::Gemm(op) => op.encode(pass),
            Dispatch::Layer(op) => op.encode(pass),
            Dispatch::ColumnSums(op) => op.encode(pass),
            Dispatch::SoftmaxXent(op) => op.encode(pass),
        }
    }
}

/// Bytes of the WGSL struct `name` in `source`, counted at compile time: 4 per `u32`/`i32`/`f32` field.
/// Every uniform struct here is made of those, so this is its size; anything else fails the build.
pub(crate) const fn wgsl_struct_size(source: &str, name: &str) -> usize {
    let (src, name) = (source.as_bytes(), name.as_bytes());
    // Find "struct NAME {".
    let mut at = 0;
    let start = loop {
        assert!(at + 7 + name.len() < src.len(), "WGSL struct not found");
        if starts_with(src, at, b"struct ") && starts_with(src, at + 7, name) {
            let mut brace = at + 7 + name.len();
            while src[brace] == b' ' {
                brace += 1;
            }
            if src[brace] == b'{' {
                break brace + 1;
            }
        }
        at += 1;
    };
    // Count the fields' scalar types up to the closing brace, skipping `//` comments.
    let (mut i, mut bytes) = (start, 0);
    while src[i] != b'}' {
        if starts_with(src, i, b"//") {
            while src[i] != b'\n' {
                i += 1;
            }
        } else if src[i] == b':' {
            let mut t = i + 1;
            while src[t] == b' ' {
                t += 1;
            }
            assert!(
                starts_with(src, t, b"u32,") || starts_with(src, t, b"i32,") || starts_with(src, t, b"f32,"),
                "a uniform field that is not a 4-byte scalar"
            );
            bytes += 4;
        }
        i += 1;
    }
    bytes
}

const fn starts_with(src: &[u8], at: usize, prefix: &[u8]) -> bool {
    if at + prefix.len() > src.len() {
        return false;
    }
    let mut i = 0;
    while i < prefix.len() {
        if src[at + i] != prefix[i] {
            return false;
        }
        i += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::wgsl_struct_size;

    #[test]
    fn counts_scalar_fields_and_skips_comments() {
        let src = "struct Other { a: u32, }\nstruct Params {\n    // a: comment: u32,\n    x: u32,\n    y: f32,\n}\n";
        assert_eq!(wgsl_struct_size(src, "Params"), 8);
        assert_eq!(wgsl_struct_size(src, "Other"), 4);
    }
}
