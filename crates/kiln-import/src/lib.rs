//! Models made elsewhere, into Kiln's [`kiln_train::model::Model`] (which `kiln_pack::convert` packs):
//! TensorFlow 1.x Saver checkpoints ([`tf`]). docs/IMPORT.md says what is supported and how layouts map.

pub mod tf;
