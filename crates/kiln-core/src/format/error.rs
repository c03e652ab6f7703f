//! Every way a `.kiln` file can be rejected. docs/FORMAT.md names the rule each variant enforces.

use core::fmt;

use crate::network::NetworkError;

/// Why [`Model::from_bytes`](super::Model::from_bytes) rejected a file. Offsets and lengths are in bytes,
/// counted from the start of the file; `tensor` and `layer` are 0-based table indices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FormatError {
    /// The file ends before a structure it must hold: `needed` bytes, only `got` present. Also raised when
    /// the header's declared file length is larger than the bytes given (a truncated download or copy).
    Truncated { needed: u64, got: u64 },
    /// The first 8 bytes are not `KILNMODL`: not a Kiln model file.
    BadMagic,
    /// The major version is not one this reader knows (it reads major 1, any minor).
    UnsupportedVersion { major: u16, minor: u16 },
    /// Header flag bits this reader does not know are set; each flag marks a feature a reader must support.
    UnknownFlags { flags: u32 },
    /// There are bytes after the declared end of the file.
    TrailingBytes { declared: u64, actual: u64 },
    /// The CRC-32 over the file does not match the stored one: the file is corrupted.
    ChecksumMismatch { stored: u32, computed: u32 },
    /// A reserved field is not zero.
    ReservedNotZero { field: &'static str },
    /// The section count is zero or above [`MAX_SECTIONS`](super::MAX_SECTIONS).
    BadSectionCount { count: u32 },
    /// A section's byte range reaches past the end of the file (or overflows).
    SectionOutOfBounds { kind: u32, offset: u64, len: u64 },
    /// A section does not start at a multiple of its alignment (8 bytes; 256 for the data section).
    MisalignedSection { kind: u32, offset: u64 },
    /// Two sections share bytes, or a section overlaps the header or the section table (then `first` is 0).
    SectionsOverlap { first: u32, second: u32 },
    /// A section kind appears twice.
    DuplicateSection { kind: u32 },
    /// A required section (metadata, graph, tensors or data) is missing.
    MissingSection { kind: u32 },
    /// A section is too short for the table or record its own header declares.
    SectionTooShort { kind: u32, needed: u64, got: u64 },
    /// The metadata section breaks a rule: `reason` says which.
    BadMetadata { reason: &'static str },
    /// The activation-scales section (kind 5) breaks a rule: `reason` says which.
    BadActivationScales { reason: &'static str },
    /// The graph has no layers, or more than [`MAX_LAYERS`](super::MAX_LAYERS).
    BadLayerCount { count: u32 },
    /// A layer record has an operator code this reader does not know.
    UnknownOp { layer: usize, op: u32 },
    /// A layer's arguments are out of range, or an unused argument is not zero.
    BadLayerArgs { layer: usize },
    /// The layers' shapes do not chain from the input shape (a dense layer on a 2-D input, an odd size
    /// into a pool, a zero or overflowing size).
    Graph(NetworkError),
    /// The graph's output width differs from the metadata's class count.
    ClassCountMismatch { graph: u64, metadata: u64 },
    /// The tensor count is above [`MAX_TENSORS`](super::MAX_TENSORS).
    BadTensorCount { count: u32 },
    /// A tensor's name is empty or not UTF-8.
    BadTensorName { tensor: usize },
    /// A tensor's dtype code is not one this reader knows.
    UnknownDtype { tensor: usize, dtype: u8 },
    /// A tensor's rank is not 1 to 4, a used dimension is zero, or an unused one is not zero.
    BadRank { tensor: usize, rank: u8 },
    /// The product of a tensor's dimensions, or its byte size, overflows 64 bits.
    DimensionOverflow { tensor: usize },
    /// A block-quantized tensor's block size is not a power of two from 8 to 4096 (or a non-block dtype
    /// has a non-zero block size).
    BadBlockSize { tensor: usize, block: u32 },
    /// A tensor region's length does not match what its dtype and dimensions need.
    TensorSize { tensor: usize, region: &'static str, expected: u64, got: u64 },
    /// A tensor region lies outside the data section.
    TensorOutOfBounds { tensor: usize, offset: u64, len: u64 },
    /// A tensor region does not start at a multiple of [`ALIGN`](super::ALIGN).
    MisalignedTensor { tensor: usize, offset: u64 },
    /// A tensor region starts before the end of the previous region: regions must be laid out in table
    /// order without sharing bytes.
    TensorsOverlap { tensor: usize },
    /// A quantization scale is negative, NaN or infinite.
    BadScale { tensor: usize, index: u64 },
    /// A layer refers to a tensor index past the end of the tensor table.
    TensorIndex { layer: usize, tensor: u32 },
    /// A layer's weight or bias tensor does not have the shape the graph needs there.
    TensorShapeMismatch { layer: usize, tensor: usize },
    /// A bias tensor is not f32 (biases are never quantized).
    BiasNotF32 { layer: usize, tensor: usize },
    /// A scale-shift layer's scale tensor is not f32 (its few values are never quantized).
    ScaleNotF32 { layer: usize, tensor: usize },
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use FormatError::*;
        match *self {
            Truncated { needed, got } => write!(f, "file is truncated: needs {needed} bytes, has {got}"),
            BadMagic => write!(f, "not a Kiln model file (the first 8 bytes are not \"KILNMODL\")"),
            UnsupportedVersion { major, minor } => {
                write!(f, "format version {major}.{minor} is not supported (this reader reads 1.x)")
            }
            UnknownFlags { flags } => write!(f, "unknown header flags {flags:#010x}"),
            TrailingBytes { declared, actual } => {
                write!(f, "header says the file is {declared} bytes but it is {actual}")
            }
            ChecksumMismatch { stored, computed } => {
                write!(f, "checksum mismatch: stored {stored:#010x}, computed {computed:#010x} (the file is corrupted)")
            }
            ReservedNotZero { field } => write!(f, "reserved field {field} is not zero"),
            BadSectionCount { count } => write!(f, "section count {count} is out of range"),
            SectionOutOfBounds { kind, offset, len } => {
                write!(f, "section {kind} ({len} bytes at {offset}) reaches past the end of the file")
            }
            MisalignedSection { kind, offset } => write!(f, "section {kind} at offset {offset} is misaligned"),
            SectionsOverlap { first, second } => write!(f, "sections {first} and {second} overlap"),
            DuplicateSection { kind } => write!(f, "section {kind} appears twice"),
            MissingSection { kind } => write!(f, "required section {kind} is missing"),
            SectionTooShort { kind, needed, got } => {
                write!(f, "section {kind} is {got} bytes, its contents need {needed}")
            }
            BadMetadata { reason } => write!(f, "bad metadata: {reason}"),
            BadActivationScales { reason } => write!(f, "bad activation scales: {reason}"),
            BadLayerCount { count } => write!(f, "layer count {count} is out of range"),
            UnknownOp { layer, op } => write!(f, "layer {layer}: unknown operator code {op}"),
            BadLayerArgs { layer } => write!(f, "layer {layer}: arguments out of range or unused ones not zero"),
            Graph(e) => write!(f, "graph shapes do not chain: {e}"),
            ClassCountMismatch { graph, metadata } => {
                write!(f, "the graph outputs {graph} values but the metadata lists {metadata} classes")
            }
            BadTensorCount { count } => write!(f, "tensor count {count} is out of range"),
            BadTensorName { tensor } => write!(f, "tensor {tensor}: name is empty or not UTF-8"),
            UnknownDtype { tensor, dtype } => write!(f, "tensor {tensor}: unknown dtype code {dtype}"),
            BadRank { tensor, rank } => write!(f, "tensor {tensor}: bad rank {rank} or dimensions"),
            DimensionOverflow { tensor } => write!(f, "tensor {tensor}: dimensions overflow"),
            BadBlockSize { tensor, block } => write!(f, "tensor {tensor}: bad block size {block}"),
            TensorSize { tensor, region, expected, got } => {
                write!(f, "tensor {tensor}: {region} region is {got} bytes, its dtype and shape need {expected}")
            }
            TensorOutOfBounds { tensor, offset, len } => {
                write!(f, "tensor {tensor}: {len} bytes at {offset} lie outside the data section")
            }
            MisalignedTensor { tensor, offset } => {
                write!(f, "tensor {tensor}: offset {offset} is not a multiple of {}", super::ALIGN)
            }
            TensorsOverlap { tensor } => write!(f, "tensor {tensor}: overlaps the previous tensor region"),
            BadScale { tensor, index } => write!(f, "tensor {tensor}: scale {index} is negative or not finite"),
            TensorIndex { layer, tensor } => write!(f, "layer {layer}: tensor index {tensor} is out of range"),
            TensorShapeMismatch { layer, tensor } => {
                write!(f, "layer {layer}: tensor {tensor} does not have the shape the graph needs")
            }
            BiasNotF32 { layer, tensor } => write!(f, "layer {layer}: bias tensor {tensor} is not f32"),
            ScaleNotF32 { layer, tensor } => write!(f, "layer {layer}: scale-shift tensor {tensor} is not f32"),
        }
    }
}

impl core::error::Error for FormatError {}

impl From<NetworkError> for FormatError {
    fn from(e: NetworkError) -> Self {
        FormatError::Graph(e)
    }
}
