//! The quantization plan: which weight type each parametric layer is stored in.
//!
//! A plan starts from a base type for every layer (`int8`, `int4/64`, ...) or the `mixed` policy, and then
//! applies per-layer overrides by scope name (`dense1=int2`). Biases are always f32.

use thiserror::Error;

use crate::writer::Quant;

/// Layers with at least this many weights get 2 bits in the `mixed` plan, the rest 4. On the VGG that is
/// conv5–conv10 and dense1 (15.8 M of its 16.1 M weights); the small early convs, which see every pixel,
/// and the output layer are where 2 bits cost accuracy (docs/BENCHMARKS.md, the frontier).
pub const MIXED_INT2_MIN_WEIGHTS: usize = 1 << 18;
/// Values per scale for the `mixed` plan's 2-bit layers: 2.125 bits per weight; on the VGG's big layers a
/// scale per 128 weights loses no more than one per 32 (the frontier again).
pub const MIXED_INT2_BLOCK: usize = 128;
/// The `mixed` plan's type for the layers below [`MIXED_INT2_MIN_WEIGHTS`].
pub const MIXED_SMALL: Quant = Quant::Int4 { block: 32 };

/// The name of the `mixed` policy, accepted wherever a base type is.
pub const MIXED: &str = "mixed";

/// One parametric layer as the plan sees it: its scope name (`conv1`, `dense2`) and its weight count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerWeights {
    pub scope: String,
    pub weights: usize,
}

/// Why a plan could not be made. The messages name no command-line flag; a caller adds that context
/// ([`QuantPlanError::override_spec`] says which `SCOPE=TYPE` failed).
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum QuantPlanError {
    /// The base type is neither a weight type nor `mixed`.
    #[error("{reason}")]
    Base { base: String, reason: String },
    /// An override is not `SCOPE=TYPE`.
    #[error("expected SCOPE=TYPE, e.g. dense1=int2")]
    Syntax { spec: String },
    /// An override names a scope the network does not have.
    #[error("no layer named {scope} (the layers are {})", .layers.join(", "))]
    UnknownLayer { spec: String, scope: String, layers: Vec<String> },
    /// An override's type is not a weight type.
    #[error("{reason}")]
    Type { spec: String, reason: String },
}

impl QuantPlanError {
    /// The `SCOPE=TYPE` override the error is about, if it is about one.
    pub fn override_spec(&self) -> Option<&str> {
        match self {
            QuantPlanError::Base { .. } => None,
            QuantPlanError::Syntax { spec }
            | QuantPlanError::UnknownLayer { spec, .. }
            | QuantPlanError::Type { spec, .. } => Some(spec),
        }
    }
}

/// The weight type of each parametric layer, in layer order, and a short description of the whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuantPlan {
    pub quants: Vec<Quant>,
    /// `int8`, `int4/64`, or for a mix `mixed: dense1=int2, others int4`. It is what the `.kiln`
    /// metadata's quantization field records.
    pub description: String,
}

impl QuantPlan {
    /// `quant` for all `layers` layers.
    pub fn uniform(quant: Quant, layers: usize) -> QuantPlan {
        QuantPlan { quants: vec![quant; layers], description: quant.to_string() }
    }

    /// The plan for `layers` from a base type (a weight type, or [`MIXED`]) and `SCOPE=TYPE` overrides.
    pub fn new<S: AsRef<str>>(
        layers: &[LayerWeights],
        base: &str,
        overrides: &[S],
    ) -> Result<QuantPlan, QuantPlanError> {
        let scopes: Vec<String> = layers.iter().map(|l| l.scope.clone()).collect();
        let mut plan = if base == MIXED {
            let quants = layers
                .iter()
                .map(|l| {
                    if l.weights >= MIXED_INT2_MIN_WEIGHTS {
                        Quant::Int2 { block: MIXED_INT2_BLOCK }
                    } else {
                        MIXED_SMALL
                    }
                })
                .collect();
            QuantPlan { quants, description: MIXED.into() }
        } else {
            let q: Quant = base.parse().map_err(|reason| QuantPlanError::Base { base: base.into(), reason })?;
            QuantPlan::uniform(q, scopes.len())
        };
        for spec in overrides {
            let spec = spec.as_ref();
            let Some((scope, q)) = spec.split_once('=') else {
                return Err(QuantPlanError::Syntax { spec: spec.into() });
            };
            let Some(i) = scopes.iter().position(|s| s == scope) else {
                return Err(QuantPlanError::UnknownLayer { spec: spec.into(), scope: scope.into(), layers: scopes });
            };
            plan.quants[i] = q.parse().map_err(|reason| QuantPlanError::Type { spec: spec.into(), reason })?;
        }
        if base == MIXED || !overrides.is_empty() {
            plan.description = describe_mix(&scopes, &plan.quants);
        }
        Ok(plan)
    }

