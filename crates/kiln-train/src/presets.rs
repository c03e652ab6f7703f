//! The series' three networks, exactly as in the brief (§2).

use kiln_core::network::{Layer, Shape};

use crate::network::{Network, Normalization};

/// The presets' names, for error messages and `--help`.
pub const NAMES: [&str; 3] = ["fc3", "convnet4", "vgg"];

/// MNIST digits: 28x28 grayscale.
pub const MNIST_INPUT: Shape = Shape::new(28, 28, 1);

/// Looks a preset up by name.
pub fn by_name(name: &str) -> Option<Network> {
    match name {
        "fc3" => Some(fc3()),
        "convnet4" => Some(convnet4()),
        "vgg" => Some(vgg()),
        _ => None,
    }
}

/// The defaults that won on the bundled data (docs/BENCHMARKS.md lists the runs behind them).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Recipe {
    pub epochs: u64,
    /// Learning rate when the optimizer is Adam (others use [`crate::optim::OptimizerKind::default_lr`]).
    pub adam_lr: f32,
    /// Random shift of up to this many pixels.
    pub augment_shift: usize,
}

/// The default recipe for a preset; `None` for unknown names.
pub fn recipe(name: &str) -> Option<Recipe> {
    match name {
        "fc3" => Some(Recipe { epochs: 5, adam_lr: 0.002, augment_shift: 1 }),
        "convnet4" => Some(Recipe { epochs: 3, adam_lr: 0.001, augment_shift: 2 }),
        "vgg" => Some(Recipe { epochs: 12, adam_lr: 0.001, augment_shift: 2 }),
        _ => None,
    }
}

/// Post 3: 784 → 500 ReLU → 500 ReLU → 10. 648,010 parameters.
pub fn fc3() -> Network {
    use Layer::*;
    Network {
        name: "fc3".into(),
        input: MNIST_INPUT,
        layers: vec![Flatten, Dense { units: 500 }, Relu, Dense { units: 500 }, Relu, Dense { units: 10 }],
        normalization: Normalization::UNIT_RANGE,
    }
}

/// Posts 5–6: conv64, conv64, pool, conv128, conv128, pool, flatten 6272, dense 10. 321,738 parameters.
pub fn convnet4() -> Network {
    use Layer::*;
    let conv = |filters| [Conv2d { filters }, Relu];
    let mut layers = Vec::new();
    layers.extend(conv(64));
    layers.extend(conv(64));
    layers.push(MaxPool);
    layers.extend(conv(128));
    layers.extend(conv(128));
    layers.push(MaxPool);
    layers.extend([Flatten, Dense { units: 10 }]);
    Network { name: "convnet4".into(), input: MNIST_INPUT, layers, normalization: Normalization::UNIT_RANGE }
}

/// Post 8: pad 28→32, then VGG blocks 64×2, 128×2, 256×3, 512×3 (each followed by a pool), dense 4096 ReLU,
/// dense 10. 16,067,786 parameters.
pub fn vgg() -> Network {
    use Layer::*;
    let mut layers = vec![Pad { top: 2, bottom: 2, left: 2, right: 2 }];
    for (filters, count) in [(64, 2), (128, 2), (256, 3), (512, 3)] {
        for _ in 0..count {
            layers.extend([Conv2d { filters }, Relu]);
        }
        layers.push(MaxPool);
    }
    layers.extend([Flatten, Dense { units: 4096 }, Relu, Dense { units: 10 }]);
    Network { name: "vgg".into(), input: MNIST_INPUT, layers, normalization: Normalization::UNIT_RANGE }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_counts_match_the_brief() {
        assert_eq!(fc3().param_count().unwrap(), 648_010);
        assert_eq!(convnet4().param_count().unwrap(), 321_738);
        assert_eq!(vgg().param_count().unwrap(), 16_067_786);
    }

    #[test]
    fn forward_flops_match_the_brief() {
        // The brief: 1.3, 146 and 584 MFLOP per image.
        let mflop = |n: Network| (n.forward_flops().unwrap() as f64 / 1e6).round();
        assert_eq!(mflop(fc3()), 1.0);
        assert_eq!(mflop(convnet4()), 146.0);
        assert_eq!(mflop(vgg()), 584.0);
    }

    #[test]
    fn vgg_shapes() {
        let shapes = vgg().shapes().unwrap();
        assert_eq!(shapes[1], Shape::new(32, 32, 1));
        let flat = vgg().layers.iter().position(|l| *l == Layer::Flatten).unwrap();
        assert_eq!(shapes[flat], Shape::new(2, 2, 512));
        assert_eq!(*shapes.last().unwrap(), Shape::flat(10));
    }

    #[test]
    fn tensor_scopes() {
        let scopes: Vec<_> = convnet4().param_layers().unwrap().into_iter().map(|p| p.scope).collect();
        assert_eq!(scopes, ["conv1", "conv2", "conv3", "conv4", "dense1"]);
    }
}
