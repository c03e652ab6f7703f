//! Networks described in a few readable lines: the input shape, then one layer per line (or per
//! comma-separated entry). The presets are such descriptions too (`nets/*.txt`), so there is one way to
//! define a network. docs/NETWORKS.md is the reference; in short:
//!
//! ```text
//! input 28x28x1                 # optional, the default; `#` starts a comment
//! normalize 0.1307 0.3081       # optional: the input is (pixel / 255 - mean) / std; default 0 and 1
//! conv 5x5 6 same               # conv KxK FILTERS [stride S] [same | valid | pad P | pad T,B,L,R]
//! tanh                          # relu, relu6, tanh, sigmoid, leaky_relu [SLOPE], clip MIN MAX
//! avgpool 2                     # maxpool/avgpool K[xK] [stride S] [padding as conv] [count_pad]
//! conv 5x5 16 valid
//! global_avgpool                # or: flatten
//! dropout 0.5
//! dense 10                      # dense UNITS
//! ```
//!
//! A conv's padding defaults to `same`, a pool's to `valid` and a pool's stride to its size. `same` is
//! TensorFlow's: the output is `ceil(input / stride)`, any odd pad going to the bottom and right. Each
//! error names the layer (1-based, in the order written) and what does not fit.

use std::fmt;

use kiln_core::network::{Activation, Layer, MAX_WINDOW, NetworkError, PoolKind, Scalar, Shape, Window};
use kiln_core::plan::Plan;

use crate::network::{Network, Normalization};

/// Why a description could not be read. `layer` counts from 1 in the order written (the `input` line is
/// not a layer); `line` is the text of the entry.
#[derive(Clone, Debug, PartialEq)]
pub enum DescriptionError {
    /// An entry could not be parsed.
    Syntax { layer: usize, line: String, reason: String },
    /// The `input` entry is malformed or not first.
    Input { line: String, reason: String },
    /// The layers do not fit together.
    Shape { layer: usize, line: String, reason: String },
    /// The description has no layers.
    Empty,
}

impl fmt::Display for DescriptionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DescriptionError::Syntax { layer, line, reason } => write!(f, "layer {layer} (\"{line}\"): {reason}"),
            DescriptionError::Input { line, reason } => write!(f, "\"{line}\": {reason}"),
            DescriptionError::Shape { layer, line, reason } => write!(f, "layer {layer} (\"{line}\"): {reason}"),
            DescriptionError::Empty => write!(f, "the description has no layers"),
        }
    }
}

impl std::error::Error for DescriptionError {}

/// The layer words, for error messages.
pub const LAYER_WORDS: &str = "conv, maxpool, avgpool, global_avgpool, dense, flatten, relu, relu6, tanh, sigmoid, \
    leaky_relu, clip, dropout, pad, scale_shift";

