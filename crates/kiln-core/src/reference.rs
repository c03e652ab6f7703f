//! Whole-network forward pass with the reference kernels and two caller-provided ping-pong buffers.

use core::fmt;

use crate::kernels::{self, LengthError};
use crate::network::{Layer, NetworkError, Shape};
use crate::plan::Plan;

/// The weights and bias of one parametric layer.
#[derive(Clone, Copy, Debug)]
pub struct LayerParams<'a> {
    /// `[kh,kw,in,out]` for a conv, `[in,out]` for a dense layer, `[c]` (the scale) for a scale-shift.
    pub weights: &'a [f32],
    /// `[out]` (a scale-shift's shift)
    pub bias: &'a [f32],
}

/// Why a reference forward pass could not run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForwardError {
    /// The network description is invalid.
    Network(NetworkError),
    /// There are fewer parameter sets than parametric layers; `layer` is the first one without.
    MissingParams { layer: usize },
    /// A parameter, input or scratch buffer has the wrong length.
    Length { layer: usize, error: LengthError },
    /// A scratch buffer is shorter than `batch * max_activation_len`.
    ScratchTooSmall { needed: usize, got: usize },
    /// A model with static activation scales holds a layer the 8-bit path does not run (validation refuses
    /// such files; this guards the runtime all the same).
    StaticUnsupported { layer: usize, kind: &'static str },
}

impl fmt::Display for ForwardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ForwardError::Network(e) => write!(f, "{e}"),
            ForwardError::MissingParams { layer } => write!(f, "layer {layer}: no parameters given"),
            ForwardError::Length { layer, error } => write!(f, "layer {layer}: {error}"),
            ForwardError::ScratchTooSmall { needed, got } => {
                write!(f, "scratch buffer holds {got} values, needs {needed}")
            }
            ForwardError::StaticUnsupported { layer, kind } => {
                write!(f, "layer {layer}: {kind} does not run with static activation scales")
            }
        }
    }
}

impl core::error::Error for ForwardError {}

impl From<NetworkError> for ForwardError {
    fn from(e: NetworkError) -> Self {
        ForwardError::Network(e)
    }
}

/// Runs one layer on a batch of `n` images of shape `input_shape`; returns the output shape.
/// `params` is required for conv, dense and scale-shift layers and ignored otherwise.
pub fn forward_layer(
    index: usize,
    layer: &Layer,
    input_shape: Shape,
    n: usize,
    input: &[f32],
    params: Option<LayerParams<'_>>,
    output: &mut [f32],
) -> Result<Shape, ForwardError> {
    let out_shape = layer.output_shape(index, input_shape)?;
    let Shape { h, w, c } = input_shape;
    let length = |error| ForwardError::Length { layer: index, error };
    let need_params = || params.ok_or(ForwardError::MissingParams { layer: index });
    match *layer {
        Layer::Pad { top, bottom, left, right } => {
            kernels::pad(input, n, h, w, c, (top, bottom, left, right), output).map_err(length)?
        }
        Layer::Conv2d { filters } => {
            let p = need_params()?;
            kernels::conv2d_3x3_same(input, n, h, w, c, p.weights, p.bias, filters, output).map_err(length)?
        }
        Layer::MaxPool => kernels::maxpool_2x2(input, n, h, w, c, output).map_err(length)?,
        Layer::Dense { units } => {
            let p = need_params()?;
            kernels::dense(input, n, c, p.weights, p.bias, units, output).map_err(length)?
        }
        Layer::Relu => kernels::relu(input, output).map_err(length)?,
        Layer::Flatten | Layer::Dropout { .. } => {
            kernels::check("output", output.len(), input.len()).map_err(length)?;
            output.copy_from_slice(input)
        }
        Layer::Conv { filters, window } => {
            let p = need_params()?;
            kernels::conv2d(input, n, (h, w, c), &window, p.weights, p.bias, filters, output).map_err(length)?
        }
        Layer::Pool { kind, window } => kernels::pool(input, n, (h, w, c), kind, &window, output).map_err(length)?,
        Layer::GlobalAvgPool => kernels::global_avg_pool(input, n, (h, w, c), output).map_err(length)?,
        Layer::Activation(activation) => {
            kernels::check("output", output.len(), input.len()).map_err(length)?;
            output.copy_from_slice(input);
            kernels::activation_in_place(activation, output)
        }
        Layer::ScaleShift => {
            let p = need_params()?;
            kernels::scale_shift(input, p.weights, p.bias, output).map_err(length)?
        }
    }
    Ok(out_shape)
}