    /// [`QuantPlan::new`] from one string, `BASE[,SCOPE=TYPE...]`, e.g. `int4,dense1=int2`.
    pub fn parse(layers: &[LayerWeights], spec: &str) -> Result<QuantPlan, QuantPlanError> {
        let mut parts = spec.split(',');
        let base = parts.next().unwrap_or_default();
        let overrides: Vec<&str> = parts.collect();
        QuantPlan::new(layers, base, &overrides)
    }
}

/// `mixed: dense1=int2, others int4`: the most common type, and the layers that differ from it.
fn describe_mix(scopes: &[String], choice: &[Quant]) -> String {
    let most = choice.iter().max_by_key(|q| choice.iter().filter(|c| c == q).count()).copied();
    let Some(most) = most else { return MIXED.into() };
    let others: Vec<String> =
        scopes.iter().zip(choice).filter(|(_, q)| **q != most).map(|(s, q)| format!("{s}={q}")).collect();
    if others.is_empty() {
        format!("mixed: all {most}")
    } else {
        format!("mixed: {}, others {most}", others.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fc3() -> Vec<LayerWeights> {
        [("dense1", 784 * 500), ("dense2", 500 * 500), ("dense3", 500 * 10)]
            .map(|(scope, weights)| LayerWeights { scope: scope.into(), weights })
            .to_vec()
    }

    #[test]
    fn a_base_type_applies_to_every_layer() {
        let plan = QuantPlan::new::<&str>(&fc3(), "int4/64", &[]).unwrap();
        assert_eq!(plan.quants, vec![Quant::Int4 { block: 64 }; 3]);
        assert_eq!(plan.description, "int4/64");
        assert_eq!(
            QuantPlan::uniform(Quant::F32, 2),
            QuantPlan { quants: vec![Quant::F32; 2], description: "f32".into() }
        );
    }

    #[test]
    fn mixed_gives_the_big_layers_two_bits() {
        // dense1 (392,000 weights) is over the threshold, dense2 (250,000) and dense3 are not.
        let plan = QuantPlan::new::<&str>(&fc3(), MIXED, &[]).unwrap();
        assert_eq!(plan.quants, [Quant::Int2 { block: 128 }, MIXED_SMALL, MIXED_SMALL]);
        assert_eq!(plan.description, "mixed: dense1=int2/128, others int4");
    }

    #[test]
    fn overrides_change_one_layer_each() {
        let plan = QuantPlan::new(&fc3(), "int8", &["dense1=int2"]).unwrap();
        assert_eq!(plan.quants, [Quant::Int2 { block: 32 }, Quant::Int8, Quant::Int8]);
        assert_eq!(plan.description, "mixed: dense1=int2, others int8");
        let plan = QuantPlan::parse(&fc3(), "int4,dense1=int8,dense2=int8,dense3=int8").unwrap();
        assert_eq!(plan.description, "mixed: all int8");
        assert_eq!(QuantPlan::parse(&fc3(), "f16").unwrap(), QuantPlan::uniform(Quant::F16, 3));
    }

    #[test]
    fn bad_plans_say_what_is_wrong() {
        let err = QuantPlan::new::<&str>(&fc3(), "int3", &[]).unwrap_err();
        assert!(err.to_string().starts_with("unknown weight type \"int3\""), "{err}");
        assert_eq!(err.override_spec(), None);
        let err = QuantPlan::new(&fc3(), "int8", &["conv9=int4"]).unwrap_err();
        assert_eq!(err.to_string(), "no layer named conv9 (the layers are dense1, dense2, dense3)");
        assert_eq!(err.override_spec(), Some("conv9=int4"));
        let err = QuantPlan::new(&fc3(), "int8", &["dense1"]).unwrap_err();
        assert_eq!(err, QuantPlanError::Syntax { spec: "dense1".into() });
        let err = QuantPlan::parse(&fc3(), "int8,dense2=int9").unwrap_err();
        assert!(matches!(&err, QuantPlanError::Type { spec, .. } if spec == "dense2=int9"), "{err:?}");
    }
}
