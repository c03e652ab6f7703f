//! A network with its parameters, and the forward and backward passes over the whole of it.

use std::time::Instant;

use kiln_core::network::{Layer, NetworkError, PoolKind, Shape};
use kiln_core::plan::Step;

use crate::config::InitChoice;
use crate::layers::elementwise::{self, ScaleShift};
use crate::layers::pool::{GlobalAvgPool, Pool};
use crate::layers::{conv2d::Conv2d, dense::Dense, loss, maxpool::MaxPool, pad::Pad, relu};
use crate::network::Network;
use crate::rng::{Purpose, stream};

/// A named parameter tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// `conv1/weights`, `conv1/bias`, ..., `dense2/bias`.
    pub name: String,
    pub dims: Vec<usize>,
    pub data: Vec<f32>,
}

/// A network plus its parameters. `params` is a flat parameter list in the plan's convention: parametric
/// layer `k` owns `params[2k]` (weights) and `params[2k + 1]` (bias), see [`kiln_core::plan::ParamSlot`].
#[derive(Clone, Debug)]
pub struct Model {
    pub network: Network,
    pub params: Vec<Tensor>,
    /// The network's plan, one step per layer. Layer `i` reads activation `steps[i].src` and writes
    /// `steps[i].dst`; the workspace keeps every activation, since the backward pass reads them (ReLU and
    /// flatten work in place, which saves a copy of every conv's output per step).
    steps: Vec<Step>,
    /// The output shape (`[classes]`) and the number of activations (the last holds the logits).
    output: Shape,
    activations: usize,
}

/// What [`Model::forward_probed`] shows each step: the step, its input and its output.
pub type Probe<'p> = dyn FnMut(&Step, &[f32], &[f32]) + 'p;

/// Buffers for one batch size: the activations kept for the backward pass and two gradient buffers.
#[derive(Debug, Default)]
pub struct Workspace {
    batch: usize,
    /// Activation buffers: layer `i` reads `acts[steps[i].src]`, `[batch, steps[i].input]`.
    acts: Vec<Vec<f32>>,
    /// im2col scratch shared by every conv layer: one chunk of images at a time.
    col: Vec<f32>,
    /// Per-chunk weight-gradient slots shared by every conv layer.
    partials: Vec<f32>,
    /// Per max-pool layer: the winners `[batch, output]`.
    argmax: Vec<Vec<u8>>,
    /// Per dropout layer while training: each value's factor `[batch, shape]` (0 or `1 / (1 - rate)`).
    masks: Vec<Vec<f32>>,
    /// Set while training with dropout: the seed of this pass's masks.
    dropout_seed: Option<u64>,
    /// Ping-pong gradient buffers, `[batch * largest activation]` each.
    grad_a: Vec<f32>,
    grad_b: Vec<f32>,
    /// Per layer: seconds spent in forward and backward, summed, when profiling is on.
    timings: Option<Vec<LayerTiming>>,
}

/// Time spent in one layer, summed over the passes since profiling was turned on.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LayerTiming {
    pub forward: f64,
    pub backward: f64,
}

impl Model {
    /// Builds a model with freshly initialised weights (zero biases) from `seed`.
    pub fn new(network: Network, init: InitChoice, seed: u64) -> Result<Self, NetworkError> {
        let mut model = Self::zeroed(network)?;
        let mut rng = stream(seed, Purpose::Init, 0);
        let last = model.steps.iter().rev().find_map(|s| s.params);
        for step in &model.steps {
            let Some(slot) = step.params else { continue };
            let (fan_in, fan_out) = match step.layer {
                Layer::Conv2d { filters } => (9 * step.input.c, 9 * filters),
                Layer::Conv { filters, window } => (window.taps() * step.input.c, window.taps() * filters),
                Layer::Dense { units } => (step.input.c, units),
                _ => {
                    // A scale-shift starts as the identity.
                    model.params[slot.weights()].data.fill(1.0);
                    continue;
                }
            };
            init.for_layer(Some(slot) == last).fill(&mut model.params[slot.weights()].data, fan_in, fan_out, &mut rng);
        }
        Ok(model)
    }

