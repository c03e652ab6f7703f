//! The network description: a list of layers and the input shape, plus shape inference.

use core::fmt;

use crate::plan::Plan;

/// The per-image shape of an activation, NHWC without the batch. A flat vector is `1 x 1 x c`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Shape {
    pub h: usize,
    pub w: usize,
    pub c: usize,
}

impl Shape {
    pub const fn new(h: usize, w: usize, c: usize) -> Self {
        Shape { h, w, c }
    }

    /// A flat vector of `c` values.
    pub const fn flat(c: usize) -> Self {
        Shape { h: 1, w: 1, c }
    }

    /// Number of values per image; `None` if it overflows `usize`.
    pub fn checked_len(&self) -> Option<usize> {
        self.h.checked_mul(self.w)?.checked_mul(self.c)
    }

    /// Number of values per image. Shapes produced by [`infer`] never overflow.
    pub fn len(&self) -> usize {
        self.h * self.w * self.c
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_flat(&self) -> bool {
        self.h == 1 && self.w == 1
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_flat() { write!(f, "[{}]", self.c) } else { write!(f, "[{}, {}, {}]", self.h, self.w, self.c) }
    }
}

/// One layer. Every conv is 3x3, stride 1, SAME padding, with a bias; every pool is 2x2 max, stride 2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Layer {
    /// Zero padding around each image.
    Pad { top: usize, bottom: usize, left: usize, right: usize },
    /// 3x3 convolution, stride 1, SAME padding, plus bias. Weights `[3,3,in,filters]`, bias `[filters]`.
    Conv2d { filters: usize },
    /// 2x2 max pooling, stride 2. Needs even height and width.
    MaxPool,
    /// Fully connected layer on a flat input. Weights `[in,units]`, bias `[units]`.
    Dense { units: usize },
    /// `max(x, 0)`, element-wise.
    Relu,
    /// `[h,w,c]` to `[h*w*c]`, in NHWC order (the same bytes; TensorFlow's `reshape`).
    Flatten,
}

/// Why a network description is invalid. `layer` is the 0-based index of the offending layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetworkError {
    /// A dense layer got a non-flat input: add a `Flatten` first.
    DenseNeedsFlatInput { layer: usize, input: Shape },
    /// Max pooling needs even height and width.
    PoolNeedsEvenSize { layer: usize, input: Shape },
    /// A dimension is zero (a conv with 0 filters, a dense layer with 0 units, an empty input).
    ZeroSize { layer: usize },
    /// A shape or parameter count overflows `usize`.
    Overflow { layer: usize },
}

impl fmt::Display for NetworkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetworkError::DenseNeedsFlatInput { layer, input } => {
                write!(f, "layer {layer}: dense layer needs a flat input, got {input} (add a flatten layer)")
            }
            NetworkError::PoolNeedsEvenSize { layer, input } => {
                write!(f, "layer {layer}: 2x2 max pooling needs even height and width, got {input}")
            }
            NetworkError::ZeroSize { layer } => write!(f, "layer {layer}: a dimension is zero"),
            NetworkError::Overflow { layer } => write!(f, "layer {layer}: shape or parameter count overflows"),
        }
    }
}

impl core::error::Error for NetworkError {}

impl Layer {
    /// The output shape for one image of shape `input`. `index` only labels errors.
    pub fn output_shape(&self, index: usize, input: Shape) -> Result<Shape, NetworkError> {
        let overflow = NetworkError::Overflow { layer: index };
        let out = match *self {
            Layer::Pad { top, bottom, left, right } => Shape::new(
                input.h.checked_add(top).and_then(|h| h.checked_add(bottom)).ok_or(overflow)?,
                input.w.checked_add(left).and_then(|w| w.checked_add(right)).ok_or(overflow)?,
                input.c,
            ),
            Layer::Conv2d { filters } => Shape::new(input.h, input.w, filters),
            Layer::MaxPool => {
                if !input.h.is_multiple_of(2) || !input.w.is_multiple_of(2) {
                    return Err(NetworkError::PoolNeedsEvenSize { layer: index, input });
                }
                Shape::new(input.h / 2, input.w / 2, input.c)
            }
            Layer::Dense { units } => {
                if !input.is_flat() {
                    return Err(NetworkError::DenseNeedsFlatInput { layer: index, input });
                }
                Shape::flat(units)
            }
            Layer::Relu => input,
            Layer::Flatten => Shape::flat(input.checked_len().ok_or(overflow)?),
        };
        if out.checked_len().ok_or(overflow)? == 0 {
            return Err(NetworkError::ZeroSize { layer: index });
        }
        // Parameter counts must fit too.
        self.checked_param_shapes(input).ok_or(overflow)?;
        Ok(out)
    }

