//! Models made elsewhere, into Kiln's [`kiln_train::model::Model`] (which `kiln_pack::convert` packs):
//! TensorFlow 1.x Saver checkpoints ([`tf`]) and ONNX files ([`onnx`], through tract-onnx); and Kiln models out
//! as ONNX ([`onnx_export`]). docs/IMPORT.md says what is supported and how layouts map.

pub mod onnx;
pub mod onnx_export;
pub mod tf;
pub mod tract_peer;