    /// A model with all parameters zero (to be filled from a file).
    pub fn zeroed(network: Network) -> Result<Self, NetworkError> {
        let mut params = Vec::new();
        for p in network.param_layers()? {
            debug_assert_eq!(params.len(), p.slot.weights());
            let weights_len = p.weight_dims.iter().product();
            params.push(Tensor {
                name: format!("{}/weights", p.scope),
                dims: p.weight_dims,
                data: vec![0.0; weights_len],
            });
            params.push(Tensor {
                name: format!("{}/bias", p.scope),
                data: vec![0.0; p.bias_dims[0]],
                dims: p.bias_dims,
            });
        }
        let plan = network.plan()?;
        let (steps, output, activations) = (plan.steps().collect(), plan.output(), plan.activations());
        Ok(Model { network, params, steps, output, activations })
    }

    pub fn input_shape(&self) -> Shape {
        self.network.input
    }

    pub fn classes(&self) -> usize {
        self.output.len()
    }

    /// The plan's steps, one per layer.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// Runs the network on `batch` images (`input`: `[batch, 28, 28, 1]`) and returns the logits
    /// `[batch, classes]`. Keeps what the backward pass needs in `ws`.
    pub fn forward<'w>(&self, ws: &'w mut Workspace, input: &[f32], batch: usize) -> &'w [f32] {
        ws.dropout_seed = None;
        self.forward_inner(ws, input, batch, None)
    }

    /// [`Model::forward`] that shows `probe` each step's input and output (`[batch, step.input]` and `[batch,
    /// step.output]`) as soon as the step has written it, before any in-place activation that follows
    /// rewrites it: conv and dense outputs are seen before their ReLU, and every step's input after the
    /// activations before it. In-place steps are not shown (their output is the next probe's input).
    pub fn forward_probed<'w>(
        &self,
        ws: &'w mut Workspace,
        input: &[f32],
        batch: usize,
        probe: &mut Probe<'_>,
    ) -> &'w [f32] {
        ws.dropout_seed = None;
        self.forward_inner(ws, input, batch, Some(probe))
    }

    /// [`Model::forward`] for a training step: dropout layers drop values, with masks drawn from `seed`.
    pub fn forward_train<'w>(&self, ws: &'w mut Workspace, input: &[f32], batch: usize, seed: u64) -> &'w [f32] {
        ws.dropout_seed = Some(seed);
        self.forward_inner(ws, input, batch, None)
    }

    fn forward_inner<'w>(
        &self,
        ws: &'w mut Workspace,
        input: &[f32],
        batch: usize,
        mut probe: Option<&mut Probe<'_>>,
    ) -> &'w [f32] {
        ws.prepare(self, batch);
        ws.acts[0][..input.len()].copy_from_slice(input);
        let n = batch;
        for step in &self.steps {
            let started = ws.timings.is_some().then(Instant::now);
            let Shape { h, w, c } = step.input;
            if step.in_place {
                // Activations rewrite their input; flatten has nothing to do.
                let values = &mut ws.acts[step.dst][..n * step.input.len()];
                match step.layer {
                    Layer::Relu => relu::forward_in_place(values),
                    Layer::Activation(a) => elementwise::activation_forward(a, values),
                    Layer::Dropout { rate } => {
                        let mask = &mut ws.masks[step.index];
                        mask.resize(values.len(), 0.0);
                        match ws.dropout_seed {
                            Some(seed) => {
                                let mut rng = stream(seed, Purpose::Dropout, step.index as u64);
                                elementwise::dropout_forward(rate.get(), values, mask, &mut rng)
                            }
                            None => mask.fill(1.0),
                        }
                    }
                    _ => {}
                }
            } else {
                let (before, after) = ws.acts.split_at_mut(step.dst);
                let (x, y) = (&before[step.src][..], &mut after[0][..]);
                match step.layer {
                    Layer::Pad { top, bottom, left, right } => {
                        Pad { n, h, w, c, top, bottom, left, right }.forward(x, y);
                    }
                    Layer::Conv2d { filters } => {
                        let (weights, bias) = self.layer_params(step);
                        Conv2d::same_3x3(n, h, w, c, filters).forward(x, weights, bias, &mut ws.col, y);
                    }
                    Layer::MaxPool => MaxPool { n, h, w, c }.forward(x, y, &mut ws.argmax[step.index]),
                    Layer::Dense { units } => {
                        let (weights, bias) = self.layer_params(step);
                        Dense { n, cin: c, cout: units }.forward(x, weights, bias, y);
                    }
                    Layer::Conv { filters, window } => {
                        let (weights, bias) = self.layer_params(step);
                        let conv = Conv2d { n, h, w, cin: c, cout: filters, window };
                        conv.forward(x, weights, bias, &mut ws.col, y);
                    }
                    Layer::Pool { kind, window } => {
                        Pool { n, h, w, c, kind, window }.forward(x, y, &mut ws.argmax[step.index])
                    }
                    Layer::GlobalAvgPool => GlobalAvgPool { n, h, w, c }.forward(x, y),
                    Layer::ScaleShift => {
                        let (scale, shift) = self.layer_params(step);
                        ScaleShift { pixels: n * h * w, c }.forward(x, scale, shift, y)
                    }
                    Layer::Relu | Layer::Flatten | Layer::Activation(_) | Layer::Dropout { .. } => {
                        unreachable!("element-wise layers and flatten run in place")
                    }
                }
                if let Some(probe) = probe.as_mut() {
                    probe(step, &x[..n * step.input.len()], &y[..n * step.output.len()]);
                }
            }
            if let (Some(t), Some(started)) = (ws.timings.as_mut(), started) {
                t[step.index].forward += started.elapsed().as_secs_f64();
            }
        }
        &ws.acts[self.activations - 1][..batch * self.classes()]
    }

    /// The weights and bias of a conv or dense step.
    fn layer_params(&self, step: &Step) -> (&[f32], &[f32]) {
        let slot = step.params.expect("conv and dense layers have parameters");
        (&self.params[slot.weights()].data, &self.params[slot.bias()].data)
    }

    /// Back-propagates `dlogits` (`[batch, classes]`) through the last [`Model::forward`] and writes the
    /// gradient of every parameter into `grads` (same order and lengths as `params`).
    pub fn backward(&self, ws: &mut Workspace, dlogits: &[f32], grads: &mut [Vec<f32>]) {
        let n = ws.batch;
        // Layers up to the first parametric one need no input gradient: nothing before them learns.
        let first_param = self.steps.iter().position(|s| s.params.is_some()).unwrap_or(self.steps.len());
        let mut grad = std::mem::take(&mut ws.grad_a);
        let mut spare = std::mem::take(&mut ws.grad_b);
        grad[..dlogits.len()].copy_from_slice(dlogits);
        for step in self.steps[first_param..].iter().rev() {
            let Shape { h, w, c } = step.input;
            let (in_len, out_len) = (n * step.input.len(), n * step.output.len());
            let want_input_grad = step.index > first_param;
            let started = ws.timings.is_some().then(Instant::now);
            let dout = &grad[..out_len];
            let dinput = &mut spare[..in_len];
            let input = &ws.acts[step.src][..in_len];
            match step.layer {
                Layer::Pad { top, bottom, left, right } => {
                    Pad { n, h, w, c, top, bottom, left, right }.backward(dout, dinput);
                }
                Layer::Conv2d { filters: cout } | Layer::Conv { filters: cout, .. } => {
                    let window = step.layer.conv_window().expect("a conv");
                    let slot = step.params.expect("conv has parameters");
                    let (gw, gb) = grads.split_at_mut(slot.bias());
                    Conv2d { n, h, w, cin: c, cout, window }.backward(
                        input,
                        dout,
                        &self.params[slot.weights()].data,
                        &mut ws.col,
                        &mut ws.partials,
                        &mut gw[slot.weights()],
                        &mut gb[0],
                        want_input_grad.then_some(dinput),
                    );
                }
                Layer::MaxPool => MaxPool { n, h, w, c }.backward(dout, &ws.argmax[step.index], dinput),
                Layer::Dense { units } => {
                    let slot = step.params.expect("dense has parameters");
                    let (gw, gb) = grads.split_at_mut(slot.bias());
                    Dense { n, cin: c, cout: units }.backward(
                        input,
                        dout,
                        &self.params[slot.weights()].data,
                        &mut gw[slot.weights()],
                        &mut gb[0],
                        want_input_grad.then_some(dinput),
                    );
                }
                // In place: ReLU's gradient is masked by its output; flatten's is the same bytes.
                Layer::Relu => relu::backward_in_place(&ws.acts[step.dst][..out_len], &mut grad[..out_len]),
                Layer::Activation(a) => {
                    elementwise::activation_backward(a, &ws.acts[step.dst][..out_len], &mut grad[..out_len])
                }
                Layer::Dropout { .. } => elementwise::dropout_backward(&ws.masks[step.index], &mut grad[..out_len]),
                Layer::Flatten => {}
                Layer::Pool { kind, window } => {
                    Pool { n, h, w, c, kind, window }.backward(dout, &ws.argmax[step.index], dinput)
                }
                Layer::GlobalAvgPool => GlobalAvgPool { n, h, w, c }.backward(dout, dinput),
                Layer::ScaleShift => {
                    let slot = step.params.expect("scale-shift has parameters");
                    let (gw, gb) = grads.split_at_mut(slot.bias());
                    ScaleShift { pixels: n * h * w, c }.backward(
                        input,
                        dout,
                        &self.params[slot.weights()].data,
                        &mut gw[slot.weights()],
                        &mut gb[0],
                        want_input_grad.then_some(dinput),
                    );
                }
            }
            if !step.in_place {
                std::mem::swap(&mut grad, &mut spare);
            }
            if let (Some(t), Some(started)) = (ws.timings.as_mut(), started) {
                t[step.index].backward += started.elapsed().as_secs_f64();
            }
        }
        ws.grad_a = grad;
        ws.grad_b = spare;
    }

    /// Lengths of the parameter tensors, in order.
    pub fn param_lens(&self) -> Vec<usize> {
        self.params.iter().map(|t| t.data.len()).collect()
    }

    /// One forward pass plus the loss, without keeping gradients: returns the score and fills
    /// `predictions` (`[batch]`) with the argmax classes if given.
    pub fn score(
        &self,
        ws: &mut Workspace,
        input: &[f32],
        labels: &[u8],
        predictions: Option<&mut [u8]>,
    ) -> loss::BatchScore {
        let classes = self.classes();
        let logits = self.forward(ws, input, labels.len());
        if let Some(predictions) = predictions {
            for (p, row) in predictions.iter_mut().zip(logits.chunks_exact(classes)) {
                *p = loss::argmax(row) as u8;
            }
        }
        loss::softmax_cross_entropy(logits, labels, classes, None)
    }
}

