//! Run-time device choice.
//!
//! `Device::default()` would pick CUDA whenever it is compiled in, even on a machine without a GPU;
//! kiln never calls it. The user names the device (`--device`, default `flex`), and a device whose
//! backend was not compiled in is a [`DeviceError::NotCompiled`] that says which feature to enable.

use std::fmt;
use std::str::FromStr;

use burn::prelude::Device;
use serde::{Deserialize, Serialize};

/// A device named by the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum DeviceSpec {
    /// Burn's pure-Rust CPU backend (feature `flex`, the default).
    #[default]
    Flex,
    /// The default wgpu adapter: Vulkan, Metal or DX12 (feature `wgpu`).
    Wgpu,
    /// The CUDA GPU with this index (feature `cuda`).
    Cuda(usize),
    /// The deprecated ndarray CPU backend (feature `ndarray`).
    Ndarray,
}

/// A device name that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    /// Not one of the known device names.
    #[error("unknown device `{given}`: expected one of flex, wgpu, cuda, cuda:N, ndarray")]
    Unknown {
        /// The name as given.
        given: String,
    },
    /// A known device whose backend is not in this build.
    #[error(
        "device `{spec}` is not available: kiln was built without the `{feature}` feature\n  hint: rebuild with `--features {feature}` (e.g. `cargo build --release --features {feature}`)\n  backends in this build: {compiled}"
    )]
    NotCompiled {
        /// The device asked for.
        spec: DeviceSpec,
        /// The cargo feature that provides it.
        feature: &'static str,
        /// The backends this build has, comma-separated.
        compiled: String,
    },
    /// A backend in this build whose device cannot run: no GPU adapter, no driver.
    #[error("device `{spec}` cannot be used: {reason}\n  hint: {hint}")]
    Unusable {
        /// The device asked for.
        spec: DeviceSpec,
        /// What failed (the backend's message).
        reason: String,
        /// What to check or do instead.
        hint: &'static str,
    },
}

impl DeviceSpec {
    /// The cargo feature (of kiln and kiln-train) that compiles this backend in.
    pub fn feature(self) -> &'static str {
        match self {
            DeviceSpec::Flex => "flex",
            DeviceSpec::Wgpu => "wgpu",
            DeviceSpec::Cuda(_) => "cuda",
            DeviceSpec::Ndarray => "ndarray",
        }
    }

    /// The spec naming `device`, whatever its autodiff wrapping; `None` for a backend kiln does not
    /// create (libtorch, a capture device).
    ///
    /// Burn 0.22.1 has no accessor for a device's backend, so this reads its `Debug` text
    /// (`Device<Cube(Wgpu(WgpuDevice { … }))>`, `Device<Cube(Cuda(2))>` in cubecl-runtime 0.11.3,
    /// `Device<Flex(…)>`). Every wgpu adapter reads as [`DeviceSpec::Wgpu`], the one kiln creates.
    pub fn of(device: &Device) -> Option<DeviceSpec> {
        let debug = format!("{device:?}");
        if debug.contains("Wgpu") {
            Some(DeviceSpec::Wgpu)
        } else if let Some(at) = debug.find("Cuda(") {
            let digits: String = debug[at + "Cuda(".len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            Some(DeviceSpec::Cuda(digits.parse().unwrap_or(0)))
        } else if debug.contains("Flex") {
            Some(DeviceSpec::Flex)
        } else if debug.contains("NdArray") || debug.contains("Ndarray") {
            Some(DeviceSpec::Ndarray)
        } else {
            None
        }
    }

    /// Whether the device is the machine's CPU, which several data-parallel replicas may share
    /// (each GPU is listed once).
    pub fn is_cpu(self) -> bool {
        matches!(self, DeviceSpec::Flex | DeviceSpec::Ndarray)
    }

    /// Whether this build can create the device.
    pub fn is_compiled(self) -> bool {
        compiled_features().contains(&self.feature())
    }

    /// Creates the (plain, non-autodiff) device.
    ///
    /// # Errors
    ///
    /// [`DeviceError::NotCompiled`] when the backend's feature is off in this build.
    pub fn device(self) -> Result<Device, DeviceError> {
        match self {
            #[cfg(feature = "flex")]
            DeviceSpec::Flex => Ok(Device::flex()),
            #[cfg(feature = "wgpu")]
            DeviceSpec::Wgpu => probe(
                self,
                Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
                "no Vulkan, Metal or DX12 adapter answered; on Linux without a GPU, `apt-get install mesa-vulkan-drivers` provides a (slow) software one; or train on the flex device (CPU)",
            ),
            #[cfg(feature = "cuda")]
            DeviceSpec::Cuda(index) => probe(
                self,
                Device::cuda(index),
                "check `nvidia-smi`, the CUDA driver and CUDA_VISIBLE_DEVICES (cuda:N counts the visible GPUs from 0); or train on the flex device (CPU)",
            ),
            #[cfg(feature = "ndarray")]
            DeviceSpec::Ndarray => {
                #[allow(deprecated)] // opt-in only; kept for comparisons
                Ok(Device::ndarray())
            }
            #[allow(unreachable_patterns)] // every arm above can be compiled in
            spec => Err(DeviceError::NotCompiled {
                spec,
                feature: spec.feature(),
                compiled: compiled_features().join(", "),
            }),
        }
    }
}