/// Reads a description; `name` becomes the network's name. Entries are separated by newlines or commas.
pub fn parse(text: &str, name: &str) -> Result<Network, DescriptionError> {
    // Commas separate entries, except inside a list of numbers (`pad 1,1,0,0`): a piece that starts with
    // a digit continues the entry before it.
    let mut joined: Vec<String> = Vec::new();
    for line in text.lines().map(|l| l.split('#').next().unwrap_or("")) {
        let mut first = true;
        for piece in line.split(',') {
            match joined.last_mut() {
                Some(last) if !first && piece.starts_with(|c: char| c.is_ascii_digit()) => {
                    last.push(',');
                    last.push_str(piece);
                }
                _ => joined.push(piece.to_string()),
            }
            first = false;
        }
    }
    let entries: Vec<&str> = joined.iter().map(|e| e.trim()).filter(|e| !e.is_empty()).collect();
    let mut input = crate::presets::MNIST_INPUT;
    let mut normalization = Normalization::UNIT_RANGE;
    let mut layers = Vec::new();
    let mut lines = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let words: Vec<&str> = entry.split_whitespace().collect();
        if words[0].eq_ignore_ascii_case("input") {
            if i != 0 {
                return Err(DescriptionError::Input {
                    line: entry.to_string(),
                    reason: "input must come first".into(),
                });
            }
            input = parse_input(&words[1..])
                .map_err(|reason| DescriptionError::Input { line: entry.to_string(), reason })?;
            continue;
        }
        if words[0].eq_ignore_ascii_case("normalize") {
            let bad = |reason: String| DescriptionError::Input { line: entry.to_string(), reason };
            let [mean, std] = words[1..] else {
                return Err(bad("write normalize MEAN STD: the input is (pixel / 255 - MEAN) / STD".into()));
            };
            let (mean, std) = (number(mean, "the mean").map_err(bad)?, number(std, "the std").map_err(bad)?);
            if std <= 0.0 || !layers.is_empty() {
                return Err(bad("normalize comes before the layers, with a std above 0".into()));
            }
            normalization = Normalization { mean, std };
            continue;
        }
        let number = layers.len() + 1;
        // The shape so far: padding is resolved against it, and a bad layer is named as it is met.
        let shape = shape_after(&layers, input).map_err(|e| shape_error(e, &lines))?;
        let layer = parse_layer(&words, shape).map_err(|reason| DescriptionError::Syntax {
            layer: number,
            line: entry.to_string(),
            reason,
        })?;
        layers.push(layer);
        lines.push(entry.to_string());
        check_layer(&layer, shape).map_err(|reason| DescriptionError::Shape {
            layer: number,
            line: entry.to_string(),
            reason,
        })?;
    }
    if layers.is_empty() {
        return Err(DescriptionError::Empty);
    }
    shape_after(&layers, input).map_err(|e| shape_error(e, &lines))?;
    Ok(Network { name: name.to_string(), input, layers, normalization })
}

/// The description of `network`, one layer per line, which [`parse`] reads back to the same layers.
pub fn describe(network: &Network) -> String {
    let Shape { h, w, c } = network.input;
    let mut text = format!("input {h}x{w}x{c}\n");
    if !network.normalization.is_default() {
        let Normalization { mean, std } = network.normalization;
        text.push_str(&format!("normalize {mean} {std}\n"));
    }
    for layer in &network.layers {
        text.push_str(&layer.to_string());
        text.push('\n');
    }
    text
}

fn shape_after(layers: &[Layer], input: Shape) -> Result<Shape, NetworkError> {
    Ok(Plan::new(layers, input)?.output())
}

fn shape_error(e: NetworkError, lines: &[String]) -> DescriptionError {
    let index = match e {
        NetworkError::DenseNeedsFlatInput { layer, .. }
        | NetworkError::PoolNeedsEvenSize { layer, .. }
        | NetworkError::ZeroSize { layer }
        | NetworkError::Overflow { layer }
        | NetworkError::BadWindow { layer, .. }
        | NetworkError::WindowTooLarge { layer, .. }
        | NetworkError::BadArgument { layer, .. } => layer,
    };
    // Plan errors say "layer N" 0-based; descriptions count from 1.
    let reason = e.to_string();
    let reason = reason.split_once(": ").map_or(reason.as_str(), |(_, r)| r).to_string();
    let reason = match e {
        NetworkError::DenseNeedsFlatInput { input, .. } => {
            format!("dense needs a flat input, got {input}; add flatten")
        }
        _ => reason,
    };
    DescriptionError::Shape { layer: index + 1, line: lines.get(index).cloned().unwrap_or_default(), reason }
}

/// The rules a description adds to the plan's: a pool must cover its input (a dropped row or column is
/// almost always a mistake in a description; imported models may have one).
fn check_layer(layer: &Layer, input: Shape) -> Result<(), String> {
    let window = match layer {
        Layer::Pool { window, .. } => Some(*window),
        Layer::MaxPool => Some(Window::valid(2, 2, 2)),
        _ => None,
    };
    if let Some(window) = window {
        if window.check().is_err() || window.output(input.h, input.w).is_none() {
            return Ok(()); // The plan names these.
        }
        let (rows, cols) = window.dropped(input.h, input.w);
        if rows + cols > 0 {
            let padding = if window.has_padding() { "this padding" } else { "VALID padding" };
            let what = match (rows > 0, cols > 0) {
                (true, true) => "a row and a column",
                (true, false) => "a row",
                _ => "a column",
            };
            return Err(format!(
                "{}x{} pool on a {}x{} input with {padding} drops {what}; use same padding or another size",
                window.kh, window.kw, input.h, input.w
            ));
        }
    }
    Ok(())
}

