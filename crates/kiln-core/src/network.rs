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

/// An f32 layer argument (an activation's slope or bounds, a dropout rate), kept as its bits so layers
/// stay `Eq` and `Hash`. Serialized as the number.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Scalar(u32);

impl Scalar {
    pub fn new(value: f32) -> Scalar {
        Scalar(value.to_bits())
    }

    pub const fn from_bits(bits: u32) -> Scalar {
        Scalar(bits)
    }

    pub fn get(self) -> f32 {
        f32::from_bits(self.0)
    }

    pub const fn to_bits(self) -> u32 {
        self.0
    }
}

impl fmt::Debug for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.get())
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for Scalar {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f32(self.get())
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for Scalar {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Scalar, D::Error> {
        Ok(Scalar::new(f32::deserialize(d)?))
    }
}

/// The largest kernel or pooling window side, and the largest stride.
pub const MAX_WINDOW: usize = 7;

/// A sliding window over an image: kernel height and width, strides, and zero padding per side (always
/// explicit: SAME is resolved against the input when a network is described or imported).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Window {
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub top: usize,
    pub bottom: usize,
    pub left: usize,
    pub right: usize,
}

impl Window {
    /// A `kh x kw` window with stride `stride` and no padding (VALID).
    pub const fn valid(kh: usize, kw: usize, stride: usize) -> Window {
        Window { kh, kw, sh: stride, sw: stride, top: 0, bottom: 0, left: 0, right: 0 }
    }

    /// TensorFlow's and ONNX's SAME_UPPER padding for an `h x w` input: the output is `ceil(h / stride)`,
    /// and an odd total pad puts the extra row and column at the bottom and right.
    pub fn same(kh: usize, kw: usize, stride: usize, h: usize, w: usize) -> Window {
        let total = |size: usize, k: usize| (size.div_ceil(stride).saturating_sub(1) * stride + k).saturating_sub(size);
        let (th, tw) = (total(h, kh), total(w, kw));
        Window { kh, kw, sh: stride, sw: stride, top: th / 2, bottom: th - th / 2, left: tw / 2, right: tw - tw / 2 }
    }

    /// The series' window: 3x3, stride 1, one zero pixel on each side.
    pub const SAME_3X3: Window = Window { kh: 3, kw: 3, sh: 1, sw: 1, top: 1, bottom: 1, left: 1, right: 1 };

    /// Number of taps, `kh * kw`.
    pub const fn taps(&self) -> usize {
        self.kh * self.kw
    }

    pub const fn has_padding(&self) -> bool {
        self.top + self.bottom + self.left + self.right != 0
    }

