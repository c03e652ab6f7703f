//! Writes `.kiln` files: the byte layout of docs/FORMAT.md, produced from f32 tensors and a
//! quantization choice per layer. Every file written is read back by `kiln_core`'s validating reader
//! before it is returned, so the writer can never hand out a file the runtime would reject.

use std::fmt;
use std::str::FromStr;

use half::f16;
use kiln_core::format::{self as fmt_spec, DType, FormatError, Model};
use kiln_core::network::{Layer, NetworkError, Shape};
use kiln_core::plan::Plan;

use crate::quant::{self, DEFAULT_BLOCK, QuantError};

/// How one layer's weights are stored. Biases are always f32.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quant {
    F32,
    F16,
    /// Symmetric int8, one f32 scale per output channel.
    Int8,
    /// 4-bit levels, one f16 scale per `block` values.
    Int4 {
        block: usize,
    },
    /// 2-bit levels ±0.5, ±1.5, one f16 scale per `block` values.
    Int2 {
        block: usize,
    },
}

impl FromStr for Quant {
    type Err = String;

    /// `f32`, `f16`, `int8`, `int4`, `int2`, and for the block types an optional block size: `int4/64`.
    fn from_str(s: &str) -> Result<Quant, String> {
        let (kind, block) = match s.split_once('/') {
            Some((kind, block)) => {
                let block = block.parse().map_err(|_| format!("bad block size in \"{s}\""))?;
                (kind, Some(block))
            }
            None => (s, None),
        };
        let blocked = |make: fn(usize) -> Quant| Ok(make(block.unwrap_or(DEFAULT_BLOCK)));
        match kind {
            "int4" => blocked(|block| Quant::Int4 { block }),
            "int2" => blocked(|block| Quant::Int2 { block }),
            _ if block.is_some() => Err(format!("\"{kind}\" takes no block size")),
            "f32" => Ok(Quant::F32),
            "f16" => Ok(Quant::F16),
            "int8" => Ok(Quant::Int8),
            _ => Err(format!("unknown weight type \"{s}\" (expected f32, f16, int8, int4, int2, or int4/BLOCK)")),
        }
    }
}

impl fmt::Display for Quant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Quant::F32 => write!(f, "f32"),
            Quant::F16 => write!(f, "f16"),
            Quant::Int8 => write!(f, "int8"),
            Quant::Int4 { block } if block == DEFAULT_BLOCK => write!(f, "int4"),
            Quant::Int2 { block } if block == DEFAULT_BLOCK => write!(f, "int2"),
            Quant::Int4 { block } => write!(f, "int4/{block}"),
            Quant::Int2 { block } => write!(f, "int2/{block}"),
        }
    }
}

/// A tensor in its stored form.
#[derive(Clone, Debug, PartialEq)]
pub struct PackedTensor {
    pub name: String,
    pub dims: Vec<usize>,
    pub dtype: DType,
    /// Values per scale for block dtypes, else 0.
    pub block: usize,
    pub data: Vec<u8>,
    pub scales: Vec<u8>,
}

impl PackedTensor {
    pub fn len(&self) -> usize {
        self.dims.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stored bytes, values plus scales (alignment padding not counted).
    pub fn stored_bytes(&self) -> usize {
        self.data.len() + self.scales.len()
    }
}

/// Why a model could not be packed.
#[derive(Debug)]
pub enum PackError {
    /// A tensor could not be quantized (a NaN weight, ...).
    Quant { tensor: String, error: QuantError },
    /// The layer list is invalid.
    Network(NetworkError),
    /// A tensor's length does not match its dimensions, or its shape does not fit its layer.
    Shape { tensor: String, detail: String },
    /// More layers, tensors or dimensions than the format holds, or a name or string too long.
    Limit(String),
    /// The written file failed validation: a bug in the writer.
    Invalid(FormatError),
}

impl fmt::Display for PackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PackError::Quant { tensor, error } => write!(f, "cannot quantize {tensor}: {error}"),
            PackError::Network(e) => write!(f, "{e}"),
            PackError::Shape { tensor, detail } => write!(f, "tensor {tensor}: {detail}"),
            PackError::Limit(what) => write!(f, "{what}"),
            PackError::Invalid(e) => write!(f, "internal error: the packed file does not validate: {e}"),
        }
    }
}