fn parse_input(words: &[&str]) -> Result<Shape, String> {
    let dims: Vec<usize> = match words {
        [one] => {
            one.split('x').map(|d| d.parse().map_err(|_| format!("\"{d}\" is not a size"))).collect::<Result<_, _>>()?
        }
        _ => return Err("write the input as HxWxC, for example input 28x28x1".into()),
    };
    match dims[..] {
        [h, w, c] if h > 0 && w > 0 && c > 0 => Ok(Shape::new(h, w, c)),
        [h, w] if h > 0 && w > 0 => Ok(Shape::new(h, w, 1)),
        _ => Err("write the input as HxWxC with sizes above 0, for example input 28x28x1".into()),
    }
}

fn count(word: &str, what: &str) -> Result<usize, String> {
    match word.parse::<usize>() {
        Ok(v) if v > 0 => Ok(v),
        _ => Err(format!("{what} must be a whole number above 0, got \"{word}\"")),
    }
}

fn number(word: &str, what: &str) -> Result<f32, String> {
    word.parse::<f32>().ok().filter(|v| v.is_finite()).ok_or_else(|| format!("{what} must be a number, got \"{word}\""))
}

/// `K` or `KHxKW`.
fn size(word: &str, what: &str) -> Result<(usize, usize), String> {
    let parts: Vec<&str> = word.split('x').collect();
    let (h, w) = match parts[..] {
        [k] => (count(k, what)?, count(k, what)?),
        [h, w] => (count(h, what)?, count(w, what)?),
        _ => return Err(format!("{what} must be K or KxK, got \"{word}\"")),
    };
    if h > MAX_WINDOW || w > MAX_WINDOW {
        return Err(format!("{what} {h}x{w} is larger than {MAX_WINDOW}x{MAX_WINDOW}, the largest Kiln runs"));
    }
    Ok((h, w))
}

/// The options after a conv's or pool's size: `stride S`, a padding word, `count_pad` (pools).
struct WindowOptions {
    stride: usize,
    padding: Padding,
    count_pad: bool,
}

enum Padding {
    Same,
    Valid,
    Explicit([usize; 4]),
}

fn window_options(
    words: &[&str],
    default_stride: usize,
    default_padding: Padding,
    pool: bool,
) -> Result<WindowOptions, String> {
    let mut options = WindowOptions { stride: default_stride, padding: default_padding, count_pad: false };
    let mut i = 0;
    while i < words.len() {
        let value =
            |what: &str| words.get(i + 1).copied().ok_or_else(|| format!("\"{}\" needs {what} after it", words[i]));
        match words[i].to_ascii_lowercase().as_str() {
            "stride" | "strides" => {
                options.stride = count(value("a number")?, "the stride")?;
                i += 1;
            }
            "same" => options.padding = Padding::Same,
            "valid" => options.padding = Padding::Valid,
            "pad" | "padding" => {
                let v = value("P or T,B,L,R")?;
                let pads: Vec<usize> = v
                    .split(',')
                    .map(|p| p.parse().map_err(|_| format!("\"{p}\" is not a pad size")))
                    .collect::<Result<_, _>>()?;
                options.padding = match pads[..] {
                    [p] => Padding::Explicit([p; 4]),
                    [t, b, l, r] => Padding::Explicit([t, b, l, r]),
                    _ => return Err(format!("pad takes P or T,B,L,R, got \"{v}\"")),
                };
                i += 1;
            }
            "count_pad" if pool => options.count_pad = true,
            other => {
                let known =
                    if pool { "stride S, same, valid, pad P, count_pad" } else { "stride S, same, valid, pad P" };
                return Err(format!("unknown option \"{other}\" (options: {known})"));
            }
        }
        i += 1;
    }
    Ok(options)
}

fn window(kh: usize, kw: usize, options: &WindowOptions, input: Shape) -> Window {
    match options.padding {
        Padding::Same => Window::same(kh, kw, options.stride, input.h, input.w),
        Padding::Valid => Window::valid(kh, kw, options.stride),
        Padding::Explicit([top, bottom, left, right]) => {
            Window { kh, kw, sh: options.stride, sw: options.stride, top, bottom, left, right }
        }
    }
}

