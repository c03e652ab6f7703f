//! A named network: the input shape, the layer list and the class count, plus the naming of its tensors.

use kiln_core::network::{Layer, NetworkError, Shape};
use kiln_core::plan::{ParamSlot, Plan, Step};
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

    /// The network input for an 8-bit pixel. kiln-core's `Session::run_pixels` computes the same.
    pub fn apply(&self, pixel: u8) -> f32 {
        (pixel as f32 / 255.0 - self.mean) / self.std
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
    /// Its place in a flat parameter list.
    pub slot: ParamSlot,
    pub layer: usize,
    pub scope: String,
    pub input: Shape,
    /// `[3,3,in,out]` or `[in,out]`.
    pub weight_dims: Vec<usize>,
    /// `[out]`
    pub bias_dims: Vec<usize>,
}

impl Network {
    /// The network's plan: the one walk over its layers (kiln-core's [`Plan`]).
    pub fn plan(&self) -> Result<Plan<'_>, NetworkError> {
        Plan::new(&self.layers, self.input)
    }

    /// The plan's steps, one per layer.
    pub fn steps(&self) -> Result<Vec<Step>, NetworkError> {
        Ok(self.plan()?.steps().collect())
    }

    /// Checks the whole description and returns the output shape.
    pub fn validate(&self) -> Result<Shape, NetworkError> {
        Ok(self.plan()?.output())
    }

    /// `shapes[i]` is the input of layer `i`; the last entry is the network output.
    pub fn shapes(&self) -> Result<Vec<Shape>, NetworkError> {
        let plan = self.plan()?;
        Ok(plan.steps().map(|s| s.input).chain([plan.output()]).collect())
    }

    /// Number of output classes (the last layer's width).
    pub fn classes(&self) -> Result<usize, NetworkError> {
        Ok(self.validate()?.len())
    }

    pub fn param_count(&self) -> Result<usize, NetworkError> {
        Ok(self.plan()?.param_count())
    }

    /// Forward FLOPs for one image.
    pub fn forward_flops(&self) -> Result<u64, NetworkError> {
        Ok(self.plan()?.forward_flops())
    }

    /// Layer names as the series' TensorFlow code would scope them: `conv1`, `relu1`, `pool1`, `dense1`...
    /// ReLUs take the name of the layer they follow (`conv1/relu`).
    pub fn layer_names(&self) -> Vec<String> {
        let (mut conv, mut dense, mut pool, mut pad, mut flat, mut scale) = (0, 0, 0, 0, 0, 0);
        let mut last_param = String::from("input");
        let count = |n: &mut usize, prefix: &str| {
            *n += 1;
            format!("{prefix}{n}")
        };
        self.layers
            .iter()
            .map(|layer| match layer {
                Layer::Conv2d { .. } => {
                    last_param = count(&mut conv, "conv");
                    last_param.clone()
                }
                Layer::Dense { .. } => {
                    last_param = count(&mut dense, "dense");
                    last_param.clone()
                }
                Layer::Conv { .. } => {
                    last_param = count(&mut conv, "conv");
                    last_param.clone()
                }
                Layer::ScaleShift => {
                    last_param = count(&mut scale, "scale");
                    last_param.clone()
                }
                Layer::Relu => format!("{last_param}/relu"),
                Layer::Activation(a) => format!("{last_param}/{}", a.name()),
                Layer::Dropout { .. } => format!("{last_param}/dropout"),
                Layer::MaxPool | Layer::Pool { .. } => count(&mut pool, "pool"),
                Layer::GlobalAvgPool => count(&mut pool, "global_pool"),
                Layer::Pad { .. } => count(&mut pad, "pad"),
                Layer::Flatten => count(&mut flat, "flatten"),
            })
            .collect()
    }

    /// The parametric layers in order (the plan's [`ParamSlot`] order), with their tensor scopes and shapes.
    pub fn param_layers(&self) -> Result<Vec<ParamLayer>, NetworkError> {
        let names = self.layer_names();
        Ok(self
            .plan()?
            .steps()
            .filter_map(|step| {
                let slot = step.params?;
                let (dims, rank) = step.layer.weight_dims(step.input)?;
                Some(ParamLayer {
                    slot,
                    layer: step.index,
                    scope: names[step.index].clone(),
                    input: step.input,
                    weight_dims: dims[..rank].to_vec(),
                    bias_dims: vec![step.param_lens().1],
                })
            })
            .collect())
    }

    /// One row per layer, for `--summary`.
    pub fn summary(&self) -> Result<Vec<SummaryRow>, NetworkError> {
        let names = self.layer_names();
        Ok(self
            .plan()?
            .steps()
            .zip(names)
            .map(|(step, name)| SummaryRow {
                name,
                layer: step.layer,
                output: step.output,
                params: step.layer.param_count(step.input),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::presets;

    /// Checkpoints store the network as JSON: this spelling is a file format and must not drift.
    #[test]
    fn layer_json_spelling_is_pinned() {
        let network = Network {
            name: "every-kind".into(),
            input: Shape::new(6, 6, 1),
            normalization: Normalization::UNIT_RANGE,
            layers: vec![
                Layer::Pad { top: 1, bottom: 2, left: 3, right: 4 },
                Layer::Conv2d { filters: 3 },
                Layer::Relu,
                Layer::MaxPool,
                Layer::Flatten,
                Layer::Dense { units: 5 },
            ],
        };
        let json = serde_json::to_string(&network).unwrap();
        assert_eq!(
            json,
            r#"{"name":"every-kind","input":{"h":6,"w":6,"c":1},"layers":[{"pad":{"top":1,"bottom":2,"left":3,"right":4}},{"conv2d":{"filters":3}},"relu","max_pool","flatten",{"dense":{"units":5}}]}"#
        );
        let back: Network = serde_json::from_str(&json).unwrap();
        assert_eq!(back, network);
    }

    /// The same for the layers past the series'.
    #[test]
    fn layer_json_spelling_is_pinned_past_the_series() {
        let text = "input 8x8x1, conv 3x3 2 stride 2, avgpool 2 stride 1 count_pad, maxpool 2 stride 1, tanh, sigmoid, \
                    clip 0 6, leaky_relu 0.25, scale_shift, dropout 0.5, global_avgpool, dense 2";
        let network = crate::description::parse(text, "past").unwrap();
        let json = serde_json::to_string(&network).unwrap();
        assert_eq!(json, PAST_THE_SERIES_JSON);
        let back: Network = serde_json::from_str(&json).unwrap();
        assert_eq!(back, network);
    }

    const PAST_THE_SERIES_JSON: &str = r#"{"name":"past","input":{"h":8,"w":8,"c":1},"layers":[{"conv":{"filters":2,"window":{"kh":3,"kw":3,"sh":2,"sw":2,"top":0,"bottom":1,"left":0,"right":1}}},{"pool":{"kind":{"avg":{"count_pad":true}},"window":{"kh":2,"kw":2,"sh":1,"sw":1,"top":0,"bottom":0,"left":0,"right":0}}},{"pool":{"kind":"max","window":{"kh":2,"kw":2,"sh":1,"sw":1,"top":0,"bottom":0,"left":0,"right":0}}},{"activation":"tanh"},{"activation":"sigmoid"},{"activation":{"clip":{"min":0.0,"max":6.0}}},{"activation":{"leaky_relu":{"alpha":0.25}}},"scale_shift",{"dropout":{"rate":0.5}},"global_avg_pool",{"dense":{"units":2}}]}"#;

    #[test]
    fn summary_follows_the_plan() {
        let vgg = presets::vgg();
        let rows = vgg.summary().unwrap();
        assert_eq!(rows.len(), vgg.layers.len());
        assert_eq!(rows.iter().map(|r| r.params).sum::<usize>(), 16_067_786);
        let params = vgg.param_layers().unwrap();
        assert_eq!(params.iter().map(|p| p.slot.index).collect::<Vec<_>>(), (0..params.len()).collect::<Vec<_>>());
        assert_eq!((params[0].scope.as_str(), params.last().unwrap().scope.as_str()), ("conv1", "dense2"));
    }

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
