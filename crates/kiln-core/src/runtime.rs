//! Running a validated [`Model`]: the whole network on a batch, in two ping-pong buffers.
//!
//! Conv and dense layers with int8, int4 or int2 weights run in integer arithmetic (`kernels::quantized`):
//! their input is quantized per image to 8 bits into the integer scratch, which sits past the activations
//! in the second buffer. f32 and f16 weights are read through [`Values`](crate::format::Values),
//! dequantized inside the kernel loop; the other layers use the reference kernels.
//! [`Session`](crate::session::Session) wraps this with a caller-provided arena; [`forward`] is the same
//! thing over two caller-provided slices.

use crate::format::Model;
use crate::kernels::{self, ActivationScale, Isa, LengthError, QuantizedOutput};
use crate::network::{Layer, Shape};
use crate::parallel::{Parallel, Serial};
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
        let (
            Some(b),
            Layer::Conv2d { filters: cout } | Layer::Conv { filters: cout, .. } | Layer::Dense { units: cout },
        ) = (model.binding(step.index), step.layer)
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
/// activations, and (used in the second buffer only) the integer path's scratch. For a model with static
/// activation scales, the bytes of [`StaticLayout`] instead.
pub fn scratch_len(model: &Model<'_>, n: usize) -> usize {
    if model.has_static_activations() {
        let layout = StaticLayout::new(model, n);
        return layout.first.max(layout.second) / 4;
    }
    activation_len(model, n).saturating_add(integer_scratch_len(integer_needs(model), n))
}

/// The memory of a model with static activation scales, in bytes (each part a multiple of 4):
/// ```text
/// first:  [ ping: n × largest activation u8                                ]
/// second: [ pong: n × largest activation u8                                ]
///         [ scales: n × ActivationScale                                    ]
///         [ per-channel scales and inverses: 2 × largest int4/int2 cout f32 ]
///         [ accumulators: min(REQUANTIZED_ACCUMULATORS, largest output) i32  ]
///         [ logits: n × classes f32                                        ]
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StaticLayout {
    pub buffer: usize,
    pub scales: usize,
    pub channels: usize,
    pub accumulators: usize,
    pub logits: usize,
    /// `buffer`
    pub first: usize,
    /// Everything else.
    pub second: usize,
}

impl StaticLayout {
    pub fn new(model: &Model<'_>, n: usize) -> StaticLayout {
        let buffer = n.saturating_mul(model.max_activation_len()).next_multiple_of(4);
        let scales = n.saturating_mul(core::mem::size_of::<ActivationScale>());
        let channels = 4 * kernels::channel_scratch_len(integer_needs(model).requantized_cout);
        // Enough for one pass of the widest requantizing layer, capped (the kernels take passes that fit).
        let widest = model
            .plan()
            .steps()
            .filter(|s| s.params.is_some())
            .map(|s| n.saturating_mul(s.output.len()))
            .max()
            .unwrap_or(0);
        let accumulators = 4 * widest.next_multiple_of(64).clamp(64, kernels::REQUANTIZED_ACCUMULATORS);
        let logits = n.saturating_mul(model.metadata().classes).saturating_mul(4);
        let second = [buffer, scales, channels, accumulators, logits].iter().fold(0usize, |a, &b| a.saturating_add(b));
        StaticLayout { buffer, scales, channels, accumulators, logits, first: buffer, second }
    }
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
    forward_observed(isa, model, input, n, scratch_a, scratch_b, &mut |_, _| {})
}

/// [`forward_with`], running each integer layer's parts (output pixels or channels) on `parallel`.
pub fn forward_parallel<'s>(
    isa: Isa,
    parallel: &dyn Parallel,
    model: &Model<'_>,
    input: &[f32],
    n: usize,
    scratch_a: &'s mut [f32],
    scratch_b: &'s mut [f32],
) -> Result<&'s [f32], ForwardError> {
    forward_inner(Exec { isa, parallel }, model, input, n, scratch_a, scratch_b, &mut |_, _| {})
}