/// Runs one tiny computation on a GPU `device` before anything else does, so that a missing adapter
/// or driver is a [`DeviceError::Unusable`] here — not a panic deep in the first training step.
///
/// The backend fails on its own device thread (cubecl's `Unable to acquire wgpu device:
/// AdapterUnavailable …`), and the calling thread then only sees a closed channel. While the
/// probe runs, a panic hook keeps the first panic message of any thread (and prints none), so the
/// error names the cause.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn probe(spec: DeviceSpec, device: Device, hint: &'static str) -> Result<Device, DeviceError> {
    use std::sync::{Arc, Mutex, PoisonError};

    let first_panic: Arc<Mutex<Option<String>>> = Arc::default();
    let previous_hook = std::panic::take_hook();
    let slot = Arc::clone(&first_panic);
    std::panic::set_hook(Box::new(move |info| {
        let mut first = slot.lock().unwrap_or_else(PoisonError::into_inner);
        if first.is_none() {
            *first = Some(kiln_data::loader::panic_message(info.payload()));
        }
    }));
    let d = device.clone();
    let ran = std::panic::catch_unwind(move || {
        burn::tensor::Tensor::<1>::ones([2], &d)
            .sum()
            .into_scalar::<f32>()
    });
    std::panic::set_hook(previous_hook);
    match ran {
        Ok(2.0) => Ok(device),
        Ok(v) => Err(DeviceError::Unusable {
            spec,
            reason: format!("a test sum of [1, 1] gave {v}"),
            hint,
        }),
        Err(payload) => {
            let first = first_panic.lock().unwrap_or_else(PoisonError::into_inner).take();
            Err(DeviceError::Unusable {
                spec,
                reason: first.unwrap_or_else(|| kiln_data::loader::panic_message(payload.as_ref())),
                hint,
            })
        }
    }
}

/// A device as kiln's `--device` spells it (`flex`, `wgpu`, `cuda:1`, `ndarray`), for messages;
/// Burn's `Debug` text (`Device<…>`) for a device [`DeviceSpec::of`] cannot name.
pub fn name(device: &Device) -> String {
    DeviceSpec::of(device).map_or_else(|| format!("{device:?}"), |spec| spec.to_string())
}

/// The backend features compiled into this build, in a fixed order.
pub fn compiled_features() -> Vec<&'static str> {
    let mut v = Vec::new();
    if cfg!(feature = "flex") {
        v.push("flex");
    }
    if cfg!(feature = "wgpu") {
        v.push("wgpu");
    }
    if cfg!(feature = "cuda") {
        v.push("cuda");
    }
    if cfg!(feature = "ndarray") {
        v.push("ndarray");
    }
    v
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Flex => f.write_str("flex"),
            DeviceSpec::Wgpu => f.write_str("wgpu"),
            DeviceSpec::Cuda(i) => write!(f, "cuda:{i}"),
            DeviceSpec::Ndarray => f.write_str("ndarray"),
        }
    }
}

