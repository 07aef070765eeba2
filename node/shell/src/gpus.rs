//! Which GPUs this node offers.
//!
//! NVIDIA devices are found through NVML, which `nvml-wrapper` loads at run
//! time: a machine without the driver builds and runs unchanged, with no
//! GPUs. As in Ray:
//! - a `CUDA_VISIBLE_DEVICES` already set on the node limits it to the
//!   devices it names, and they keep their ids (`2,3` gives ids 2 and 3);
//! - `--num-gpus N` / `init(num_gpus=N)` overrides the count (the first N
//!   visible ids, else ids `0..N`);
//! - the model of the first device becomes a resource
//!   `accelerator_type:<model>` of 1 (`H100`, `A100`, `RTX PRO 6000`).

use std::ffi::OsStr;

/// The environment variable CUDA reads, and workers get their ids in.
pub const CUDA_VISIBLE_DEVICES: &str = "CUDA_VISIBLE_DEVICES";
/// Ray's prefix for the model resource.
pub const ACCELERATOR_TYPE_PREFIX: &str = "accelerator_type:";

/// The GPUs a node offers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GpuInventory {
    /// Device ids, as `CUDA_VISIBLE_DEVICES` names them.
    pub ids: Vec<String>,
    /// Ray's short name of the first device's model, when NVML knows it.
    pub model: Option<String>,
    /// Memory of the offered devices NVML knows, in bytes.
    pub memory: u64,
}

/// One device as NVML describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NvmlDevice {
    index: u32,
    uuid: String,
    name: String,
    memory: u64,
}

impl GpuInventory {
    /// The node's GPUs: NVML's devices limited by `CUDA_VISIBLE_DEVICES`
    /// (read from this process's environment), or `num_gpus` of them.
    pub fn detect(num_gpus: Option<u32>) -> GpuInventory {
        let visible = std::env::var(CUDA_VISIBLE_DEVICES).ok();
        let devices = nvml_devices();
        Self::choose(num_gpus, visible.as_deref(), &devices)
    }

    /// The resources these GPUs add: `GPU` and the model's type.
    pub fn resources(&self) -> Vec<(String, f64)> {
        let mut out = Vec::new();
        if !self.ids.is_empty() {
            out.push(("GPU".to_string(), self.ids.len() as f64));
            if let Some(model) = &self.model {
                out.push((format!("{ACCELERATOR_TYPE_PREFIX}{model}"), 1.0));
            }
        }
        out
    }

    fn choose(
        num_gpus: Option<u32>,
        visible: Option<&str>,
        devices: &[NvmlDevice],
    ) -> GpuInventory {
        let visible = visible.map(parse_visible);
        let ids: Vec<String> = match (num_gpus, visible) {
            (Some(n), Some(v)) => {
                if n as usize > v.len() {
                    tracing::warn!(
                        "{n} GPUs asked for, but {CUDA_VISIBLE_DEVICES} names {} ({}): using those",
                        v.len(),
                        v.join(",")
                    );
                }
                v.into_iter().take(n as usize).collect()
            }
            (Some(n), None) => (0..n).map(|i| i.to_string()).collect(),
            (None, Some(v)) => v.into_iter().take(devices.len()).collect(),
            (None, None) => devices.iter().map(|d| d.index.to_string()).collect(),
        };
        let known: Vec<&NvmlDevice> = ids
            .iter()
            .filter_map(|id| {
                devices
                    .iter()
                    .find(|d| d.index.to_string() == *id || d.uuid == *id)
            })
            .collect();
        GpuInventory {
            model: known.first().and_then(|d| accelerator_type(&d.name)),
            memory: known.iter().map(|d| d.memory).sum(),
            ids,
        }
    }
}

