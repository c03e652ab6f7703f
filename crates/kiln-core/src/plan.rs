//! The network plan: the one walk over a network that every path uses.
//!
//! [`Plan::new`] checks a layer list once; [`Plan::steps`] then yields, without allocating, one [`Step`] per
//! layer with everything a path needs to run it: shapes, parameter slot, whether it runs in place, whether
//! it fuses the ReLU after it, and which activation it reads and writes. The reference forward pass, the
//! runtime and sessions, the `.kiln` reader and writer, the trainer, the GPU network and GPU sessions all
//! walk this, so a new layer kind changes the rules here once (docs/ARCHITECTURE.md, "Adding a layer kind").

use crate::network::{Layer, NetworkError, Shape};

/// Where a parametric layer's tensors sit in a flat parameter list. The `index`-th conv, dense or scale-shift
/// layer owns tensor `2 * index` (its weights) and `2 * index + 1` (its bias): the one indexing convention of
/// every parameter list (checkpoints, the trainer, the GPU, the `.kiln` tensor table Kiln writes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParamSlot {
    /// Which parametric layer this is, counting from 0.
    pub index: usize,
}

impl ParamSlot {
    /// Index of the weight tensor (`[kh,kw,in,out]`, `[in,out]` or a scale-shift's `[c]`) in a flat parameter list.
    pub const fn weights(&self) -> usize {
        2 * self.index
    }

    /// Index of the bias tensor (`[out]`) in a flat parameter list.
    pub const fn bias(&self) -> usize {
        2 * self.index + 1
    }
}

/// One layer's place in the plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    /// The layer's index in the network.
    pub index: usize,
    pub layer: Layer,
    /// Per-image input and output shapes.
    pub input: Shape,
    pub output: Shape,
    /// The layer's parameters, for conv, dense and scale-shift layers.
    pub params: Option<ParamSlot>,
    /// The layer rewrites its input instead of writing another buffer: ReLU, the other activations and
    /// dropout work element-wise, and flatten is the same bytes in NHWC. Nothing reads a pre-activation value
    /// (conv and dense backward read their input, an activation's backward its output, dropout's its mask),
    /// so this is safe for training too.
    pub in_place: bool,
    /// A conv or dense layer directly followed by a ReLU: paths that fuse run the ReLU in this layer's
    /// epilogue and skip the ReLU's step (its [`Step::fused`] is set).
    pub fuses_relu: bool,
    /// A ReLU already run by the epilogue of the layer before it, on paths that fuse.
    pub fused: bool,
    /// Activation numbers: activation `src` holds the input, `dst` the output (the same when in place).
    /// Activation 0 is the network's input and the numbers grow by one per layer that is not in place.
    /// The trainer keeps one buffer per activation (the backward pass reads them); inference ping-pongs
    /// between two buffers, [`Step::src_buffer`] and [`Step::dst_buffer`].
    pub src: usize,
    pub dst: usize,
}

impl Step {
    /// Which of two ping-pong buffers holds the input.
    pub const fn src_buffer(&self) -> usize {
        self.src % 2
    }

    /// Which of two ping-pong buffers receives the output.
    pub const fn dst_buffer(&self) -> usize {
        self.dst % 2
    }

    /// Multiply-adds ×2 for one image's forward pass.
    pub fn forward_flops(&self) -> u64 {
        self.layer.forward_flops(self.input, self.output)
    }

    /// Weight and bias lengths; `(0, 0)` for layers without parameters.
    pub fn param_lens(&self) -> (usize, usize) {
        self.layer.param_lens(self.input)
    }
}

/// A checked network: its layers and input shape, and totals over the whole of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan<'a> {
    layers: &'a [Layer],
    input: Shape,
    output: Shape,
    max_activation_len: usize,
    param_count: usize,
    param_layers: usize,
    activations: usize,
}

impl<'a> Plan<'a> {
    /// Checks every layer of `layers` on `input` (shapes, sizes, overflow) and sums up the network.
    pub fn new(layers: &'a [Layer], input: Shape) -> Result<Plan<'a>, NetworkError> {
        if input.checked_len().unwrap_or(0) == 0 {
            return Err(NetworkError::ZeroSize { layer: 0 });
        }
        let mut plan = Plan {
            layers,
            input,
            output: input,
            max_activation_len: input.len(),
            param_count: 0,
            param_layers: 0,
            activations: 1,
        };
        let mut walk = Steps::new(layers, input);
        while let Some(step) = walk.next_checked() {
            let step = step?;
            let overflow = NetworkError::Overflow { layer: step.index };
            let (weights, bias) = step.param_lens();
            plan.param_count = plan.param_count.checked_add(weights + bias).ok_or(overflow)?;
            plan.max_activation_len = plan.max_activation_len.max(step.output.len());
            plan.param_layers += usize::from(step.params.is_some());
            plan.activations = step.dst + 1;
            plan.output = step.output;
        }
        Ok(plan)
    }

    /// A plan with no layers, for a reader's fallback that cannot happen (see `Model::plan`).
    pub(crate) fn empty(input: Shape) -> Plan<'static> {
        let len = input.checked_len().unwrap_or(0);
        Plan {
            layers: &[],
            input,
            output: input,
            max_activation_len: len,
            param_count: 0,
            param_layers: 0,
            activations: 1,
        }
    }

