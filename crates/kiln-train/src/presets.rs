//! The series' three networks, exactly as in the brief (§2).

use kiln_core::network::Shape;

use crate::network::Network;

/// The presets' names, for error messages and `--help`.
pub const NAMES: [&str; 3] = ["fc3", "convnet4", "vgg"];

/// MNIST digits: 28x28 grayscale.
pub const MNIST_INPUT: Shape = Shape::new(28, 28, 1);

/// Looks a shipped network up by name ([`SHIPPED`]).
pub fn by_name(name: &str) -> Option<Network> {
    description(name).map(|_| shipped(name))
}

/// The defaults that won on the bundled data (docs/BENCHMARKS.md lists the runs behind them).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Recipe {
    pub epochs: u64,
    /// Learning rate when the optimizer is Adam (others use [`crate::optim::OptimizerKind::default_lr`]).
    pub adam_lr: f32,
    /// Random shift of up to this many pixels.
    pub augment_shift: usize,
    /// Images per update.
    pub batch: usize,
}

/// The default recipe for a preset; `None` for unknown names.
pub fn recipe(name: &str) -> Option<Recipe> {
    match name {
        "fc3" => Some(Recipe { epochs: 5, adam_lr: 0.002, augment_shift: 1, batch: 64 }),
        "convnet4" => Some(Recipe { epochs: 3, adam_lr: 0.001, augment_shift: 2, batch: 64 }),
        "vgg" => Some(Recipe { epochs: 12, adam_lr: 0.001, augment_shift: 2, batch: 64 }),
        "lenet5" => Some(DESCRIBED_RECIPE),
        _ => None,
    }
}

/// The recipe for a network without its own: LeNet-5's, 5 epochs of Adam on batches of 16.
pub const DESCRIBED_RECIPE: Recipe = Recipe { epochs: 5, adam_lr: 0.002, augment_shift: 1, batch: 16 };

/// The shipped descriptions (`nets/*.txt`): the series' three networks and LeNet-5.
pub const SHIPPED: [&str; 4] = ["fc3", "convnet4", "vgg", "lenet5"];

/// The text of a shipped description.
pub fn description(name: &str) -> Option<&'static str> {
    match name {
        "fc3" => Some(include_str!("../nets/fc3.txt")),
        "convnet4" => Some(include_str!("../nets/convnet4.txt")),
        "vgg" => Some(include_str!("../nets/vgg.txt")),
        "lenet5" => Some(include_str!("../nets/lenet5.txt")),
        _ => None,
    }
}

fn shipped(name: &str) -> Network {
    let text = description(name).expect("a shipped name");
    crate::description::parse(text, name).expect("the shipped descriptions are tested")
}

/// Post 3: 784 → 500 ReLU → 500 ReLU → 10. 648,010 parameters.
pub fn fc3() -> Network {
    shipped("fc3")
}

/// Posts 5–6: conv64, conv64, pool, conv128, conv128, pool, flatten 6272, dense 10. 321,738 parameters.
pub fn convnet4() -> Network {
    shipped("convnet4")
}

/// Post 8: pad 28→32, then VGG blocks 64×2, 128×2, 256×3, 512×3 (each followed by a pool), dense 4096 ReLU,
/// dense 10. 16,067,786 parameters.
pub fn vgg() -> Network {
    shipped("vgg")
}

/// LeNet-5: 5x5 convs, tanh, average pooling. 61,706 parameters.
pub fn lenet5() -> Network {
    shipped("lenet5")
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_core::network::Layer;

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
    fn the_series_networks_are_their_layers() {
        use Layer::*;
        assert_eq!(
            fc3().layers,
            [Flatten, Dense { units: 500 }, Relu, Dense { units: 500 }, Relu, Dense { units: 10 }]
        );
        assert_eq!(convnet4().layers[..3], [Conv2d { filters: 64 }, Relu, Conv2d { filters: 64 }]);
        assert_eq!(vgg().layers[0], Pad { top: 2, bottom: 2, left: 2, right: 2 });
        assert_eq!(lenet5().param_count().unwrap(), 61_706);
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