    /// Checks the window's own limits: sides and strides 1 to [`MAX_WINDOW`], each pad smaller than the side
    /// it pads (a pad that large would give output pixels that see only padding).
    pub fn check(&self) -> Result<(), &'static str> {
        let side = 1..=MAX_WINDOW;
        if !side.contains(&self.kh) || !side.contains(&self.kw) {
            return Err("the window must be 1 to 7 pixels on each side");
        }
        if !side.contains(&self.sh) || !side.contains(&self.sw) {
            return Err("the stride must be 1 to 7");
        }
        if self.top >= self.kh || self.bottom >= self.kh || self.left >= self.kw || self.right >= self.kw {
            return Err("each pad must be smaller than the window side it pads");
        }
        Ok(())
    }

    /// Output height and width on an `h x w` input (floor division: a last partial window is dropped), or
    /// `None` if the window is larger than the padded input.
    pub fn output(&self, h: usize, w: usize) -> Option<(usize, usize)> {
        let (ph, pw) = (h.checked_add(self.top + self.bottom)?, w.checked_add(self.left + self.right)?);
        let oh = ph.checked_sub(self.kh)? / self.sh + 1;
        let ow = pw.checked_sub(self.kw)? / self.sw + 1;
        Some((oh, ow))
    }

    /// Rows and columns of the padded input that no window reaches (floor division drops them).
    pub fn dropped(&self, h: usize, w: usize) -> (usize, usize) {
        let (ph, pw) = (h + self.top + self.bottom, w + self.left + self.right);
        (ph.saturating_sub(self.kh) % self.sh, pw.saturating_sub(self.kw) % self.sw)
    }

    /// The input row and column tap `(ky, kx)` of output pixel `(y, x)` reads, or `None` in the padding.
    #[inline(always)]
    pub fn source(&self, y: usize, x: usize, ky: usize, kx: usize, h: usize, w: usize) -> Option<(usize, usize)> {
        let iy = (y * self.sh + ky).checked_sub(self.top).filter(|&iy| iy < h)?;
        let ix = (x * self.sw + kx).checked_sub(self.left).filter(|&ix| ix < w)?;
        Some((iy, ix))
    }

    /// The inverse of [`Window::source`] along the height: the output row whose tap row `ky` reads input row
    /// `iy`, if one does (`oh` output rows). Backward passes gather with it.
    #[inline(always)]
    pub fn output_row(&self, iy: usize, ky: usize, oh: usize) -> Option<usize> {
        inverse_tap(iy, ky, self.top, self.sh, oh)
    }

    /// [`Window::output_row`] along the width.
    #[inline(always)]
    pub fn output_col(&self, ix: usize, kx: usize, ow: usize) -> Option<usize> {
        inverse_tap(ix, kx, self.left, self.sw, ow)
    }

    /// Packs the window into 32 bits, 4 per field (every field is below 16 after [`Window::check`]):
    /// `kh | kw << 4 | sh << 8 | sw << 12 | top << 16 | bottom << 20 | left << 24 | right << 28`.
    pub fn to_bits(&self) -> u32 {
        let fields = [self.kh, self.kw, self.sh, self.sw, self.top, self.bottom, self.left, self.right];
        fields.iter().enumerate().fold(0, |bits, (i, &f)| bits | ((f as u32 & 15) << (4 * i)))
    }

    /// The window [`Window::to_bits`] packed (not checked).
    pub fn from_bits(bits: u32) -> Window {
        let f = |i: u32| ((bits >> (4 * i)) & 15) as usize;
        Window { kh: f(0), kw: f(1), sh: f(2), sw: f(3), top: f(4), bottom: f(5), left: f(6), right: f(7) }
    }
}

/// Output position `o` reads input `o * stride + k - pad`; this solves for `o`.
#[inline(always)]
fn inverse_tap(i: usize, k: usize, pad: usize, stride: usize, size: usize) -> Option<usize> {
    let t = (i + pad).checked_sub(k)?;
    (t.is_multiple_of(stride) && t / stride < size).then_some(t / stride)
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.kh, self.kw)?;
        if self.sh == self.sw {
            write!(f, " stride {}", self.sh)?;
        } else {
            write!(f, " stride {}x{}", self.sh, self.sw)?;
        }
        if self.has_padding() {
            write!(f, " pad {},{},{},{}", self.top, self.bottom, self.left, self.right)?;
        }
        Ok(())
    }
}

/// Which pooling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum PoolKind {
    /// The largest value under the window; padding never wins (it is skipped, as in TF and ONNX).
    Max,
    /// The mean under the window. `count_pad`: padding counts as zeros in the divisor (ONNX's
    /// `count_include_pad = 1`); otherwise only the pixels inside the image count (TF, Keras, ONNX's default).
    Avg { count_pad: bool },
}

/// An element-wise activation besides ReLU (which is [`Layer::Relu`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Activation {
    Tanh,
    /// `1 / (1 + e^-x)`
    Sigmoid,
    /// `min(max(x, min), max)`; ReLU6 is `Clip { min: 0, max: 6 }`.
    Clip {
        min: Scalar,
        max: Scalar,
    },
    /// `x` for `x >= 0`, `alpha * x` below.
    LeakyRelu {
        alpha: Scalar,
    },
}

impl Activation {
    /// ReLU6, `min(max(x, 0), 6)`.
    pub fn relu6() -> Activation {
        Activation::Clip { min: Scalar::new(0.0), max: Scalar::new(6.0) }
    }