/// [`forward_with`], reporting each image's dynamic input scale of every integer layer to `observe(k,
/// scales)` (`k` is the layer's index among conv and dense layers): what calibration for static scales
/// records. A model with static scales has none to report.
pub fn forward_observed<'s>(
    isa: Isa,
    model: &Model<'_>,
    input: &[f32],
    n: usize,
    scratch_a: &'s mut [f32],
    scratch_b: &'s mut [f32],
    observe: &mut dyn FnMut(usize, &[ActivationScale]),
) -> Result<&'s [f32], ForwardError> {
    forward_inner(Exec { isa, parallel: &Serial }, model, input, n, scratch_a, scratch_b, observe)
}

/// How layers run: the kernel build, and what runs an integer layer's parts.
#[derive(Clone, Copy)]
pub(crate) struct Exec<'p> {
    pub isa: Isa,
    pub parallel: &'p dyn Parallel,
}

fn forward_inner<'s>(
    exec: Exec<'_>,
    model: &Model<'_>,
    input: &[f32],
    n: usize,
    scratch_a: &'s mut [f32],
    scratch_b: &'s mut [f32],
    observe: &mut dyn FnMut(usize, &[ActivationScale]),
) -> Result<&'s [f32], ForwardError> {
    let needed = scratch_len(model, n);
    for got in [scratch_a.len(), scratch_b.len()] {
        if got < needed {
            return Err(ForwardError::ScratchTooSmall { needed, got });
        }
    }
    let first_len = n * model.input_shape().len();
    kernels::check("input", input.len(), first_len).map_err(|error| ForwardError::Length { layer: 0, error })?;
    if model.has_static_activations() {
        let ping: &mut [u8] = bytemuck::cast_slice_mut(scratch_a);
        quantize_input(model, input, &mut ping[..first_len]);
        return Ok(run_layers_static(exec, model, n, ping, bytemuck::cast_slice_mut(scratch_b))?);
    }
    scratch_a[..first_len].copy_from_slice(input);
    let activations = activation_len(model, n);
    Ok(run_layers_observed(exec, model, n, &mut scratch_a[..activations], scratch_b, observe)?)
}

/// Runs every layer on the `n` images already in `a` (`[n, input_shape]`), ping-ponging between `a` and
/// `b`, and returns the logits in whichever buffer holds them. `a` must hold [`activation_len`] values,
/// `b` [`scratch_len`] (the integer scratch follows its activations).
pub(crate) fn run_layers<'s>(
    exec: Exec<'_>,
    model: &Model<'_>,
    n: usize,
    a: &'s mut [f32],
    b: &'s mut [f32],
) -> Result<&'s mut [f32], ForwardError> {
    run_layers_observed(exec, model, n, a, b, &mut |_, _| {})
}

