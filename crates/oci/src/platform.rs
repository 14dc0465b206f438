//! Platforms (`os/arch[/variant]`), normalised the way containerd's `platforms` package does so
//! that `linux/arm64/v8` and `linux/aarch64` name the same thing and `x86_64` means `amd64`.

use std::fmt;
use std::str::FromStr;

/// A normalised platform. Fields are private so every value went through [`Platform::new`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Platform {
    os: String,
    architecture: String,
    variant: Option<String>,
}

/// Why a platform string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlatformError {
    #[error(
        "invalid platform {0:?}: expected os/arch[/variant], e.g. linux/amd64 or linux/arm64/v8"
    )]
    Invalid(String),
}

fn valid_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && !s.bytes().all(|b| b == b'.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Normalises an (arch, variant) pair as containerd's `normalizeArch` does.
fn normalize_arch(arch: &str, variant: Option<&str>) -> (String, Option<String>) {
    let arch = arch.to_ascii_lowercase();
    let variant = variant
        .map(str::to_ascii_lowercase)
        .filter(|v| !v.is_empty());
    match arch.as_str() {
        "i386" | "i486" | "i586" | "i686" | "x86" => ("386".into(), None),
        "x86_64" | "x86-64" | "amd64" => {
            // amd64/v1 is the baseline and means the same as plain amd64.
            let v = variant.filter(|v| v != "v1");
            ("amd64".into(), v)
        }
        "aarch64" | "arm64" => {
            // v8 is the arm64 baseline: arm64, arm64/v8 and arm64/8 are equivalent.
            let v = match variant.as_deref() {
                None | Some("8") | Some("v8") | Some("v8.0") => None,
                Some("9") | Some("9.0") | Some("v9.0") => Some("v9".into()),
                Some(other) => Some(other.into()),
            };
            ("arm64".into(), v)
        }
        "armhf" => ("arm".into(), Some("v7".into())),
        "armel" => ("arm".into(), Some("v6".into())),
        "arm" => {
            let v = match variant.as_deref() {
                None | Some("7") | Some("v7") => "v7".to_string(),
                Some("5") | Some("v5") => "v5".into(),
                Some("6") | Some("v6") => "v6".into(),
                Some("8") | Some("v8") => "v8".into(),
                Some(other) => other.into(),
            };
            ("arm".into(), Some(v))
        }
        _ => (arch, variant),
    }
}

fn normalize_os(os: &str) -> String {
    let os = os.to_ascii_lowercase();
    match os.as_str() {
        "macos" => "darwin".into(),
        _ => os,
    }
}

impl Platform {
    /// A normalised platform.
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
        let (architecture, variant) = normalize_arch(architecture, variant);
        Platform {
            os: normalize_os(os),
            architecture,
            variant,
        }
    }

    /// `linux/amd64`.
    pub fn linux_amd64() -> Platform {
        Platform::new("linux", "amd64", None)
    }

    /// The platform kiln runs on (the default of `--custom-platform`).
    pub fn host() -> Platform {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "x86" => "386",
            "aarch64" => "arm64",
            "arm" => "arm",
            "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
            "powerpc64" => "ppc64",
            "loongarch64" => "loong64",
            "mips64" if cfg!(target_endian = "little") => "mips64le",
            other => other,
        };
        let os = match std::env::consts::OS {
            "macos" => "darwin",
            other => other,
        };
        Platform::new(os, arch, None)
    }

    /// Operating system (`linux`).
    pub fn os(&self) -> &str {
        &self.os
    }

    /// CPU architecture in GOARCH spelling (`amd64`, `arm64`).
    pub fn architecture(&self) -> &str {
        &self.architecture
    }

    /// CPU variant (`v7`), `None` for the architecture's baseline.
    pub fn variant(&self) -> Option<&str> {
        self.variant.as_deref()
    }

    /// True when an image built for `candidate` runs on `self`: same OS and architecture, and a
    /// variant that is equal, or absent on either side, or (for 32-bit arm) an older one
    /// (a v7 machine runs v6 and v5 code; containerd's `Only` matcher).
    pub fn matches(&self, candidate: &Platform) -> bool {
        if self.os != candidate.os || self.architecture != candidate.architecture {
            return false;
        }
        match (self.variant(), candidate.variant()) {
            (a, b) if a == b => true,
            (None, _) | (_, None) => true,
            (Some(want), Some(have)) if self.architecture == "arm" => arm_level(have)
                .zip(arm_level(want))
                .is_some_and(|(h, w)| h <= w),
            _ => false,
        }
    }

    /// How well `candidate` fits: `None` when it does not match, higher is better (an exact
    /// variant beats a compatible one). Used to pick one entry out of an index.
    pub fn match_rank(&self, candidate: &Platform) -> Option<u8> {
        if !self.matches(candidate) {
            return None;
        }
        Some(if self.variant == candidate.variant {
            3
        } else if candidate.variant.is_none() {
            2
        } else {
            1
        })
    }

    /// From an oci-spec platform (an index entry's).
    pub fn from_oci(p: &oci_spec::image::Platform) -> Platform {
        Platform::new(
            &p.os().to_string(),
            &p.architecture().to_string(),
            p.variant().as_deref(),
        )
    }

    /// To an oci-spec platform.
    pub fn to_oci(&self) -> oci_spec::image::Platform {
        let mut p = oci_spec::image::Platform::default();
        p.set_os(self.os.as_str().into());
        p.set_architecture(self.architecture.as_str().into());
        p.set_variant(self.variant.clone());
        p
    }
}