    /// The activation of one value.
    #[inline]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Activation::Tanh => tanh(x),
            Activation::Sigmoid => sigmoid(x),
            Activation::Clip { min, max } => x.max(min.get()).min(max.get()),
            Activation::LeakyRelu { alpha } => {
                if x >= 0.0 {
                    x
                } else {
                    alpha.get() * x
                }
            }
        }
    }

    /// Its derivative, from the output `y = apply(x)`: every one of these is monotone, so the output says
    /// where the input was (for leaky ReLU while `alpha > 0`), and the trainer can run them in place.
    #[inline]
    pub fn derivative_from_output(self, y: f32) -> f32 {
        match self {
            Activation::Tanh => 1.0 - y * y,
            Activation::Sigmoid => y * (1.0 - y),
            Activation::Clip { min, max } => {
                if y > min.get() && y < max.get() {
                    1.0
                } else {
                    0.0
                }
            }
            Activation::LeakyRelu { alpha } => {
                if y > 0.0 {
                    1.0
                } else {
                    alpha.get()
                }
            }
        }
    }

    fn check(self) -> Result<(), &'static str> {
        match self {
            Activation::Clip { min, max } if min.get().partial_cmp(&max.get()).is_none_or(|o| o.is_gt()) => {
                Err("clip needs bounds with min <= max (and no NaN)")
            }
            Activation::LeakyRelu { alpha } if !alpha.get().is_finite() => Err("leaky ReLU needs a finite slope"),
            _ => Ok(()),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Activation::Tanh => "tanh",
            Activation::Sigmoid => "sigmoid",
            Activation::Clip { .. } => "clip",
            Activation::LeakyRelu { .. } => "leaky_relu",
        }
    }
}

/// `tanh` without `std`: through `exp(-2|x|)` in f64 ([`crate::kernels::exp_f64`]), so small inputs
/// keep their relative precision.
pub fn tanh(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    let e = crate::kernels::exp_f64(-2.0 * (x as f64).abs());
    let t = ((1.0 - e) / (1.0 + e)) as f32;
    if x < 0.0 { -t } else { t }
}

/// The logistic function without `std`, in f64.
pub fn sigmoid(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    let e = crate::kernels::exp_f64(-(x as f64).abs());
    let s = if x >= 0.0 { 1.0 / (1.0 + e) } else { e / (1.0 + e) };
    s as f32
}

/// One layer. `Conv2d` and `MaxPool` are the series' layers (3x3 stride-1 SAME convs, 2x2 max pools), with
/// their own fast kernels; `Conv` and `Pool` are every other window. [`Layer::conv`] and [`Layer::pool`]
/// pick the series' form where a window is the series' one, so each layer has one spelling.
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
    /// Convolution with any [`Window`], plus bias. Weights `[kh,kw,in,filters]` (HWIO), bias `[filters]`.
    Conv { filters: usize, window: Window },
    /// Max or average pooling with any [`Window`].
    Pool { kind: PoolKind, window: Window },
    /// The mean of each channel over the image: `[h,w,c]` to `[c]`.
    GlobalAvgPool,
    /// An element-wise activation.
    Activation(Activation),
    /// `x * scale[c] + shift[c]` per channel: a batch normalization that could not be folded into a conv or
    /// dense layer. Parameters `scale` `[c]` and `shift` `[c]` sit in the weight and bias slots.
    ScaleShift,
    /// Dropout with drop probability `rate` while training; the identity at inference.
    Dropout { rate: Scalar },
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
    /// A conv or pooling window breaks its limits (`reason` says which).
    BadWindow { layer: usize, reason: &'static str },
    /// A window (`kernel`: height, width) is larger than its padded input.
    WindowTooLarge { layer: usize, input: Shape, kernel: (usize, usize) },
    /// An activation's or dropout's argument is out of range (`reason` says which).
    BadArgument { layer: usize, reason: &'static str },
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
            NetworkError::BadWindow { layer, reason } => write!(f, "layer {layer}: {reason}"),
            NetworkError::WindowTooLarge { layer, input, kernel: (kh, kw) } => {
                write!(f, "layer {layer}: a {kh}x{kw} window does not fit the input {input} with its padding")
            }
            NetworkError::BadArgument { layer, reason } => write!(f, "layer {layer}: {reason}"),
        }
    }
}