    /// Weight and bias lengths for this layer on `input`, or `None` on overflow. `(0, 0)` for layers
    /// without parameters.
    fn checked_param_shapes(&self, input: Shape) -> Option<(usize, usize)> {
        match *self {
            Layer::Conv2d { filters } => Some((9usize.checked_mul(input.c)?.checked_mul(filters)?, filters)),
            Layer::Dense { units } => Some((input.c.checked_mul(units)?, units)),
            _ => Some((0, 0)),
        }
    }

    /// The weight tensor's shape (`[3,3,in,out]` or `[in,out]`) for this layer on `input`, if it has one.
    /// Unused trailing dimensions are 0; the rank is returned alongside.
    pub fn weight_dims(&self, input: Shape) -> Option<([usize; 4], usize)> {
        match *self {
            Layer::Conv2d { filters } => Some(([3, 3, input.c, filters], 4)),
            Layer::Dense { units } => Some(([input.c, units, 0, 0], 2)),
            _ => None,
        }
    }

    /// Weight count and bias count; `(0, 0)` for layers without parameters.
    pub fn param_lens(&self, input: Shape) -> (usize, usize) {
        self.checked_param_shapes(input).unwrap_or((usize::MAX, usize::MAX))
    }

    /// Total trainable parameters of this layer on `input`.
    pub fn param_count(&self, input: Shape) -> usize {
        let (w, b) = self.param_lens(input);
        w + b
    }

    pub fn has_params(&self) -> bool {
        matches!(self, Layer::Conv2d { .. } | Layer::Dense { .. })
    }

    /// Multiply-adds ×2 for one image's forward pass (comparisons and copies count as 0).
    pub fn forward_flops(&self, input: Shape, output: Shape) -> u64 {
        match *self {
            Layer::Conv2d { .. } | Layer::Dense { .. } => {
                let (weights, _) = self.param_lens(input);
                // Each weight is used once per output pixel (conv) or once (dense).
                2 * weights as u64 * (output.h * output.w) as u64
            }
            _ => 0,
        }
    }

    /// A short lowercase name: `conv2d`, `dense`, ...
    pub fn kind(&self) -> &'static str {
        match self {
            Layer::Pad { .. } => "pad",
            Layer::Conv2d { .. } => "conv2d",
            Layer::MaxPool => "maxpool",
            Layer::Dense { .. } => "dense",
            Layer::Relu => "relu",
            Layer::Flatten => "flatten",
        }
    }
}

/// Checks every layer and returns the final output shape ([`Plan::new`]).
pub fn infer(layers: &[Layer], input: Shape) -> Result<Shape, NetworkError> {
    Ok(Plan::new(layers, input)?.output())
}

/// The largest per-image activation along the network, input and output included
/// ([`Plan::max_activation_len`]).
pub fn max_activation_len(layers: &[Layer], input: Shape) -> Result<usize, NetworkError> {
    Ok(Plan::new(layers, input)?.max_activation_len())
}

/// Total trainable parameters ([`Plan::param_count`]).
pub fn param_count(layers: &[Layer], input: Shape) -> Result<usize, NetworkError> {
    Ok(Plan::new(layers, input)?.param_count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_needs_flatten() {
        let layers = [Layer::Dense { units: 10 }];
        assert_eq!(
            infer(&layers, Shape::new(28, 28, 1)),
            Err(NetworkError::DenseNeedsFlatInput { layer: 0, input: Shape::new(28, 28, 1) })
        );
    }

    #[test]
    fn pool_needs_even() {
        let layers = [Layer::MaxPool, Layer::MaxPool, Layer::MaxPool];
        assert_eq!(
            infer(&layers, Shape::new(28, 28, 1)),
            Err(NetworkError::PoolNeedsEvenSize { layer: 2, input: Shape::new(7, 7, 1) })
        );
    }

    #[test]
    fn overflow_is_an_error_not_a_panic() {
        let layers = [Layer::Flatten, Layer::Dense { units: usize::MAX / 2 }];
        assert_eq!(infer(&layers, Shape::new(4, 4, 1)), Err(NetworkError::Overflow { layer: 1 }));
        let pad = [Layer::Pad { top: usize::MAX, bottom: 1, left: 0, right: 0 }];
        assert_eq!(infer(&pad, Shape::new(4, 4, 1)), Err(NetworkError::Overflow { layer: 0 }));
    }

    #[test]
    fn conv_params() {
        let conv = Layer::Conv2d { filters: 64 };
        assert_eq!(conv.param_count(Shape::new(28, 28, 1)), 3 * 3 * 64 + 64);
        assert_eq!(conv.forward_flops(Shape::new(28, 28, 1), Shape::new(28, 28, 64)), 2 * 576 * 784);
    }
}