fn arm_level(v: &str) -> Option<u8> {
    v.strip_prefix('v')?.parse().ok()
}

impl FromStr for Platform {
    type Err = PlatformError;
    /// `os/arch[/variant]`; a single component is an architecture on Linux (`arm64`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || PlatformError::Invalid(s.to_string());
        let parts: Vec<&str> = s.split('/').collect();
        if !parts.iter().all(|p| valid_part(p)) {
            return Err(bad());
        }
        match parts.as_slice() {
            [arch] => Ok(Platform::new("linux", arch, None)),
            [os, arch] => Ok(Platform::new(os, arch, None)),
            [os, arch, variant] => Ok(Platform::new(os, arch, Some(variant))),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        s.parse().unwrap()
    }

    #[test]
    fn normalises_aliases() {
        assert_eq!(p("linux/arm64/v8"), p("linux/arm64"));
        assert_eq!(p("linux/aarch64"), p("linux/arm64"));
        assert_eq!(p("linux/x86_64"), p("linux/amd64"));
        assert_eq!(p("Linux/AMD64").to_string(), "linux/amd64");
        assert_eq!(p("linux/arm").to_string(), "linux/arm/v7");
        assert_eq!(p("linux/armhf").to_string(), "linux/arm/v7");
        assert_eq!(p("linux/arm/6").to_string(), "linux/arm/v6");
        assert_eq!(p("linux/i386").to_string(), "linux/386");
        assert_eq!(p("arm64").to_string(), "linux/arm64");
        assert_eq!(p("linux/arm64/v9").variant(), Some("v9"));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "/",
            "linux/",
            "linux//v7",
            "a/b/c/d",
            "linux/amd 64",
            "linux/../x",
        ] {
            assert!(bad.parse::<Platform>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn matching_rules() {
        assert!(p("linux/arm64").matches(&p("linux/arm64/v8")));
        assert!(!p("linux/arm64").matches(&p("linux/amd64")));
        assert!(!p("linux/amd64").matches(&p("windows/amd64")));
        assert!(p("linux/arm/v7").matches(&p("linux/arm/v6")));
        assert!(!p("linux/arm/v6").matches(&p("linux/arm/v7")));
        assert!(!p("linux/arm64/v9").matches(&p("linux/arm64/v8.2")));
        let want = p("linux/arm/v7");
        assert!(want.match_rank(&p("linux/arm/v7")) > want.match_rank(&p("linux/arm/v6")));
    }

    #[test]
    fn host_is_normalised_and_round_trips_oci() {
        let h = Platform::host();
        assert_eq!(h.to_string().parse::<Platform>().unwrap(), h);
        assert_ne!(h.architecture(), "x86_64");
        let v = p("linux/arm/v6");
        assert_eq!(Platform::from_oci(&v.to_oci()), v);
    }
}