/// Runs the whole network on `n` images. `params` holds one entry per conv or dense layer, in order.
/// Each scratch buffer needs `n * max_activation_len(layers, input_shape)` values. Returns the logits,
/// `[n, classes]`, as a slice of one of the scratch buffers.
pub fn forward<'s>(
    layers: &[Layer],
    input_shape: Shape,
    n: usize,
    input: &[f32],
    params: &[LayerParams<'_>],
    scratch_a: &'s mut [f32],
    scratch_b: &'s mut [f32],
) -> Result<&'s [f32], ForwardError> {
    forward_integer_path(layers, input_shape, n, input, params, &[], scratch_a, scratch_b)
}

/// How the runtime feeds a parametric layer its input.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LayerInput {
    /// As f32 values (f32 and f16 weights).
    F32,
    /// As 8-bit levels on each image's own range (integer weights, dynamic activations).
    Dynamic,
    /// As 8-bit levels on a stored scale (integer weights, static activations).
    Static(kernels::ActivationScale),
}

/// [`forward`] as the runtime's integer path computes it, in f32: the input of each parametric layer `k`
/// is first replaced by the values of its 8-bit levels as `inputs[k]` says (a missing entry is
/// [`LayerInput::F32`]). Give such layers' weights as the integer path reads them.
#[allow(clippy::too_many_arguments)]
pub fn forward_integer_path<'s>(
    layers: &[Layer],
    input_shape: Shape,
    n: usize,
    input: &[f32],
    params: &[LayerParams<'_>],
    inputs: &[LayerInput],
    scratch_a: &'s mut [f32],
    scratch_b: &'s mut [f32],
) -> Result<&'s [f32], ForwardError> {
    let plan = Plan::new(layers, input_shape)?;
    let max = n * plan.max_activation_len();
    for got in [scratch_a.len(), scratch_b.len()] {
        if got < max {
            return Err(ForwardError::ScratchTooSmall { needed: max, got });
        }
    }
    let first_len = n * input_shape.len();
    kernels::check("input", input.len(), first_len).map_err(|error| ForwardError::Length { layer: 0, error })?;
    scratch_a[..first_len].copy_from_slice(input);

    // The reference runs every layer out of place, so it tests the in-place paths of the fast ones.
    let (mut src, mut dst) = (scratch_a, scratch_b);
    for step in plan.steps() {
        let p = match step.params {
            Some(slot) => {
                Some(params.get(slot.index).copied().ok_or(ForwardError::MissingParams { layer: step.index })?)
            }
            None => None,
        };
        let (in_len, out_len) = (n * step.input.len(), n * step.output.len());
        match step.params.and_then(|slot| inputs.get(slot.index)) {
            Some(LayerInput::Dynamic) => kernels::fake_quantize_in_place(&mut src[..in_len], n),
            Some(&LayerInput::Static(scale)) => {
                let inverse = 1.0 / scale.scale;
                for v in &mut src[..in_len] {
                    *v = (kernels::quantized_level(*v, inverse, scale.zero) as i32 - scale.zero) as f32 * scale.scale;
                }
            }
            _ => {}
        }
        forward_layer(step.index, &step.layer, step.input, n, &src[..in_len], p, &mut dst[..out_len])?;
        core::mem::swap(&mut src, &mut dst);
    }
    Ok(&src[..n * plan.output().len()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiny_network_known_answer() {
        // 2x2 image -> flatten -> dense 1 (sum) -> relu.
        let layers = [Layer::Flatten, Layer::Dense { units: 1 }, Layer::Relu];
        let params = [LayerParams { weights: &[1.0, 1.0, 1.0, -1.0], bias: &[0.5] }];
        let (mut a, mut b) = ([0.0; 8], [0.0; 8]);
        let out = forward(
            &layers,
            Shape::new(2, 2, 1),
            2,
            &[1.0, 2.0, 3.0, 4.0, 0.0, 0.0, 0.0, 9.0],
            &params,
            &mut a,
            &mut b,
        )
        .unwrap();
        assert_eq!(out, &[2.5, 0.0]);
    }

    #[test]
    fn missing_params_is_an_error() {
        let layers = [Layer::Flatten, Layer::Dense { units: 1 }];
        let (mut a, mut b) = ([0.0; 4], [0.0; 4]);
        let err = forward(&layers, Shape::new(2, 2, 1), 1, &[0.0; 4], &[], &mut a, &mut b).unwrap_err();
        assert_eq!(err, ForwardError::MissingParams { layer: 1 });
    }

    #[test]
    fn small_scratch_is_an_error() {
        let layers = [Layer::Conv2d { filters: 4 }];
        let (mut a, mut b) = ([0.0; 4], [0.0; 4]);
        let err = forward(&layers, Shape::new(2, 2, 1), 1, &[0.0; 4], &[], &mut a, &mut b).unwrap_err();
        assert_eq!(err, ForwardError::ScratchTooSmall { needed: 16, got: 4 });
    }
}