impl std::error::Error for PackError {}

/// Stores `values` (a tensor of shape `dims`, output channel last) as `quant`.
pub fn pack_tensor(name: &str, dims: &[usize], values: &[f32], quant: Quant) -> Result<PackedTensor, PackError> {
    let count: usize = dims.iter().product();
    if values.len() != count || dims.is_empty() || dims.len() > 4 {
        let detail = format!("{} values for dimensions {dims:?}", values.len());
        return Err(PackError::Shape { tensor: name.to_string(), detail });
    }
    let q_err = |error| PackError::Quant { tensor: name.to_string(), error };
    let (dtype, block, data, scales) = match quant {
        Quant::F32 => {
            if let Some(index) = values.iter().position(|v| !v.is_finite()) {
                return Err(q_err(QuantError::NonFinite { index, value: values[index] }));
            }
            (DType::F32, 0, values.iter().flat_map(|v| v.to_le_bytes()).collect(), vec![])
        }
        Quant::F16 => {
            let halves = quant::to_f16(values).map_err(q_err)?;
            (DType::F16, 0, halves.iter().flat_map(|h| h.to_le_bytes()).collect(), vec![])
        }
        Quant::Int8 => {
            let q = quant::int8_per_channel(values, dims[dims.len() - 1]).map_err(q_err)?;
            let scales = q.scales.iter().flat_map(|s| s.to_le_bytes()).collect();
            (DType::Int8, 0, q.values.iter().map(|&v| v as u8).collect(), scales)
        }
        Quant::Int4 { block } | Quant::Int2 { block } => {
            let (dtype, q) = match quant {
                Quant::Int4 { .. } => (DType::Int4, quant::int4_blocks(values, block)),
                _ => (DType::Int2, quant::int2_blocks(values, block)),
            };
            let q = q.map_err(q_err)?;
            let scales = q.scales.iter().flat_map(|s: &f16| s.to_le_bytes()).collect();
            (dtype, block, q.packed, scales)
        }
    };
    Ok(PackedTensor { name: name.to_string(), dims: dims.to_vec(), dtype, block, data, scales })
}

/// The metadata section's contents.
#[derive(Clone, Debug, PartialEq)]
pub struct Metadata {
    pub input: Shape,
    /// One per class, in class order.
    pub labels: Vec<String>,
    /// Preprocessing: `input = (pixel / 255 - mean) / std`.
    pub mean: f32,
    pub std: f32,
    pub model_name: String,
    pub kiln_version: String,
    pub source_file: String,
    pub quantization: String,
    pub source_step: u64,
    pub source_sha256: [u8; 32],
    pub test_correct: u32,
    pub test_examples: u32,
    /// Static input scales, one per conv or dense layer (`kiln convert --activations static`); empty for
    /// dynamic activations.
    pub activations: Vec<kiln_core::kernels::ActivationScale>,
}

fn u32_of(v: usize, what: &str) -> Result<u32, PackError> {
    u32::try_from(v).map_err(|_| PackError::Limit(format!("{what} {v} does not fit in 32 bits")))
}

/// The activation-scales section (empty when there are none): count, reserved, then scale and zero point
/// per layer.
fn activation_bytes(scales: &[kiln_core::kernels::ActivationScale]) -> Result<Vec<u8>, PackError> {
    if scales.is_empty() {
        return Ok(Vec::new());
    }
    let mut b = Vec::with_capacity(8 + scales.len() * fmt_spec::ACTIVATION_ENTRY_LEN);
    b.extend(u32_of(scales.len(), "activation scale count")?.to_le_bytes());
    b.extend(0u32.to_le_bytes());
    for s in scales {
        b.extend(s.scale.to_le_bytes());
        b.extend(u32_of(s.zero.max(0) as usize, "zero point")?.to_le_bytes());
    }
    Ok(b)
}

