//! Running a validated [`Model`]: the whole network on a batch, in two ping-pong buffers.
//!
//! Conv and dense layers read their weights from the file through [`Values`](crate::format::Values),
//! dequantizing inside the kernel loop; the other layers use the reference kernels. [`Session`](crate::session::Session)
//! wraps this with a caller-provided arena; [`forward`] is the same thing over two caller-provided slices.

use crate::format::Model;
use crate::kernels::{self, Isa, LengthError};
use crate::reference::{self, ForwardError};

/// Values each of the two scratch buffers needs to run `model` on `n` images.
pub fn scratch_len(model: &Model<'_>, n: usize) -> usize {
    n.saturating_mul(model.max_activation_len())
}

/// Bytes of memory [`forward`] needs besides the model file: its two scratch buffers.
pub fn arena_bytes(model: &Model<'_>, n: usize) -> usize {
    scratch_len(model, n).saturating_mul(2 * core::mem::size_of::<f32>())
}

/// Runs `model` on `n` images (`input` is `[n, input_shape]`, already normalised) with the fastest kernels
/// this CPU has, and returns the logits, `[n, classes]`, as a slice of one of the scratch buffers. Each
/// buffer needs [`scratch_len`] values.
pub fn forward<'s>(
    model: &Model<'_>,
    input: &[f32],
    n: usize,
    scratch_a: &'s mut [f32],
    scratch_b: &'s mut [f32],
) -> Result<&'s [f32], ForwardError> {
    forward_with(Isa::best(), model, input, n, scratch_a, scratch_b)
}

/// [`forward`] with a chosen kernel build (the portable one if this CPU lacks `isa`).
pub fn forward_with<'s>(
    isa: Isa,
    model: &Model<'_>,
    input: &[f32],
    n: usize,
    scratch_a: &'s mut [f32],
    scratch_b: &'s mut [f32],
) -> Result<&'s [f32], ForwardError> {
    let needed = scratch_len(model, n);
    for got in [scratch_a.len(), scratch_b.len()] {
        if got < needed {
            return Err(ForwardError::ScratchTooSmall { needed, got });
        }
    }
    let first_len = n * model.input_shape().len();
    kernels::check("input", input.len(), first_len).map_err(|error| ForwardError::Length { layer: 0, error })?;
    scratch_a[..first_len].copy_from_slice(input);
    Ok(run_layers(isa, model, n, scratch_a, scratch_b)?)
}

/// Runs every layer on the `n` images already in `a` (`[n, input_shape]`), ping-ponging between `a` and
/// `b`, and returns the logits in whichever buffer holds them. Both buffers must hold [`scratch_len`].
pub(crate) fn run_layers<'s>(
    isa: Isa,
    model: &Model<'_>,
    n: usize,
    a: &'s mut [f32],
    b: &'s mut [f32],
) -> Result<&'s mut [f32], ForwardError> {
    let mut shape = model.input_shape();
    let (mut src, mut dst) = (a, b);
    for (i, layer) in model.layers().iter().enumerate() {
        let out_shape = layer.output_shape(i, shape)?;
        // In place, no copy between the buffers: ReLU rewrites its input, and flatten is free in NHWC.
        if *layer == crate::Layer::Relu {
            kernels::relu_in_place(&mut src[..n * shape.len()]);
        }
        if matches!(layer, crate::Layer::Relu | crate::Layer::Flatten) {
            shape = out_shape;
            continue;
        }
        let (input, output) = (&src[..n * shape.len()], &mut dst[..n * out_shape.len()]);
        let length = |error: LengthError| ForwardError::Length { layer: i, error };
        match (layer, model.binding(i)) {
            (crate::Layer::Conv2d { filters }, Some(b)) => {
                let (w, bias) = (model.tensor(b.weights), model.tensor(b.bias));
                let (h, w_, c) = (shape.h, shape.w, shape.c);
                kernels::conv2d_3x3_same_packed(isa, input, n, h, w_, c, &w.values(), &bias.values(), *filters, output)
                    .map_err(length)?
            }
            (crate::Layer::Dense { units }, Some(b)) => {
                let (w, bias) = (model.tensor(b.weights), model.tensor(b.bias));
                kernels::dense_packed(isa, input, n, shape.c, &w.values(), &bias.values(), *units, output)
                    .map_err(length)?
            }
            (layer, _) if layer.has_params() => return Err(ForwardError::MissingParams { layer: i }),
            (layer, _) => {
                reference::forward_layer(i, layer, shape, n, input, None, output)?;
            }
        }
        core::mem::swap(&mut src, &mut dst);
        shape = out_shape;
    }
    Ok(&mut src[..n * shape.len()])
}