impl core::error::Error for NetworkError {}

impl Layer {
    /// A conv of `filters` with `window`: the series' [`Layer::Conv2d`] when the window is 3x3, stride 1,
    /// one pixel of padding on every side.
    pub fn conv(filters: usize, window: Window) -> Layer {
        if window == Window::SAME_3X3 { Layer::Conv2d { filters } } else { Layer::Conv { filters, window } }
    }

    /// A pooling layer on `input`: the series' [`Layer::MaxPool`] for a 2x2 stride-2 max pool without padding
    /// on an even-sized input (an odd one drops its last row or column, which only the general pool does).
    pub fn pool(kind: PoolKind, window: Window, input: Shape) -> Layer {
        let even = input.h.is_multiple_of(2) && input.w.is_multiple_of(2);
        if kind == PoolKind::Max && window == Window::valid(2, 2, 2) && even {
            Layer::MaxPool
        } else {
            Layer::Pool { kind, window }
        }
    }

    /// A conv's window (the series' [`Window::SAME_3X3`] for [`Layer::Conv2d`]); `None` for other layers.
    pub fn conv_window(&self) -> Option<Window> {
        match *self {
            Layer::Conv2d { .. } => Some(Window::SAME_3X3),
            Layer::Conv { window, .. } => Some(window),
            _ => None,
        }
    }

    /// The output shape for one image of shape `input`. `index` only labels errors.
    pub fn output_shape(&self, index: usize, input: Shape) -> Result<Shape, NetworkError> {
        let overflow = NetworkError::Overflow { layer: index };
        let windowed = |window: &Window, c: usize| -> Result<Shape, NetworkError> {
            window.check().map_err(|reason| NetworkError::BadWindow { layer: index, reason })?;
            let (oh, ow) = window.output(input.h, input.w).ok_or(NetworkError::WindowTooLarge {
                layer: index,
                input,
                kernel: (window.kh, window.kw),
            })?;
            Ok(Shape::new(oh, ow, c))
        };
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
            Layer::Relu | Layer::ScaleShift | Layer::Activation(_) | Layer::Dropout { .. } => {
                if let Layer::Activation(a) = self {
                    a.check().map_err(|reason| NetworkError::BadArgument { layer: index, reason })?;
                }
                if let Layer::Dropout { rate } = self
                    && !(0.0..1.0).contains(&rate.get())
                {
                    return Err(NetworkError::BadArgument { layer: index, reason: "dropout's rate must be in [0, 1)" });
                }
                input
            }
            Layer::Flatten => Shape::flat(input.checked_len().ok_or(overflow)?),
            Layer::Conv { filters, window } => windowed(&window, filters)?,
            Layer::Pool { window, .. } => windowed(&window, input.c)?,
            Layer::GlobalAvgPool => Shape::flat(input.c),
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
            Layer::Conv { filters, window } => {
                Some((window.taps().checked_mul(input.c)?.checked_mul(filters)?, filters))
            }
            Layer::Dense { units } => Some((input.c.checked_mul(units)?, units)),
            Layer::ScaleShift => Some((input.c, input.c)),
            _ => Some((0, 0)),
        }
    }

    /// The weight tensor's shape (`[kh,kw,in,out]`, `[in,out]` or `[c]`) for this layer on `input`, if it has
    /// one. Unused trailing dimensions are 0; the rank is returned alongside.
    pub fn weight_dims(&self, input: Shape) -> Option<([usize; 4], usize)> {
        match *self {
            Layer::Conv2d { filters } => Some(([3, 3, input.c, filters], 4)),
            Layer::Conv { filters, window } => Some(([window.kh, window.kw, input.c, filters], 4)),
            Layer::Dense { units } => Some(([input.c, units, 0, 0], 2)),
            Layer::ScaleShift => Some(([input.c, 0, 0, 0], 1)),
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

    /// Conv, dense and scale-shift layers: the layers with a weight and a bias tensor.
    pub fn has_params(&self) -> bool {
        matches!(self, Layer::Conv2d { .. } | Layer::Conv { .. } | Layer::Dense { .. } | Layer::ScaleShift)
    }

    /// Conv and dense layers: the matrix products, which can run on integers and fuse a ReLU after them.
    pub fn is_linear(&self) -> bool {
        matches!(self, Layer::Conv2d { .. } | Layer::Conv { .. } | Layer::Dense { .. })
    }

    /// The layers of the series (posts 3 to 9), which every path has run since Kiln's first format.
    pub fn is_series(&self) -> bool {
        matches!(
            self,
            Layer::Pad { .. }
                | Layer::Conv2d { .. }
                | Layer::MaxPool
                | Layer::Dense { .. }
                | Layer::Relu
                | Layer::Flatten
        )
    }

    /// Multiply-adds ×2 for one image's forward pass (comparisons and copies count as 0).
    pub fn forward_flops(&self, input: Shape, output: Shape) -> u64 {
        match *self {
            Layer::Conv2d { .. } | Layer::Conv { .. } | Layer::Dense { .. } => {
                let (weights, _) = self.param_lens(input);
                // Each weight is used once per output pixel (conv) or once (dense).
                2 * weights as u64 * (output.h * output.w) as u64
            }
            Layer::ScaleShift => 2 * input.len() as u64,
            _ => 0,
        }
    }

    /// A short lowercase name: `conv2d`, `dense`, ...
    pub fn kind(&self) -> &'static str {
        match self {
            Layer::Pad { .. } => "pad",
            Layer::Conv2d { .. } | Layer::Conv { .. } => "conv2d",
            Layer::MaxPool | Layer::Pool { kind: PoolKind::Max, .. } => "maxpool",
            Layer::Pool { kind: PoolKind::Avg { .. }, .. } => "avgpool",
            Layer::Dense { .. } => "dense",
            Layer::Relu => "relu",
            Layer::Flatten => "flatten",
            Layer::GlobalAvgPool => "global_avgpool",
            Layer::Activation(a) => a.name(),
            Layer::ScaleShift => "scale_shift",
            Layer::Dropout { .. } => "dropout",
        }
    }
}