fn meta_bytes(meta: &Metadata) -> Result<Vec<u8>, PackError> {
    let mut b = Vec::new();
    for d in [meta.input.h, meta.input.w, meta.input.c, meta.labels.len()] {
        b.extend(u32_of(d, "input dimension or class count")?.to_le_bytes());
    }
    debug_assert_eq!(b.len(), fmt_spec::META_MEAN_OFFSET);
    b.extend(meta.mean.to_le_bytes());
    debug_assert_eq!(b.len(), fmt_spec::META_STD_OFFSET);
    b.extend(meta.std.to_le_bytes());
    b.extend(meta.source_step.to_le_bytes());
    b.extend(meta.test_correct.to_le_bytes());
    b.extend(meta.test_examples.to_le_bytes());
    b.extend(meta.source_sha256);
    let strings = [&meta.model_name, &meta.kiln_version, &meta.source_file, &meta.quantization];
    let strings: Vec<&String> = strings.into_iter().chain(&meta.labels).collect();
    b.extend(u32_of(strings.len(), "string count")?.to_le_bytes());
    b.extend(0u32.to_le_bytes());
    debug_assert_eq!(b.len(), fmt_spec::META_FIXED_LEN);
    for s in strings {
        let len =
            u16::try_from(s.len()).map_err(|_| PackError::Limit(format!("metadata string too long: {s:.40}…")))?;
        b.extend(len.to_le_bytes());
        b.extend(s.as_bytes());
    }
    Ok(b)
}