/// The ids a `CUDA_VISIBLE_DEVICES` value names (none for "" or `NoDevFiles`).
fn parse_visible(value: &str) -> Vec<String> {
    if value.trim() == "NoDevFiles" {
        return Vec::new();
    }
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// NVML's devices; none when the library or driver is missing.
fn nvml_devices() -> Vec<NvmlDevice> {
    let nvml = match nvml_wrapper::Nvml::init().or_else(|_| {
        nvml_wrapper::Nvml::builder()
            .lib_path(OsStr::new("libnvidia-ml.so"))
            .init()
    }) {
        Ok(n) => n,
        Err(e) => {
            tracing::debug!("no NVIDIA GPUs: NVML did not start ({e})");
            return Vec::new();
        }
    };
    let count = match nvml.device_count() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("NVML started but cannot count devices: {e}");
            return Vec::new();
        }
    };
    (0..count)
        .filter_map(|index| {
            let d = nvml
                .device_by_index(index)
                .map_err(|e| tracing::warn!("NVML device {index}: {e}"))
                .ok()?;
            Some(NvmlDevice {
                index,
                uuid: d.uuid().unwrap_or_default(),
                name: d.name().unwrap_or_default(),
                memory: d.memory_info().map(|m| m.total).unwrap_or(0),
            })
        })
        .collect()
}

/// Ray's short model name from an NVML device name: after the brand, any
/// all-capital words and then the first word with a digit, cut at a hyphen
/// ("NVIDIA A100-SXM4-40GB" is `A100`, "NVIDIA RTX PRO 6000 Blackwell" is
/// `RTX PRO 6000`); other names become the product name with hyphens
/// ("NVIDIA GeForce RTX 4090" is `GeForce-RTX-4090`).
fn accelerator_type(name: &str) -> Option<String> {
    let words: Vec<&str> = name.split_whitespace().skip(1).collect();
    if words.is_empty() {
        return None;
    }
    let mut picked: Vec<String> = Vec::new();
    for w in &words {
        let lead: String = w
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
            .collect();
        if lead.chars().any(|c| c.is_ascii_digit()) {
            picked.push(lead);
            return Some(picked.join(" "));
        }
        if lead.len() == w.len() && !lead.is_empty() {
            picked.push(lead);
            continue;
        }
        break;
    }
    Some(words.join("-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(index: u32, name: &str) -> NvmlDevice {
        NvmlDevice {
            index,
            uuid: format!("GPU-{index}"),
            name: name.into(),
            memory: 80 << 30,
        }
    }

    #[test]
    fn model_names_follow_rays_accelerator_types() {
        let cases = [
            ("NVIDIA H200", "H200"),
            ("NVIDIA A100-SXM4-40GB", "A100"),
            ("Tesla V100-SXM2-16GB", "V100"),
            (
                "NVIDIA RTX PRO 6000 Blackwell Server Edition",
                "RTX PRO 6000",
            ),
            ("NVIDIA GeForce RTX 4090", "GeForce-RTX-4090"),
        ];
        for (name, want) in cases {
            assert_eq!(accelerator_type(name).as_deref(), Some(want), "{name}");
        }
        assert_eq!(accelerator_type("NVIDIA"), None);
    }

    #[test]
    fn visible_devices_limit_the_node_and_keep_their_ids() {
        let four: Vec<NvmlDevice> = (0..4).map(|i| dev(i, "NVIDIA H100 80GB HBM3")).collect();
        let inv = GpuInventory::choose(None, Some("2,3"), &four);
        assert_eq!(inv.ids, ["2", "3"]);
        assert_eq!(inv.model.as_deref(), Some("H100"));
        assert_eq!(inv.memory, 2 * (80 << 30));
        assert_eq!(
            inv.resources(),
            [("GPU".into(), 2.0), ("accelerator_type:H100".into(), 1.0)]
        );
        // No NVML: a count given by the user, limited by what is visible.
        let inv = GpuInventory::choose(Some(4), Some("2,3"), &[]);
        assert_eq!(
            (inv.ids, inv.model, inv.memory),
            (vec!["2".into(), "3".into()], None, 0)
        );
        assert_eq!(GpuInventory::choose(Some(2), None, &[]).ids, ["0", "1"]);
        assert!(GpuInventory::choose(None, Some(""), &four).ids.is_empty());
        assert!(
            GpuInventory::choose(None, Some("NoDevFiles"), &four)
                .ids
                .is_empty()
        );
        assert_eq!(GpuInventory::choose(None, None, &four).ids.len(), 4);
        assert!(GpuInventory::choose(None, None, &[]).resources().is_empty());
        // UUIDs name devices too.
        let inv = GpuInventory::choose(None, Some("GPU-1"), &four);
        assert_eq!((inv.ids, inv.memory), (vec!["GPU-1".into()], 80 << 30));
    }
}