/// The layer as a network description line writes it (`conv 5x5 6 pad 2,2,2,2`, `avgpool 2x2 stride 2`).
impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Layer::Pad { top, bottom, left, right } => write!(f, "pad {top},{bottom},{left},{right}"),
            Layer::Conv2d { filters } => write!(f, "conv 3x3 {filters} same"),
            Layer::Conv { filters, window } => {
                write!(f, "conv {}x{} {filters}", window.kh, window.kw)?;
                write_window_tail(f, &window)
            }
            Layer::MaxPool => write!(f, "maxpool 2"),
            Layer::Pool { kind, window } => {
                let name = if kind == PoolKind::Max { "maxpool" } else { "avgpool" };
                write!(f, "{name} {}x{}", window.kh, window.kw)?;
                write_window_tail(f, &window)?;
                if kind == (PoolKind::Avg { count_pad: true }) {
                    write!(f, " count_pad")?;
                }
                Ok(())
            }
            Layer::Dense { units } => write!(f, "dense {units}"),
            Layer::Relu => write!(f, "relu"),
            Layer::Flatten => write!(f, "flatten"),
            Layer::GlobalAvgPool => write!(f, "global_avgpool"),
            Layer::Activation(Activation::Clip { min, max }) => write!(f, "clip {} {}", min.get(), max.get()),
            Layer::Activation(Activation::LeakyRelu { alpha }) => write!(f, "leaky_relu {}", alpha.get()),
            Layer::Activation(a) => write!(f, "{}", a.name()),
            Layer::ScaleShift => write!(f, "scale_shift"),
            Layer::Dropout { rate } => write!(f, "dropout {}", rate.get()),
        }
    }
}

fn write_window_tail(f: &mut fmt::Formatter<'_>, window: &Window) -> fmt::Result {
    if window.sh == window.sw {
        write!(f, " stride {}", window.sh)?;
    } else {
        write!(f, " stride {}x{}", window.sh, window.sw)?;
    }
    if window.has_padding() {
        write!(f, " pad {},{},{},{}", window.top, window.bottom, window.left, window.right)
    } else {
        write!(f, " valid")
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