impl FromStr for DeviceSpec {
    type Err = DeviceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let unknown = || DeviceError::Unknown { given: s.to_string() };
        match s.trim().to_ascii_lowercase().as_str() {
            "flex" | "cpu" => Ok(DeviceSpec::Flex),
            "wgpu" => Ok(DeviceSpec::Wgpu),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            "ndarray" => Ok(DeviceSpec::Ndarray),
            other => match other.strip_prefix("cuda:") {
                Some(index) => index.parse().map(DeviceSpec::Cuda).map_err(|_| unknown()),
                None => Err(unknown()),
            },
        }
    }
}

impl From<DeviceSpec> for String {
    fn from(d: DeviceSpec) -> String {
        d.to_string()
    }
}

impl TryFrom<String> for DeviceSpec {
    type Error = DeviceError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Messages name devices as `--device` spells them, whatever the autodiff wrapping (Burn
    /// 0.22.1's `Debug` texts; a CUDA device prints as `Cube(Cuda(N))`, cubecl-runtime 0.11.3).
    #[test]
    fn device_names_are_the_command_line_spellings() {
        assert_eq!(name(&Device::flex()), "flex");
        assert_eq!(name(&Device::flex().autodiff()), "flex");
        assert_eq!(DeviceSpec::of(&Device::flex().autodiff()), Some(DeviceSpec::Flex));
        for spec in compiled_features()
            .iter()
            .filter_map(|f| f.parse::<DeviceSpec>().ok())
        {
            if let Ok(device) = spec.device() {
                assert_eq!(DeviceSpec::of(&device), Some(spec), "{device:?}");
            }
        }
        assert!(DeviceSpec::Flex.is_cpu() && DeviceSpec::Ndarray.is_cpu());
        assert!(!DeviceSpec::Wgpu.is_cpu() && !DeviceSpec::Cuda(1).is_cpu());
        #[cfg(feature = "wgpu")]
        assert_eq!(name(&Device::wgpu(Default::default()).autodiff()), "wgpu");
        #[cfg(feature = "cuda")]
        assert_eq!(name(&Device::cuda(2).autodiff()), "cuda:2");
    }

    #[test]
    fn parses_every_form() {
        assert_eq!("flex".parse::<DeviceSpec>().unwrap(), DeviceSpec::Flex);
        assert_eq!("cpu".parse::<DeviceSpec>().unwrap(), DeviceSpec::Flex);
        assert_eq!("WGPU".parse::<DeviceSpec>().unwrap(), DeviceSpec::Wgpu);
        assert_eq!("cuda".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(0));
        assert_eq!("cuda:3".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(3));
        assert_eq!("ndarray".parse::<DeviceSpec>().unwrap(), DeviceSpec::Ndarray);
        for bad in ["gpu", "cuda:", "cuda:x", "cuda:-1", ""] {
            assert!(
                matches!(bad.parse::<DeviceSpec>(), Err(DeviceError::Unknown { .. })),
                "{bad}"
            );
        }
        assert_eq!(DeviceSpec::Cuda(2).to_string(), "cuda:2");
    }

    #[test]
    fn serde_uses_the_command_line_names() {
        let json = serde_json::to_string(&DeviceSpec::Cuda(1)).unwrap();
        assert_eq!(json, "\"cuda:1\"");
        assert_eq!(
            serde_json::from_str::<DeviceSpec>(&json).unwrap(),
            DeviceSpec::Cuda(1)
        );
        assert!(serde_json::from_str::<DeviceSpec>("\"tpu\"").is_err());
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_names_the_feature() {
        let err = DeviceSpec::Cuda(0).device().unwrap_err();
        assert!(matches!(err, DeviceError::NotCompiled { feature: "cuda", .. }));
        let msg = err.to_string();
        assert!(
            msg.contains("`cuda` feature") && msg.contains("--features cuda"),
            "{msg}"
        );
        assert!(!DeviceSpec::Cuda(0).is_compiled());
    }

    #[cfg(feature = "flex")]
    #[test]
    fn flex_is_available_by_default() {
        assert!(DeviceSpec::Flex.device().is_ok());
        assert!(compiled_features().contains(&"flex"));
    }
}
