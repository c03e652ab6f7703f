//! Running a validated [`Model`]: the whole network on a batch, in two ping-pong buffers.
//!
//! Conv and dense layers with int8, int4 or int2 weights run in integer arithmetic (`kernels::quantized`):
//! their input is quantized per image to 8 bits into the integer scratch, which sits past the activations
//! in the second buffer. f32 and f16 weights are read through [`Values`](crate::format::Values),
//! dequantized inside the kernel loop; the other layers use the reference kernels.
//! [`Session`](crate::session::Session) wraps this with a caller-provided arena; [`forward`] is the same
//! thing over two caller-provided slices.

use crate::format::Model;
use crate::kernels::{self, ActivationScale, Isa, LengthError};
use crate::network::{Layer, Shape};
use crate::reference::{self, ForwardError};

/// f32 values of each ping-pong buffer's activation region for `n` images.
pub fn activation_len(model: &Model<'_>, n: usize) -> usize {
    n.saturating_mul(model.max_activation_len())
}

/// What the integer path needs: the largest per-image input of a layer it runs, and the largest output
/// channel count of its int4/int2 layers (zero when it runs no layer).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct IntegerNeeds {
    input_len: usize,
    requantized_cout: usize,
}

fn integer_needs(model: &Model<'_>) -> IntegerNeeds {
    let mut needs = IntegerNeeds::default();
    for step in model.plan().steps() {
        let (Some(b), Layer::Conv2d { filters: cout } | Layer::Dense { units: cout }) =
            (model.binding(step.index), step.layer)
        else {
            continue;
        };
        let dtype = model.tensor(b.weights).dtype;
        if kernels::runs_on_integers(dtype) {
            needs.input_len = needs.input_len.max(step.input.len());
            if dtype.is_blocked() {
                needs.requantized_cout = needs.requantized_cout.max(cout);
            }
        }
    }
    needs
}

/// The integer scratch for `n` images, in f32-sized slots:
/// ```text
/// [ activation scales: n × ActivationScale (2 slots each)            ]
/// [ per-channel scales and inverses: 2 × requantized_cout f32         ]
/// [ quantized input: n × input_len u8, rounded up to whole slots      ]
/// ```
fn integer_scratch_len(needs: IntegerNeeds, n: usize) -> usize {
    if needs.input_len == 0 {
        return 0;
    }
    let scales = n.saturating_mul(2);
    let channels = kernels::channel_scratch_len(needs.requantized_cout);
    let levels = n.saturating_mul(needs.input_len).div_ceil(4);
    scales.saturating_add(channels).saturating_add(levels)
}

/// f32 values each of the two scratch buffers of [`forward`] needs to run `model` on `n` images: the
/// activations, and (used in the second buffer only) the integer path's scratch.
pub fn scratch_len(model: &Model<'_>, n: usize) -> usize {
    activation_len(model, n).saturating_add(integer_scratch_len(integer_needs(model), n))
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
    let activations = activation_len(model, n);
    Ok(run_layers(isa, model, n, &mut scratch_a[..activations], scratch_b)?)
}

/// Runs every layer on the `n` images already in `a` (`[n, input_shape]`), ping-ponging between `a` and
/// `b`, and returns the logits in whichever buffer holds them. `a` must hold [`activation_len`] values,
/// `b` [`scratch_len`] (the integer scratch follows its activations).
pub(crate) fn run_layers<'s>(
    isa: Isa,
    model: &Model<'_>,
    n: usize,
    a: &'s mut [f32],
    b: &'s mut [f32],
) -> Result<&'s mut [f32], ForwardError> {
    let plan = model.plan();
    let needs = integer_needs(model);
    let (b, tail) = b.split_at_mut(activation_len(model, n));
    let tail = &mut tail[..integer_scratch_len(needs, n)];
    let (scale_slots, rest) = tail.split_at_mut(if needs.input_len == 0 { 0 } else { 2 * n });
    let (channels, level_slots) = rest.split_at_mut(if needs.input_len == 0 { 0 } else { 2 * needs.requantized_cout });
    let activation_scales: &mut [ActivationScale] = bytemuck::cast_slice_mut(scale_slots);
    let levels: &mut [u8] = bytemuck::cast_slice_mut(level_slots);
    let mut buffers = [&mut a[..], b];
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
        let binding = model.binding(step.index);
        let tensors = binding.map(|b| (model.tensor(b.weights).values(), model.tensor(b.bias).values()));
        let integer = tensors.as_ref().is_some_and(|(w, _)| kernels::runs_on_integers(w.dtype()));
        if integer {
            kernels::quantize_activations(input, n, &mut levels[..in_len], activation_scales).map_err(length)?;
        }
        let x = &levels[..if integer { in_len } else { 0 }];
        match (step.layer, &tensors) {
            (Layer::Conv2d { filters }, Some((weights, bias))) if integer => kernels::conv2d_3x3_same_quantized(
                isa,
                x,
                activation_scales,
                n,
                h,
                w,
                c,
                weights,
                bias,
                filters,
                &mut channels[..kernels::channel_scratch_len(if weights.dtype().is_blocked() { filters } else { 0 })],
                output,
            )
            .map_err(length)?,
            (Layer::Dense { units }, Some((weights, bias))) if integer => kernels::dense_quantized(
                isa,
                x,
                activation_scales,
                n,
                c,
                weights,
                bias,
                units,
                &mut channels[..kernels::channel_scratch_len(if weights.dtype().is_blocked() { units } else { 0 })],
                output,
            )
            .map_err(length)?,
            (Layer::Conv2d { filters }, Some((weights, bias))) => {
                kernels::conv2d_3x3_same_packed(isa, input, n, h, w, c, weights, bias, filters, output)
                    .map_err(length)?
            }
            (Layer::Dense { units }, Some((weights, bias))) => {
                kernels::dense_packed(isa, input, n, c, weights, bias, units, output).map_err(length)?
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
