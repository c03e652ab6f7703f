//! A network with its parameters, and the forward and backward passes over the whole of it.

use std::time::Instant;

use kiln_core::network::{Layer, NetworkError, Shape};

use crate::init::InitChoice;
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

/// A network plus its parameters. `params` holds weights then bias for each parametric layer, in order.
#[derive(Clone, Debug)]
pub struct Model {
    pub network: Network,
    pub params: Vec<Tensor>,
    /// `shapes[i]`: input of layer `i`; the last entry is the output.
    shapes: Vec<Shape>,
    /// `param_of[i]`: index in `params` of layer `i`'s weights, if it has any.
    param_of: Vec<Option<usize>>,
    /// `buffer_of[i]`: which workspace buffer holds the input of layer `i` (`i == layers` for the logits).
    /// ReLU and flatten work in place, so their output shares their input's buffer: that saves a copy of
    /// every conv's output per step, and nothing needs a pre-ReLU value (conv and dense backward read
    /// their input, ReLU backward its output, pooling its winners).
    buffer_of: Vec<usize>,
}

/// Buffers for one batch size: the activations kept for the backward pass and two gradient buffers.
#[derive(Debug, Default)]
pub struct Workspace {
    batch: usize,
    /// Activation buffers: the input of layer `i` is `acts[model.buffer_of[i]]`, `[batch, shapes[i]]`.
    acts: Vec<Vec<f32>>,
    /// im2col scratch shared by every conv layer: one chunk of images at a time.
    col: Vec<f32>,
    /// Per-chunk weight-gradient slots shared by every conv layer.
    partials: Vec<f32>,
    /// Per pool layer: the winners `[batch, h/2, w/2, c]`.
    argmax: Vec<Vec<u8>>,
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
        let last = model.param_of.iter().rposition(Option::is_some);
        for (i, layer) in model.network.layers.iter().enumerate() {
            let Some(p) = model.param_of[i] else { continue };
            let (fan_in, fan_out) = match *layer {
                Layer::Conv2d { filters } => (9 * model.shapes[i].c, 9 * filters),
                Layer::Dense { units } => (model.shapes[i].c, units),
                _ => unreachable!("only conv and dense layers have parameters"),
            };
            init.for_layer(Some(i) == last).fill(&mut model.params[p].data, fan_in, fan_out, &mut rng);
        }
        Ok(model)
    }

    /// A model with all parameters zero (to be filled from a file).
    pub fn zeroed(network: Network) -> Result<Self, NetworkError> {
        let shapes = network.shapes()?;
        let mut params = Vec::new();
        let mut param_of = vec![None; network.layers.len()];
        for p in network.param_layers()? {
            param_of[p.layer] = Some(params.len());
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
        let mut buffer_of = vec![0];
        for layer in &network.layers {
            let last = *buffer_of.last().expect("starts with the input");
            buffer_of.push(if matches!(layer, Layer::Relu | Layer::Flatten) { last } else { last + 1 });
        }
        Ok(Model { network, params, shapes, param_of, buffer_of })
    }

    pub fn input_shape(&self) -> Shape {
        self.shapes[0]
    }

    pub fn classes(&self) -> usize {
        self.shapes.last().map_or(0, Shape::len)
    }

    /// Runs the network on `batch` images (`input`: `[batch, 28, 28, 1]`) and returns the logits
    /// `[batch, classes]`. Keeps what the backward pass needs in `ws`.
    pub fn forward<'w>(&self, ws: &'w mut Workspace, input: &[f32], batch: usize) -> &'w [f32] {
        ws.prepare(self, batch);
        ws.acts[0][..input.len()].copy_from_slice(input);
        for (i, layer) in self.network.layers.iter().enumerate() {
            let started = ws.timings.is_some().then(Instant::now);
            let Shape { h, w, c } = self.shapes[i];
            let n = batch;
            let (from, to) = (self.buffer_of[i], self.buffer_of[i + 1]);
            if from == to {
                // In place: ReLU, or flatten (nothing to do).
                if *layer == Layer::Relu {
                    relu::forward_in_place(&mut ws.acts[to][..n * self.shapes[i].len()]);
                }
                if let (Some(t), Some(started)) = (ws.timings.as_mut(), started) {
                    t[i].forward += started.elapsed().as_secs_f64();
                }
                continue;
            }
            let (before, after) = ws.acts.split_at_mut(to);
            let (x, y) = (&before[from][..], &mut after[0][..]);
            match *layer {
                Layer::Pad { top, bottom, left, right } => {
                    Pad { n, h, w, c, top, bottom, left, right }.forward(x, y);
                }
                Layer::Conv2d { filters } => {
                    let p = self.param_of[i].expect("conv has parameters");
                    Conv2d { n, h, w, cin: c, cout: filters }.forward(
                        x,
                        &self.params[p].data,
                        &self.params[p + 1].data,
                        &mut ws.col,
                        y,
                    );
                }
                Layer::MaxPool => MaxPool { n, h, w, c }.forward(x, y, &mut ws.argmax[i]),
                Layer::Dense { units } => {
                    let p = self.param_of[i].expect("dense has parameters");
                    Dense { n, cin: c, cout: units }.forward(x, &self.params[p].data, &self.params[p + 1].data, y);
                }
                Layer::Relu | Layer::Flatten => unreachable!("ReLU and flatten run in place"),
            }
            if let (Some(t), Some(started)) = (ws.timings.as_mut(), started) {
                t[i].forward += started.elapsed().as_secs_f64();
            }
        }
        &ws.acts[self.buffer_of[self.network.layers.len()]][..batch * self.classes()]
    }

    /// Back-propagates `dlogits` (`[batch, classes]`) through the last [`Model::forward`] and writes the
    /// gradient of every parameter into `grads` (same order and lengths as `params`).
    pub fn backward(&self, ws: &mut Workspace, dlogits: &[f32], grads: &mut [Vec<f32>]) {
        let n = ws.batch;
        let layers = &self.network.layers;
        // Layers up to the first parametric one need no input gradient: nothing before them learns.
        let first_param = self.param_of.iter().position(Option::is_some).unwrap_or(layers.len());
        let mut grad = std::mem::take(&mut ws.grad_a);
        let mut spare = std::mem::take(&mut ws.grad_b);
        grad[..dlogits.len()].copy_from_slice(dlogits);
        for i in (first_param..layers.len()).rev() {
            let Shape { h, w, c } = self.shapes[i];
            let (in_len, out_len) = (n * self.shapes[i].len(), n * self.shapes[i + 1].len());
            let want_input_grad = i > first_param;
            let started = ws.timings.is_some().then(Instant::now);
            let dout = &grad[..out_len];
            let dinput = &mut spare[..in_len];
            let mut swapped = true;
            match layers[i] {
                Layer::Pad { top, bottom, left, right } => {
                    Pad { n, h, w, c, top, bottom, left, right }.backward(dout, dinput);
                }
                Layer::Conv2d { filters } => {
                    let p = self.param_of[i].expect("conv has parameters");
                    let (gw, gb) = grads.split_at_mut(p + 1);
                    Conv2d { n, h, w, cin: c, cout: filters }.backward(
                        &ws.acts[self.buffer_of[i]][..in_len],
                        dout,
                        &self.params[p].data,
                        &mut ws.col,
                        &mut ws.partials,
                        &mut gw[p],
                        &mut gb[0],
                        want_input_grad.then_some(dinput),
                    );
                }
                Layer::MaxPool => MaxPool { n, h, w, c }.backward(dout, &ws.argmax[i], dinput),
                Layer::Dense { units } => {
                    let p = self.param_of[i].expect("dense has parameters");
                    let (gw, gb) = grads.split_at_mut(p + 1);
                    Dense { n, cin: c, cout: units }.backward(
                        &ws.acts[self.buffer_of[i]][..in_len],
                        dout,
                        &self.params[p].data,
                        &mut gw[p],
                        &mut gb[0],
                        want_input_grad.then_some(dinput),
                    );
                }
                Layer::Relu => {
                    relu::backward_in_place(&ws.acts[self.buffer_of[i + 1]][..out_len], &mut grad[..out_len]);
                    swapped = false;
                }
                // Same bytes, same gradient.
                Layer::Flatten => swapped = false,
            }
            if swapped {
                std::mem::swap(&mut grad, &mut spare);
            }
            if let (Some(t), Some(started)) = (ws.timings.as_mut(), started) {
                t[i].backward += started.elapsed().as_secs_f64();
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
        let layers = &model.network.layers;
        let buffers = model.buffer_of[layers.len()] + 1;
        if self.acts.len() != buffers || self.argmax.len() != layers.len() {
            self.acts = vec![Vec::new(); buffers];
            self.argmax = vec![Vec::new(); layers.len()];
        }
        self.batch = batch;
        let mut largest = 0;
        for (i, shape) in model.shapes.iter().enumerate() {
            largest = largest.max(shape.len());
            self.acts[model.buffer_of[i]].resize(batch * shape.len(), 0.0);
        }
        let (mut col_len, mut partials_len) = (0, 0);
        for (i, layer) in layers.iter().enumerate() {
            let input = model.shapes[i];
            match *layer {
                Layer::Conv2d { filters } => {
                    let conv = Conv2d { n: batch, h: input.h, w: input.w, cin: input.c, cout: filters };
                    col_len = col_len.max(conv.col_len());
                    partials_len = partials_len.max(conv.partials_len());
                }
                Layer::MaxPool => self.argmax[i].resize(batch * input.len() / 4, 0),
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

    /// The trainer's forward pass (GEMM kernels) against kiln-core's reference kernels, whole network.
    fn assert_matches_reference(network: Network, batch: usize) {
        let model = Model::new(network, InitChoice::Default, 7).unwrap();
        let input: Vec<f32> = random(batch * 784, 8).into_iter().map(|v| v.abs()).collect();
        let mut ws = Workspace::new();
        let fast = model.forward(&mut ws, &input, batch).to_vec();

        let params: Vec<LayerParams> =
            model.params.chunks(2).map(|p| LayerParams { weights: &p[0].data, bias: &p[1].data }).collect();
        let max = batch * kiln_core::network::max_activation_len(&model.network.layers, model.input_shape()).unwrap();
        let (mut a, mut b) = (vec![0.0; max], vec![0.0; max]);
        let slow =
            reference::forward(&model.network.layers, model.input_shape(), batch, &input, &params, &mut a, &mut b)
                .unwrap();
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

    #[test]
    fn forward_matches_reference_vgg() {
        assert_matches_reference(presets::vgg(), 2);
    }

    /// The whole network's backward pass against finite differences of the whole network's loss.
    #[test]
    fn whole_network_gradients_match_finite_differences() {
        // A small network with every layer kind, so the check runs in milliseconds.
        let network = Network {
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
        };
        let mut model = Model::new(network, InitChoice::Default, 3).unwrap();
        for t in &mut model.params {
            if t.name.ends_with("bias") {
                t.data = random(t.data.len(), 11).into_iter().map(|v| v * 0.1).collect();
            }
        }
        let batch = 2;
        let input = random(batch * 36, 4);
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
                1e-3,
            );
        }
    }
}
