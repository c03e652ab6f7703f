//! tract, the pure-Rust ONNX runtime, as a peer in Kiln's benchmarks (`kiln bench infer MODEL.onnx`): a file
//! compiled by tract for a fixed batch, run on f32 NHWC images.

use std::path::Path;

use tract_onnx::prelude::*;

/// An ONNX file, optimized by tract for `batch` images of `[h, w, c]`.
pub struct TractPlan {
    plan: std::sync::Arc<TypedRunnableModel>,
    shape: [usize; 4],
}

impl std::fmt::Debug for TractPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TractPlan").field("shape", &self.shape).finish()
    }
}

impl TractPlan {
    /// `input` is the file's input shape per image as Kiln's importer reads it (`[h, w, c]`, NHWC).
    pub fn new(path: &Path, batch: usize, input: [usize; 3]) -> Result<TractPlan, String> {
        let shape = [batch, input[0], input[1], input[2]];
        let plan = tract_onnx::onnx()
            .model_for_path(path)
            .and_then(|m| m.with_input_fact(0, f32::fact(shape).into()))
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .map_err(|e| format!("{}: tract: {e:#}", path.display()))?;
        Ok(TractPlan { plan, shape })
    }

    /// The logits of `images` (`[batch, h, w, c]` f32).
    pub fn run(&self, images: &[f32]) -> Result<Vec<f32>, String> {
        let input = Tensor::from_shape(&self.shape, images).map_err(|e| format!("tract input: {e}"))?;
        let out = self.plan.run(tvec!(input.into())).map_err(|e| format!("tract: {e:#}"))?;
        let logits = out[0].to_plain_array_view::<f32>().map_err(|e| format!("tract output: {e}"))?;
        Ok(logits.iter().copied().collect())
    }
}

/// The tract version benchmarks name.
pub const TRACT_VERSION: &str = "tract-onnx 0.23";