impl Workspace {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts (or restarts) timing every layer's forward and backward pass.
    pub fn start_profiling(&mut self, layers: usize) {
        self.timings = Some(vec![LayerTiming::default(); layers]);
    }

    /// Per-layer times since [`Workspace::start_profiling`], if it was called.
    pub fn timings(&self) -> Option<&[LayerTiming]> {
        self.timings.as_deref()
    }

    /// Sizes every buffer for `batch` images (reusing memory when the batch shrinks).
    fn prepare(&mut self, model: &Model, batch: usize) {
        let layers = model.steps.len();
        if self.acts.len() != model.activations || self.argmax.len() != layers {
            self.acts = vec![Vec::new(); model.activations];
            self.argmax = vec![Vec::new(); layers];
            self.masks = vec![Vec::new(); layers];
        }
        self.batch = batch;
        let mut largest = model.input_shape().len();
        let (mut col_len, mut partials_len) = (0, 0);
        self.acts[0].resize(batch * model.input_shape().len(), 0.0);
        for step in &model.steps {
            largest = largest.max(step.output.len());
            self.acts[step.dst].resize(batch * step.output.len(), 0.0);
            let input = step.input;
            match step.layer {
                Layer::Conv2d { filters } | Layer::Conv { filters, .. } => {
                    let window = step.layer.conv_window().expect("a conv");
                    let conv = Conv2d { n: batch, h: input.h, w: input.w, cin: input.c, cout: filters, window };
                    col_len = col_len.max(conv.col_len());
                    partials_len = partials_len.max(conv.partials_len());
                }
                Layer::MaxPool => self.argmax[step.index].resize(batch * input.len() / 4, 0),
                Layer::Pool { kind: PoolKind::Max, .. } => self.argmax[step.index].resize(batch * step.output.len(), 0),
                _ => {}
            }
        }
        self.col.resize(col_len, 0.0);
        self.partials.resize(partials_len, 0.0);
        self.grad_a.resize(batch * largest, 0.0);
        self.grad_b.resize(batch * largest, 0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::gradcheck::{check_with_step, random};
    use crate::presets;
    use kiln_core::reference::{self, LayerParams};

    /// The logits of `model` on `input` from the trainer's forward pass (GEMM kernels) and from kiln-core's
    /// reference kernels.
    fn fast_and_reference(model: &Model, input: &[f32], batch: usize) -> (Vec<f32>, Vec<f32>) {
        let fast = model.forward(&mut Workspace::new(), input, batch).to_vec();
        let params: Vec<LayerParams> = model
            .steps()
            .iter()
            .filter_map(|s| s.params)
            .map(|slot| LayerParams {
                weights: &model.params[slot.weights()].data,
                bias: &model.params[slot.bias()].data,
            })
            .collect();
        let max = batch * kiln_core::network::max_activation_len(&model.network.layers, model.input_shape()).unwrap();
        let (mut a, mut b) = (vec![0.0; max], vec![0.0; max]);
        let slow =
            reference::forward(&model.network.layers, model.input_shape(), batch, input, &params, &mut a, &mut b)
                .unwrap();
        (fast, slow.to_vec())
    }

    /// The trainer's forward pass against kiln-core's reference kernels, whole network.
    fn assert_matches_reference(network: Network, batch: usize) {
        let model = Model::new(network, InitChoice::Default, 7).unwrap();
        let input: Vec<f32> = random(batch * 784, 8).into_iter().map(|v| v.abs()).collect();
        let (fast, slow) = fast_and_reference(&model, &input, batch);
        let scale = slow.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        for (f, s) in fast.iter().zip(slow) {
            assert!((f - s).abs() <= 1e-4 * scale.max(1.0), "{}: {f} vs {s}", model.network.name);
        }
    }

    #[test]
    fn forward_matches_reference_fc3_convnet4() {
        assert_matches_reference(presets::fc3(), 5);
        assert_matches_reference(presets::convnet4(), 3);
    }

    /// The layers past the series', in one network with every one of them.
    fn past_the_series() -> Network {
        let text = "input 12x11x2, conv 3x3 4 stride 2, leaky_relu 0.1, conv 1x2 5 valid, relu6, scale_shift, \
                    maxpool 3 stride 1 same, dropout 0.3, conv 2x2 4 pad 1,0,0,1, tanh, avgpool 2 stride 1 pad 1 \
                    count_pad, sigmoid, avgpool 3x2 stride 2 same, conv 3x3 6, clip -0.5 0.7, global_avgpool, \
                    dense 3";
        crate::description::parse(text, "past_the_series").unwrap()
    }

    #[test]
    fn forward_matches_reference_lenet5_and_the_layers_past_the_series() {
        assert_matches_reference(presets::lenet5(), 3);
        let network = past_the_series();
        let model = Model::new(network, InitChoice::Default, 5).unwrap();
        let batch = 3;
        let input = random(batch * model.input_shape().len(), 8);
        let (fast, slow) = fast_and_reference(&model, &input, batch);
        for (f, s) in fast.iter().zip(slow) {
            assert!((f - s).abs() <= 1e-5, "{f} vs {s}");
        }
    }

    #[test]
    fn the_probe_sees_each_layer_before_its_activation() {
        let model = Model::new(presets::convnet4(), InitChoice::Default, 7).unwrap();
        let batch = 2;
        let input: Vec<f32> = random(batch * 784, 8).into_iter().map(|v| v.abs()).collect();
        let plain = model.forward(&mut Workspace::new(), &input, batch).to_vec();
        let mut seen = Vec::new();
        let mut last_output = Vec::new();
        let probed = model
            .forward_probed(&mut Workspace::new(), &input, batch, &mut |step, x, y| {
                assert_eq!((x.len(), y.len()), (batch * step.input.len(), batch * step.output.len()));
                // A step's input is what the step before it left, activations included.
                if !last_output.is_empty() && !matches!(step.layer, Layer::Relu) {
                    let relu_before = matches!(model.network.layers[step.index - 1], Layer::Relu);
                    let expected: Vec<f32> =
                        last_output.iter().map(|&v: &f32| if relu_before { v.max(0.0) } else { v }).collect();
                    assert_eq!(x, &expected[..], "layer {}", step.index);
                }
                seen.push((step.index, y.iter().any(|&v| v < 0.0)));
                last_output = y.to_vec();
            })
            .to_vec();
        assert_eq!(plain, probed, "probing changes nothing");
        let shown: Vec<usize> = seen.iter().map(|s| s.0).collect();
        let not_in_place: Vec<usize> = model.steps().iter().filter(|s| !s.in_place).map(|s| s.index).collect();
        assert_eq!(shown, not_in_place);
        // Conv outputs are seen before their ReLU: some are negative.
        let convs = model.steps().iter().filter(|s| matches!(s.layer, Layer::Conv2d { .. }));
        assert!(convs.clone().count() > 0 && convs.into_iter().all(|c| seen.iter().any(|s| s.0 == c.index && s.1)));
    }

    #[test]
    fn forward_matches_reference_vgg() {
        assert_matches_reference(presets::vgg(), 2);
    }

    /// The whole network's backward pass against finite differences of the whole network's loss.
    #[test]
    fn whole_network_gradients_match_finite_differences() {
        whole_network_gradients_match_finite_differences_for(series_network(), 6 * 6, 1e-3);
        // The layers past the series' (max pooling and clipping, whose kinks crowd a whole network, are checked
        // alone in their own files).
        let text = "input 12x11x2, conv 3x3 4 stride 2, leaky_relu 0.1, conv 1x2 5 valid, tanh, scale_shift, \
                    avgpool 2 stride 1 pad 1 count_pad, sigmoid, dropout 0.3, avgpool 3x2 stride 2 same, \
                    conv 3x3 6, tanh, global_avgpool, dense 3";
        let smooth = crate::description::parse(text, "smooth").unwrap();
        // A wider step: the loss is f32, and these gradients are small.
        whole_network_gradients_match_finite_differences_for(smooth, 12 * 11 * 2, 3e-3);
    }

    /// A small network with every layer kind of the series, so the check runs in milliseconds.
    fn series_network() -> Network {
        Network {
            name: "tiny".into(),
            input: Shape::new(6, 6, 1),
            layers: vec![
                Layer::Pad { top: 1, bottom: 1, left: 1, right: 1 },
                Layer::Conv2d { filters: 3 },
                Layer::Relu,
                Layer::MaxPool,
                Layer::Conv2d { filters: 4 },
                Layer::Relu,
                Layer::Flatten,
                Layer::Dense { units: 5 },
                Layer::Relu,
                Layer::Dense { units: 3 },
            ],
            normalization: Default::default(),
        }
    }

    fn whole_network_gradients_match_finite_differences_for(network: Network, image: usize, step: f32) {
        let mut model = Model::new(network, InitChoice::Default, 3).unwrap();
        for t in &mut model.params {
            if t.name.ends_with("bias") {
                t.data = random(t.data.len(), 11).into_iter().map(|v| v * 0.1).collect();
            }
        }
        let batch = 2;
        let input = random(batch * image, 4);
        let labels = [2u8, 0];
        let mut ws = Workspace::new();
        let logits = model.forward(&mut ws, &input, batch).to_vec();
        let mut dlogits = vec![0.0; logits.len()];
        loss::softmax_cross_entropy(&logits, &labels, 3, Some(&mut dlogits));
        let mut grads: Vec<Vec<f32>> = model.param_lens().into_iter().map(|l| vec![0.0; l]).collect();
        model.backward(&mut ws, &dlogits, &mut grads);

        for (t, grad) in grads.iter().enumerate() {
            let mut values = model.params[t].data.clone();
            let mut probe = model.clone();
            let name = model.params[t].name.clone();
            check_with_step(
                &mut values,
                grad,
                |v| {
                    probe.params[t].data.copy_from_slice(v);
                    let mut ws = Workspace::new();
                    let logits = probe.forward(&mut ws, &input, batch).to_vec();
                    loss::softmax_cross_entropy(&logits, &labels, 3, None).cost as f64
                },
                &name,
                step,
            );
        }
    }
}