fn no_more(words: &[&str], keyword: &str) -> Result<(), String> {
    match words.get(1) {
        None => Ok(()),
        Some(extra) => Err(format!("{keyword} takes no arguments, got \"{extra}\"")),
    }
}

fn parse_layer(words: &[&str], input: Shape) -> Result<Layer, String> {
    let keyword = words[0].to_ascii_lowercase();
    let arg = |i: usize, what: &str| words.get(i).copied().ok_or_else(|| format!("{keyword} needs {what}"));
    Ok(match keyword.as_str() {
        "conv" | "conv2d" => {
            let (kh, kw) = size(arg(1, "a kernel size, for example conv 3x3 32")?, "the kernel")?;
            let filters = count(arg(2, "a filter count, for example conv 3x3 32")?, "the filter count")?;
            let options = window_options(&words[3..], 1, Padding::Same, false)?;
            Layer::conv(filters, window(kh, kw, &options, input))
        }
        "maxpool" | "avgpool" => {
            let (kh, kw) = size(arg(1, "a window size, for example maxpool 2")?, "the window")?;
            let options = window_options(&words[2..], kh.max(kw), Padding::Valid, true)?;
            let kind = if keyword == "maxpool" {
                if options.count_pad {
                    return Err("count_pad is for average pooling".into());
                }
                PoolKind::Max
            } else {
                PoolKind::Avg { count_pad: options.count_pad }
            };
            let window = Window { sh: options.stride, sw: options.stride, ..window(kh, kw, &options, input) };
            Layer::pool(kind, window, input)
        }
        "global_avgpool" | "globalavgpool" | "gap" => {
            no_more(words, &keyword)?;
            Layer::GlobalAvgPool
        }
        "dense" | "fc" => {
            Layer::Dense { units: count(arg(1, "a unit count, for example dense 10")?, "the unit count")? }
        }
        "flatten" => {
            no_more(words, &keyword)?;
            Layer::Flatten
        }
        "relu" => {
            no_more(words, &keyword)?;
            Layer::Relu
        }
        "relu6" => {
            no_more(words, &keyword)?;
            Layer::Activation(Activation::relu6())
        }
        "tanh" => {
            no_more(words, &keyword)?;
            Layer::Activation(Activation::Tanh)
        }
        "sigmoid" => {
            no_more(words, &keyword)?;
            Layer::Activation(Activation::Sigmoid)
        }
        "leaky_relu" | "leakyrelu" => {
            let alpha = match words.get(1) {
                Some(w) => number(w, "the slope")?,
                None => 0.01,
            };
            if alpha <= 0.0 {
                return Err(format!("leaky_relu's slope must be above 0, got {alpha}"));
            }
            Layer::Activation(Activation::LeakyRelu { alpha: Scalar::new(alpha) })
        }
        "clip" => {
            let min = number(arg(1, "MIN and MAX, for example clip 0 6")?, "the minimum")?;
            let max = number(arg(2, "MIN and MAX, for example clip 0 6")?, "the maximum")?;
            if min >= max {
                return Err(format!("clip's minimum {min} must be below its maximum {max}"));
            }
            Layer::Activation(Activation::Clip { min: Scalar::new(min), max: Scalar::new(max) })
        }
        "dropout" => {
            let rate = number(arg(1, "a rate, for example dropout 0.5")?, "the rate")?;
            if !(0.0..1.0).contains(&rate) {
                return Err(format!("dropout's rate must be at least 0 and below 1, got {rate}"));
            }
            Layer::Dropout { rate: Scalar::new(rate) }
        }
        "pad" => {
            let v = arg(1, "P or T,B,L,R")?;
            let pads: Vec<usize> = v
                .split(',')
                .map(|p| p.parse().map_err(|_| format!("\"{p}\" is not a pad size")))
                .collect::<Result<_, _>>()?;
            match pads[..] {
                [p] => Layer::Pad { top: p, bottom: p, left: p, right: p },
                [top, bottom, left, right] => Layer::Pad { top, bottom, left, right },
                _ => return Err(format!("pad takes P or T,B,L,R, got \"{v}\"")),
            }
        }
        "scale_shift" => {
            no_more(words, &keyword)?;
            Layer::ScaleShift
        }
        "batchnorm" | "batch_norm" | "bn" => {
            return Err("batch normalization does not train in Kiln; imported models fold it into the layer before \
                        (or run it as scale_shift, a learned per-channel scale and shift you can write here)"
                .into());
        }
        other => return Err(format!("unknown layer \"{other}\" (layers: {LAYER_WORDS})")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::presets;

    #[test]
    fn lenet5_reads_as_written() {
        let net = parse(
            "conv 5x5 6 same, tanh, avgpool 2, conv 5x5 16 valid, tanh, avgpool 2, flatten, dense 120, tanh, dense 84, \
             tanh, dense 10",
            "lenet5",
        )
        .unwrap();
        let shapes = net.shapes().unwrap();
        assert_eq!(shapes[3], Shape::new(14, 14, 6));
        assert_eq!(shapes[6], Shape::new(5, 5, 16));
        assert_eq!(net.param_count().unwrap(), 156 + 2416 + 48_120 + 10_164 + 850);
        assert_eq!(net.layers[0], Layer::Conv { filters: 6, window: Window::same(5, 5, 1, 28, 28) });
        assert_eq!(
            net.layers[2],
            Layer::Pool { kind: PoolKind::Avg { count_pad: false }, window: Window::valid(2, 2, 2) }
        );
    }

    #[test]
    fn shipped_descriptions_round_trip() {
        for name in presets::SHIPPED {
            let net = presets::by_name(name).unwrap();
            let again = parse(&describe(&net), name).unwrap();
            assert_eq!(again.layers, net.layers, "{name}");
            assert_eq!(again.input, net.input, "{name}");
        }
    }

    #[test]
    fn same_padding_is_tensorflows() {
        // Stride 2 on 28: output 14, total pad 1, at the bottom and right.
        let net = parse("conv 3x3 8 stride 2", "t").unwrap();
        assert_eq!(
            net.layers[0],
            Layer::Conv {
                filters: 8,
                window: Window { kh: 3, kw: 3, sh: 2, sw: 2, top: 0, bottom: 1, left: 0, right: 1 }
            }
        );
        assert_eq!(net.shapes().unwrap()[1], Shape::new(14, 14, 8));
        // The series' conv and pool get their own layers.
        let net = parse("conv 3x3 8, maxpool 2", "t").unwrap();
        assert_eq!(net.layers, [Layer::Conv2d { filters: 8 }, Layer::MaxPool]);
    }

    #[test]
    fn errors_name_the_layer_and_the_problem() {
        let err = |text: &str| parse(text, "t").unwrap_err().to_string();
        assert_eq!(
            err("conv 3x3 8, relu, maxpool 2, conv 3x3 4, dense 10"),
            "layer 5 (\"dense 10\"): dense needs a flat input, got [14, 14, 4]; add flatten"
        );
        assert_eq!(
            err("maxpool 2, maxpool 2, maxpool 2"),
            "layer 3 (\"maxpool 2\"): 2x2 pool on a 7x7 input with VALID padding drops a row and a column; use same \
             padding or another size"
        );
        assert!(err("conv 9x9 3").contains("larger than 7x7"), "{}", err("conv 9x9 3"));
        assert!(err("conv 3x3").contains("needs a filter count"));
        assert!(err("dense ten").contains("\"ten\""));
        assert!(err("relu, softmax").starts_with("layer 2 (\"softmax\"): unknown layer"));
        assert!(err("relu, input 28x28x1").contains("input must come first"));
        assert!(err("conv 5x5 4 valid, conv 5x5 4 valid, conv 5x5 4 valid, conv 5x5 4 valid, conv 5x5 4 valid, conv 5x5 4 valid, conv 5x5 4 valid")
            .starts_with("layer 7"));
        assert!(err("batchnorm").contains("scale_shift"));
        assert_eq!(parse("# nothing\n", "t").unwrap_err(), DescriptionError::Empty);
    }
}