/// Writes a whole file. `params` holds `(weights, bias)` for each conv and dense layer, in layer order.
pub fn write(layers: &[Layer], params: &[(PackedTensor, PackedTensor)], meta: &Metadata) -> Result<Vec<u8>, PackError> {
    let plan = Plan::new(layers, meta.input).map_err(PackError::Network)?;
    if layers.len() > fmt_spec::MAX_LAYERS {
        return Err(PackError::Limit(format!("{} layers, the format holds {}", layers.len(), fmt_spec::MAX_LAYERS)));
    }
    if plan.param_layers() != params.len() {
        return Err(PackError::Limit(format!(
            "{} parametric layers but {} weight/bias pairs given",
            plan.param_layers(),
            params.len()
        )));
    }
    // The tensor table in the plan's order: the weights of parametric layer k at 2k, its bias at 2k + 1.
    let tensors: Vec<&PackedTensor> = params.iter().flat_map(|(w, b)| [w, b]).collect();
    if tensors.len() > fmt_spec::MAX_TENSORS {
        return Err(PackError::Limit(format!("{} tensors, the format holds {}", tensors.len(), fmt_spec::MAX_TENSORS)));
    }

    // Graph section.
    let mut graph = Vec::new();
    graph.extend(u32_of(layers.len(), "layer count")?.to_le_bytes());
    graph.extend(0u32.to_le_bytes());
    for step in plan.steps() {
        let (op, args) = fmt_spec::encode_layer(&step.layer, step.params);
        graph.extend(op.to_le_bytes());
        for a in args {
            graph.extend(u32_of(a, "layer argument")?.to_le_bytes());
        }
    }

    let activations = activation_bytes(&meta.activations)?;
    let meta = meta_bytes(meta)?;
    let section_count = if activations.is_empty() { 4 } else { 5 };
    let sections_len = section_count * fmt_spec::SECTION_ENTRY_LEN;
    let meta_at = fmt_spec::HEADER_LEN + sections_len;
    let graph_at = (meta_at + meta.len()).next_multiple_of(fmt_spec::SECTION_ALIGN);
    let table_at = (graph_at + graph.len()).next_multiple_of(fmt_spec::SECTION_ALIGN);
    let table_len = 8 + tensors.len() * fmt_spec::TENSOR_ENTRY_LEN;
    let activations_at = (table_at + table_len).next_multiple_of(fmt_spec::SECTION_ALIGN);
    let data_at = (activations_at + activations.len()).next_multiple_of(fmt_spec::ALIGN);

    // Lay out the data section and the tensor table together.
    let mut table = Vec::with_capacity(table_len);
    table.extend(u32_of(tensors.len(), "tensor count")?.to_le_bytes());
    table.extend(0u32.to_le_bytes());
    let mut data_end = data_at;
    let mut place = |len: usize| {
        if len == 0 {
            return (0u64, 0u64);
        }
        let at = data_end.next_multiple_of(fmt_spec::ALIGN);
        data_end = at + len;
        (at as u64, len as u64)
    };
    let mut regions = Vec::new();
    for t in &tensors {
        let mut name = [0u8; fmt_spec::NAME_LEN];
        if t.name.is_empty() || t.name.len() > fmt_spec::NAME_LEN {
            return Err(PackError::Limit(format!("tensor name \"{}\" must be 1 to 32 bytes", t.name)));
        }
        name[..t.name.len()].copy_from_slice(t.name.as_bytes());
        table.extend(name);
        table.push(t.dtype.code());
        table.push(t.dims.len() as u8);
        table.extend(0u16.to_le_bytes());
        table.extend(u32_of(t.block, "block size")?.to_le_bytes());
        for i in 0..4 {
            table.extend(u32_of(t.dims.get(i).copied().unwrap_or(0), "dimension")?.to_le_bytes());
        }
        for region in [&t.data, &t.scales] {
            let (at, len) = place(region.len());
            table.extend(at.to_le_bytes());
            table.extend(len.to_le_bytes());
            regions.push((at as usize, region));
        }
        table.extend([0u8; 8]);
    }

    let mut file = vec![0u8; data_end];
    file[..8].copy_from_slice(&fmt_spec::MAGIC);
    file[8..10].copy_from_slice(&fmt_spec::VERSION_MAJOR.to_le_bytes());
    // The lowest minor version that holds the file: 1.1 added the activation-scales section, 1.2 the layers
    // past the series'; a file with neither stays 1.0.
    let minor = fmt_spec::minor_version_for(layers, !activations.is_empty());
    file[10..12].copy_from_slice(&minor.to_le_bytes());
    file[20..24].copy_from_slice(&(section_count as u32).to_le_bytes());
    file[24..32].copy_from_slice(&(data_end as u64).to_le_bytes());
    let sections = [
        (fmt_spec::SECTION_META, meta_at, meta.len()),
        (fmt_spec::SECTION_GRAPH, graph_at, graph.len()),
        (fmt_spec::SECTION_TENSORS, table_at, table.len()),
        (fmt_spec::SECTION_DATA, data_at, data_end - data_at),
        (fmt_spec::SECTION_ACTIVATIONS, activations_at, activations.len()),
    ];
    for (i, (kind, at, len)) in sections.into_iter().take(section_count).enumerate() {
        let e = &mut file[fmt_spec::HEADER_LEN + i * fmt_spec::SECTION_ENTRY_LEN..][..fmt_spec::SECTION_ENTRY_LEN];
        e[..4].copy_from_slice(&kind.to_le_bytes());
        e[8..16].copy_from_slice(&(at as u64).to_le_bytes());
        e[16..24].copy_from_slice(&(len as u64).to_le_bytes());
    }
    file[meta_at..][..meta.len()].copy_from_slice(&meta);
    file[graph_at..][..graph.len()].copy_from_slice(&graph);
    file[table_at..][..table.len()].copy_from_slice(&table);
    file[activations_at..][..activations.len()].copy_from_slice(&activations);
    for (at, bytes) in regions {
        file[at..][..bytes.len()].copy_from_slice(bytes);
    }
    let crc = fmt_spec::checksum(&file);
    file[fmt_spec::CHECKSUM_OFFSET..][..4].copy_from_slice(&crc.to_le_bytes());

    Model::from_bytes(&file).map_err(PackError::Invalid)?;
    Ok(file)
}