/// [`run_layers`], calling `observe(k, scales)` with each image's input scale of parametric layer `k`
/// where it runs on integers.
fn run_layers_observed<'s>(
    exec: Exec<'_>,
    model: &Model<'_>,
    n: usize,
    a: &'s mut [f32],
    b: &'s mut [f32],
    observe: &mut dyn FnMut(usize, &[ActivationScale]),
) -> Result<&'s mut [f32], ForwardError> {
    let isa = exec.isa;
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
            // Activations rewrite their input; flatten is free in NHWC, dropout is the identity.
            let values = &mut buffers[step.src_buffer()][..in_len];
            match step.layer {
                Layer::Relu => kernels::relu_in_place(values),
                Layer::Activation(activation) => kernels::activation_in_place(activation, values),
                _ => {}
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
        let integer =
            step.layer.is_linear() && tensors.as_ref().is_some_and(|(w, _)| kernels::runs_on_integers(w.dtype()));
        if integer {
            kernels::quantize_activations(input, n, &mut levels[..in_len], activation_scales).map_err(length)?;
            if let Some(slot) = step.params {
                observe(slot.index, activation_scales);
            }
        }
        let x = &levels[..if integer { in_len } else { 0 }];
        match (step.layer, &tensors) {
            (
                Layer::Conv2d { filters: cout } | Layer::Conv { filters: cout, .. } | Layer::Dense { units: cout },
                Some((weights, bias)),
            ) if integer => {
                let channels =
                    &mut channels[..kernels::channel_scratch_len(if weights.dtype().is_blocked() { cout } else { 0 })];
                let output = QuantizedOutput::F32(output);
                integer_layer(exec, &step, x, activation_scales, n, (weights, bias), channels, output)
                    .map_err(length)?
            }
            (Layer::Conv2d { filters }, Some((weights, bias))) => {
                kernels::conv2d_3x3_same_packed(isa, input, n, h, w, c, weights, bias, filters, output)
                    .map_err(length)?
            }
            (Layer::Dense { units }, Some((weights, bias))) => {
                kernels::dense_packed(isa, input, n, c, weights, bias, units, output).map_err(length)?
            }
            (Layer::Conv { filters, window }, Some((weights, bias))) => {
                kernels::conv2d_packed(isa, input, n, (h, w, c), &window, weights, bias, filters, output)
                    .map_err(length)?
            }
            (Layer::ScaleShift, Some((scale, shift))) => {
                kernels::scale_shift_packed(input, c, scale, shift, output).map_err(length)?
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

/// One conv or dense layer on the integer path: `input` is `[n, step.input]` 8-bit levels with one scale
/// per image; `channels` is the per-channel scratch the weights need.
#[allow(clippy::too_many_arguments)]
fn integer_layer(
    Exec { isa, parallel }: Exec<'_>,
    step: &crate::plan::Step,
    input: &[u8],
    scales: &[ActivationScale],
    n: usize,
    (weights, bias): (&crate::format::Values<'_>, &crate::format::Values<'_>),
    channels: &mut [f32],
    output: QuantizedOutput<'_>,
) -> Result<(), LengthError> {
    let Shape { h, w, c } = step.input;
    match step.layer {
        Layer::Conv2d { filters } => {
            let conv = kernels::conv2d_3x3_same_quantized;
            conv(isa, parallel, input, scales, n, h, w, c, weights, bias, filters, channels, output)
        }
        Layer::Dense { units } => {
            kernels::dense_quantized(isa, parallel, input, scales, n, c, weights, bias, units, channels, output)
        }
        Layer::Conv { filters, window } => {
            let conv = kernels::conv2d_quantized;
            conv(isa, parallel, input, scales, n, (h, w, c), &window, weights, bias, filters, channels, output)
        }
        _ => Ok(()),
    }
}

/// The network input as 8-bit levels on the first layer's static scale.
pub(crate) fn quantize_input(model: &Model<'_>, input: &[f32], out: &mut [u8]) {
    let scale = model.activation_scale(0).unwrap_or_default();
    let inverse = if scale.scale > 0.0 { 1.0 / scale.scale } else { 0.0 };
    for (q, &v) in out.iter_mut().zip(input) {
        *q = kernels::quantized_level(v, inverse, scale.zero);
    }
}

/// [`run_layers`] for a model with static activation scales: every activation is 8-bit levels, each
/// integer layer requantizing its outputs straight onto the next one's input scale, and only the logits
/// are f32. `ping` holds the quantized input; `second` is the rest of [`StaticLayout`].
pub(crate) fn run_layers_static<'s>(
    exec: Exec<'_>,
    model: &Model<'_>,
    n: usize,
    ping: &'s mut [u8],
    second: &'s mut [u8],
) -> Result<&'s mut [f32], ForwardError> {
    let layout = StaticLayout::new(model, n);
    let (pong, rest) = second.split_at_mut(layout.buffer);
    let (scale_bytes, rest) = rest.split_at_mut(layout.scales);
    let (channel_bytes, rest) = rest.split_at_mut(layout.channels);
    let (accumulator_bytes, rest) = rest.split_at_mut(layout.accumulators);
    let logits: &mut [f32] = bytemuck::cast_slice_mut(&mut rest[..layout.logits]);
    let scales: &mut [ActivationScale] = bytemuck::cast_slice_mut(scale_bytes);
    let channels: &mut [f32] = bytemuck::cast_slice_mut(channel_bytes);
    let accumulators: &mut [i32] = bytemuck::cast_slice_mut(accumulator_bytes);
    let plan = model.plan();
    let last_slot = plan.param_layers() - 1;
    let mut current = model.activation_scale(0).unwrap_or_default();
    let mut buffers = [&mut ping[..layout.buffer], pong];
    let mut logits_written = false;
    for step in plan.steps() {
        let (in_len, out_len) = (n * step.input.len(), n * step.output.len());
        let length = |error: LengthError| ForwardError::Length { layer: step.index, error };
        if logits_written {
            // After the last conv or dense layer (validation allows only these two).
            if step.layer == Layer::Relu {
                kernels::relu_in_place(&mut logits[..in_len]);
            }
            continue;
        }
        if step.in_place {
            // Validation lets only ReLU, flatten and dropout through here.
            if step.layer == Layer::Relu {
                kernels::relu_levels_in_place(&mut buffers[step.src_buffer()][..in_len], current.zero as u8);
            }
            continue;
        }
        let [ping, pong] = &mut buffers;
        let (src, dst) = if step.src_buffer() == 0 { (&**ping, &mut **pong) } else { (&**pong, &mut **ping) };
        let input = &src[..in_len];
        let Shape { h, w, c } = step.input;
        match (step.layer, step.params, model.binding(step.index)) {
            (Layer::Conv2d { filters: cout } | Layer::Dense { units: cout }, Some(slot), Some(b)) => {
                let (weights, bias) = (model.tensor(b.weights).values(), model.tensor(b.bias).values());
                scales[..n].fill(current);
                let channels =
                    &mut channels[..kernels::channel_scratch_len(if weights.dtype().is_blocked() { cout } else { 0 })];
                let output = if slot.index < last_slot {
                    current = model.activation_scale(slot.index + 1).unwrap_or_default();
                    QuantizedOutput::Levels {
                        out: &mut dst[..out_len],
                        scale: current,
                        accumulators: &mut accumulators[..],
                    }
                } else {
                    logits_written = true;
                    QuantizedOutput::F32(&mut logits[..out_len])
                };
                integer_layer(exec, &step, input, &scales[..n], n, (&weights, &bias), channels, output)
                    .map_err(length)?
            }
            (layer, _, _) if layer.has_params() => return Err(ForwardError::MissingParams { layer: step.index }),
            (Layer::Pad { top, bottom, left, right }, _, _) => kernels::pad_with(
                input,
                n,
                h,
                w,
                c,
                (top, bottom, left, right),
                current.zero as u8,
                &mut dst[..out_len],
            )
            .map_err(length)?,
            (Layer::MaxPool, _, _) => kernels::maxpool_2x2(input, n, h, w, c, &mut dst[..out_len]).map_err(length)?,
            (Layer::Relu | Layer::Flatten, _, _) => {
                kernels::check("output", out_len, in_len).map_err(length)?;
                dst[..out_len].copy_from_slice(input);
                if step.layer == Layer::Relu {
                    kernels::relu_levels_in_place(&mut dst[..out_len], current.zero as u8);
                }
            }
            (Layer::Conv2d { .. } | Layer::Dense { .. }, _, _) => unreachable!("handled above"),
            (layer, _, _) => return Err(ForwardError::StaticUnsupported { layer: step.index, kind: layer.kind() }),
        }
    }
    Ok(&mut logits[..n * plan.output().len()])
}
