//! Running a validated [`Model`]: the whole network on a batch, in two ping-pong buffers.
//!
//! Conv and dense layers read their weights from the file through [`Values`](crate::format::Values),
//! dequantizing inside the kernel loop; the other layers use the reference kernels. [`Session`](crate::session::Session)
//! wraps this with a caller-provided arena; [`forward`] is the same thing over two caller-provided slices.

use crate::format::Model;
use crate::kernels::{self, Isa, LengthError};
use crate::network::{Layer, Shape};
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
    let plan = model.plan();
    let mut buffers = [a, b];
    for step in plan.steps() {
        let (in_len, out_len) = (n * step.input.len(), n * step.output.len());
        if step.in_place {
            // ReLU rewrites its input; flatten is free in NHWC.
            if step.layer == Layer::Relu {
                kernels::relu_in_place(&mut buffers[step.src_buffer()][..in_len]);
            }
            continue;
        }
        let [ping, pong] = &mut buffers;
        let (src, dst) = if step.src_buffer() == 0 { (&**ping, &mut **pong) } else { (&**pong, &mut **ping) };
        let (input, output) = (&src[..in_len], &mut dst[..out_len]);
        let length = |error: LengthError| ForwardError::Length { layer: step.index, error };
        let Shape { h, w, c } = step.input;
        match (step.layer, model.binding(step.index)) {
            (Layer::Conv2d { filters }, Some(b)) => {
                let (weights, bias) = (model.tensor(b.weights), model.tensor(b.bias));
                kernels::conv2d_3x3_same_packed(
                    isa,
                    input,
                    n,
                    h,
                    w,
                    c,
                    &weights.values(),
                    &bias.values(),
                    filters,
                    output,
                )
                .map_err(length)?
            }
            (Layer::Dense { units }, Some(b)) => {
                let (weights, bias) = (model.tensor(b.weights), model.tensor(b.bias));
                kernels::dense_packed(isa, input, n, c, &weights.values(), &bias.values(), units, output)
                    .map_err(length)?
            }
            (layer, _) if layer.has_params() => return Err(ForwardError::MissingParams { layer: step.index }),
            (layer, _) => {
                reference::forward_layer(step.index, &layer, step.input, n, input, None, output)?;
            }
        }
    }
    let [ping, pong] = buffers;
    let logits = if plan.output_buffer() == 0 { ping } else { pong };
    Ok(&mut logits[..n * plan.output().len()])
}
