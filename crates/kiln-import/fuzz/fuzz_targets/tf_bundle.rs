//! A TensorFlow checkpoint's `.index` and data shard from arbitrary bytes (split by the first byte), then its
//! `.meta` graph walk on the rest: errors are fine, a panic or a crash is a finding.
#![no_main]

use std::path::Path;

use kiln_import::tf::bundle::Bundle;
use kiln_import::tf::{graph, proto};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else { return };
    let at = (split as usize * rest.len() / 255).min(rest.len());
    let (index, shard) = rest.split_at(at);
    let prefix = Path::new("fuzz/model.ckpt-1");
    if let Ok(bundle) = Bundle::from_parts(prefix, index, |count| Ok(vec![shard.to_vec(); count.min(4)])) {
        for entry in bundle.entries() {
            let _ = bundle.tensor_f32(&entry.name);
        }
    }
    // The same bytes as a MetaGraphDef: the walk must reject or map it, never panic.
    if let Ok(meta) = proto::MetaGraphDef::decode(data)
        && let Some(def) = meta.graph_def
    {
        let _ = graph::walk(&def, "fuzz.meta", &|_| Some(vec![3, 3, 1, 8]));
    }
});
