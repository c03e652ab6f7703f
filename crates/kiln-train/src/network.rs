//! A named network: the input shape, the layer list and the class count, plus the naming of its tensors.

use kiln_core::network::{self, Layer, NetworkError, Shape};
use serde::{Deserialize, Serialize};

/// A network description that can be rebuilt from a file: everything but the weights.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Network {
    /// Preset name (`fc3`, `convnet4`, `vgg`) or a user's name.
    pub name: String,
    /// Per-image input shape; MNIST is `28x28x1`.
    pub input: Shape,
    pub layers: Vec<Layer>,
    /// How 8-bit pixels become the network's inputs. Descriptions written before this field existed, and
    /// networks that use the default, leave it out of the file.
    #[serde(default, skip_serializing_if = "Normalization::is_default")]
    pub normalization: Normalization,
}

/// The input preprocessing: `input = (pixel / 255 - mean) / std`. It travels with the network into every
/// packed `.kiln` file, whose runtime applies it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    pub mean: f32,
    pub std: f32,
}

impl Normalization {
    /// Pixels scaled to 0..=1 and nothing more (mean 0, std 1): what the trainer feeds (`batch.rs`), and
    /// what every network trained so far expects.
    pub const UNIT_RANGE: Normalization = Normalization { mean: 0.0, std: 1.0 };

    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

impl Default for Normalization {
    fn default() -> Self {
        Self::UNIT_RANGE
    }
}

/// One row of `kiln train --summary`.
#[derive(Clone, Debug, PartialEq)]
pub struct SummaryRow {
    /// `conv3`, `relu3`, `pool1`, ...
    pub name: String,
    pub layer: Layer,
    pub output: Shape,
    pub params: usize,
}

/// Where a parametric layer's tensors live: its layer index and its scope name (`conv1`, `dense2`).
#[derive(Clone, Debug, PartialEq)]
pub struct ParamLayer {
    pub layer: usize,
    pub scope: String,
    pub input: Shape,
    /// `[3,3,in,out]` or `[in,out]`.
    pub weight_dims: Vec<usize>,
    /// `[out]`
    pub bias_dims: Vec<usize>,
}

impl Network {
    /// Checks the whole description and returns the output shape.
    pub fn validate(&self) -> Result<Shape, NetworkError> {
        network::infer(&self.layers, self.input)
    }

    /// `shapes[i]` is the input of layer `i`; the last entry is the network output.
    pub fn shapes(&self) -> Result<Vec<Shape>, NetworkError> {
        let mut shapes = Vec::with_capacity(self.layers.len() + 1);
        let mut shape = self.input;
        shapes.push(shape);
        for (i, layer) in self.layers.iter().enumerate() {
            shape = layer.output_shape(i, shape)?;
            shapes.push(shape);
        }
        Ok(shapes)
    }

    /// Number of output classes (the last layer's width).
    pub fn classes(&self) -> Result<usize, NetworkError> {
        Ok(self.validate()?.len())
    }

    pub fn param_count(&self) -> Result<usize, NetworkError> {
        network::param_count(&self.layers, self.input)
    }

    /// Forward FLOPs for one image.
    pub fn forward_flops(&self) -> Result<u64, NetworkError> {
        let shapes = self.shapes()?;
        Ok(self.layers.iter().enumerate().map(|(i, l)| l.forward_flops(shapes[i], shapes[i + 1])).sum())
    }

    /// Layer names as the series' TensorFlow code would scope them: `conv1`, `relu1`, `pool1`, `dense1`...
    /// ReLUs take the number of the layer they follow.
    pub fn layer_names(&self) -> Vec<String> {
        let (mut conv, mut dense, mut pool, mut pad, mut flat) = (0, 0, 0, 0, 0);
        let mut last_param = String::from("input");
        self.layers
            .iter()
            .map(|layer| {
                let count = |n: &mut usize, prefix: &str| {
                    *n += 1;
                    format!("{prefix}{n}")
                };
                match layer {
                    Layer::Conv2d { .. } => {
                        last_param = count(&mut conv, "conv");
                        last_param.clone()
                    }
                    Layer::Dense { .. } => {
                        last_param = count(&mut dense, "dense");
                        last_param.clone()
                    }
                    Layer::Relu => format!("{last_param}/relu"),
                    Layer::MaxPool => count(&mut pool, "pool"),
                    Layer::Pad { .. } => count(&mut pad, "pad"),
                    Layer::Flatten => count(&mut flat, "flatten"),
                }
            })
            .collect()
    }

    /// The parametric layers in order, with their tensor scopes and shapes.
    pub fn param_layers(&self) -> Result<Vec<ParamLayer>, NetworkError> {
        let shapes = self.shapes()?;
        let names = self.layer_names();
        Ok(self
            .layers
            .iter()
            .enumerate()
            .filter_map(|(i, layer)| {
                let (dims, rank) = layer.weight_dims(shapes[i])?;
                let (_, bias) = layer.param_lens(shapes[i]);
                Some(ParamLayer {
                    layer: i,
                    scope: names[i].clone(),
                    input: shapes[i],
                    weight_dims: dims[..rank].to_vec(),
                    bias_dims: vec![bias],
                })
            })
            .collect())
    }

    /// One row per layer, for `--summary`.
    pub fn summary(&self) -> Result<Vec<SummaryRow>, NetworkError> {
        let shapes = self.shapes()?;
        Ok(self
            .layer_names()
            .into_iter()
            .zip(&self.layers)
            .enumerate()
            .map(|(i, (name, layer))| SummaryRow {
                name,
                layer: *layer,
                output: shapes[i + 1],
                params: layer.param_count(shapes[i]),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::presets;

    #[test]
    fn normalization_defaults_and_stays_out_of_old_files() {
        // A description written before the field existed still loads, with the trainer's preprocessing.
        let old = r#"{"name":"fc3","input":{"h":28,"w":28,"c":1},"layers":["flatten",{"dense":{"units":10}}]}"#;
        let network: Network = serde_json::from_str(old).unwrap();
        assert_eq!(network.normalization, Normalization { mean: 0.0, std: 1.0 });
        // The default is left out, so files written today are unchanged.
        let text = serde_json::to_string(&presets::fc3()).unwrap();
        assert!(!text.contains("normalization"), "{text}");
        // Any other value is kept.
        let mut network = presets::fc3();
        network.normalization = Normalization { mean: 0.1307, std: 0.3081 };
        let back: Network = serde_json::from_str(&serde_json::to_string(&network).unwrap()).unwrap();
        assert_eq!(back, network);
    }
}