    /// One step per layer, in order.
    pub fn steps(&self) -> Steps<'a> {
        Steps::new(self.layers, self.input)
    }

    pub fn layers(&self) -> &'a [Layer] {
        self.layers
    }

    pub fn input(&self) -> Shape {
        self.input
    }

    /// The network's output shape (`[classes]` for a classifier).
    pub fn output(&self) -> Shape {
        self.output
    }

    /// The largest per-image activation, input and output included: enough for each of two ping-pong
    /// buffers.
    pub fn max_activation_len(&self) -> usize {
        self.max_activation_len
    }

    /// Total trainable parameters.
    pub fn param_count(&self) -> usize {
        self.param_count
    }

    /// Number of conv and dense layers; a flat parameter list holds twice as many tensors.
    pub fn param_layers(&self) -> usize {
        self.param_layers
    }

    /// Number of distinct activations (see [`Step::src`]); the last one holds the logits.
    pub fn activations(&self) -> usize {
        self.activations
    }

    /// Which of two ping-pong buffers holds the output after the last step.
    pub fn output_buffer(&self) -> usize {
        (self.activations - 1) % 2
    }

    /// Multiply-adds ×2 for one image's forward pass.
    pub fn forward_flops(&self) -> u64 {
        self.steps().map(|s| s.forward_flops()).sum()
    }
}

/// The iterator of [`Plan::steps`].
#[derive(Clone, Debug)]
pub struct Steps<'a> {
    layers: &'a [Layer],
    next: usize,
    shape: Shape,
    params: usize,
    activation: usize,
}

impl<'a> Steps<'a> {
    fn new(layers: &'a [Layer], input: Shape) -> Self {
        Steps { layers, next: 0, shape: input, params: 0, activation: 0 }
    }

    /// The next step, checking the layer; the only place the plan's rules are written.
    fn next_checked(&mut self) -> Option<Result<Step, NetworkError>> {
        let index = self.next;
        let layer = *self.layers.get(index)?;
        self.next += 1;
        let output = match layer.output_shape(index, self.shape) {
            Ok(shape) => shape,
            Err(e) => {
                self.next = self.layers.len();
                return Some(Err(e));
            }
        };
        let params = layer.has_params().then(|| {
            self.params += 1;
            ParamSlot { index: self.params - 1 }
        });
        let in_place = matches!(layer, Layer::Relu | Layer::Flatten | Layer::Activation(_) | Layer::Dropout { .. });
        let src = self.activation;
        if !in_place {
            self.activation += 1;
        }
        let previous = index.checked_sub(1).and_then(|p| self.layers.get(p));
        let step = Step {
            index,
            layer,
            input: self.shape,
            output,
            params,
            in_place,
            fuses_relu: layer.is_linear() && self.layers.get(index + 1) == Some(&Layer::Relu),
            fused: layer == Layer::Relu && previous.is_some_and(Layer::is_linear),
            src,
            dst: self.activation,
        };
        self.shape = output;
        Some(Ok(step))
    }
}

impl Iterator for Steps<'_> {
    type Item = Step;

    /// Steps come from a checked [`Plan`], so every layer is valid here.
    fn next(&mut self) -> Option<Step> {
        self.next_checked()?.ok()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.layers.len() - self.next;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Steps<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ConvNet4 of the series: every rule of the plan on one network.
    #[test]
    fn convnet4_plan() {
        let layers = [
            Layer::Conv2d { filters: 64 },
            Layer::Relu,
            Layer::MaxPool,
            Layer::Relu,
            Layer::Flatten,
            Layer::Dense { units: 10 },
        ];
        let plan = Plan::new(&layers, Shape::new(28, 28, 1)).unwrap();
        let steps: [Step; 6] = core::array::from_fn(|i| plan.steps().nth(i).unwrap());
        let fields = steps.map(|s| (s.src, s.dst, s.in_place, s.fuses_relu, s.fused, s.params.map(|p| p.index)));
        assert_eq!(
            fields,
            [
                (0, 1, false, true, false, Some(0)),
                (1, 1, true, false, true, None),
                (1, 2, false, false, false, None),
                (2, 2, true, false, false, None),
                (2, 2, true, false, false, None),
                (2, 3, false, false, false, Some(1)),
            ]
        );
        assert_eq!(steps[2].output, Shape::new(14, 14, 64));
        assert_eq!(steps[5].input, Shape::flat(14 * 14 * 64));
        assert_eq!((steps[5].src_buffer(), steps[5].dst_buffer()), (0, 1));
        assert_eq!((plan.activations(), plan.output_buffer()), (4, 1));
        assert_eq!(plan.param_layers(), 2);
        assert_eq!(plan.param_count(), 9 * 64 + 64 + 14 * 14 * 64 * 10 + 10);
        assert_eq!(plan.max_activation_len(), 28 * 28 * 64);
        assert_eq!(plan.output(), Shape::flat(10));
        assert_eq!(plan.steps().len(), 6);
        assert_eq!((ParamSlot { index: 1 }.weights(), ParamSlot { index: 1 }.bias()), (2, 3));
    }

    #[test]
    fn errors_name_the_layer() {
        let layers = [Layer::MaxPool, Layer::MaxPool, Layer::MaxPool];
        let err = Plan::new(&layers, Shape::new(28, 28, 1)).unwrap_err();
        assert_eq!(err, NetworkError::PoolNeedsEvenSize { layer: 2, input: Shape::new(7, 7, 1) });
        assert_eq!(Plan::new(&layers, Shape::new(0, 28, 1)).unwrap_err(), NetworkError::ZeroSize { layer: 0 });
    }
}
