//! CNI specification versions this plugin speaks, and what each of them allows.

use std::fmt;

use crate::error::{code, CniError};

/// A CNI spec version the plugin supports (ordered: older < newer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CniVersion {
    V0_3_0,
    V0_3_1,
    V0_4_0,
    V1_0_0,
    V1_1_0,
}

/// Every version, oldest first (the `supportedVersions` of VERSION).
pub const SUPPORTED_VERSIONS: [CniVersion; 5] =
    [CniVersion::V0_3_0, CniVersion::V0_3_1, CniVersion::V0_4_0, CniVersion::V1_0_0, CniVersion::V1_1_0];

impl CniVersion {
    pub const LATEST: CniVersion = CniVersion::V1_1_0;

    pub fn as_str(self) -> &'static str {
        match self {
            CniVersion::V0_3_0 => "0.3.0",
            CniVersion::V0_3_1 => "0.3.1",
            CniVersion::V0_4_0 => "0.4.0",
            CniVersion::V1_0_0 => "1.0.0",
            CniVersion::V1_1_0 => "1.1.0",
        }
    }

    /// The exact version string (no normalisation: "1.0" is not "1.0.0").
    pub fn parse(s: &str) -> Option<CniVersion> {
        SUPPORTED_VERSIONS.iter().copied().find(|v| v.as_str() == s)
    }

    /// Results carry `"version": "4"` in each `ips[]` entry before 1.0.0.
    pub fn ips_have_version(self) -> bool {
        self < CniVersion::V1_0_0
    }

    pub fn supports_check(self) -> bool {
        self >= CniVersion::V0_4_0
    }

    /// STATUS and GC appeared in 1.1.0.
    pub fn supports_status_and_gc(self) -> bool {
        self >= CniVersion::V1_1_0
    }
}

impl fmt::Display for CniVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The supported versions as strings, oldest first.
pub fn supported_strings() -> Vec<&'static str> {
    SUPPORTED_VERSIONS.iter().map(|v| v.as_str()).collect()
}

/// Code 1 for a version outside [`SUPPORTED_VERSIONS`].
pub fn incompatible(requested: &str) -> CniError {
    CniError::new(code::INCOMPATIBLE_VERSION, format!("unsupported CNI version {:?}", truncate(requested, 64)))
        .with_details(format!("supported versions: {}", supported_strings().join(", ")))
}

/// Code 1 for a command the requested version does not have.
pub fn command_needs(command: &str, min: CniVersion, requested: CniVersion) -> CniError {
    CniError::new(
        code::INCOMPATIBLE_VERSION,
        format!("{command} needs CNI version {min} or later; the network config says {requested}"),
    )
}

/// The `cniVersion` to tag an error with: the caller's own version string when it looks like a
/// version (even an unsupported one: it tells the runtime what we understood), else the latest.
pub fn error_tag(requested: Option<&str>) -> String {
    match requested {
        Some(s) if !s.is_empty() && s.len() <= 16 && s.bytes().all(|b| b.is_ascii_digit() || b == b'.') => {
            s.to_string()
        }
        _ => CniVersion::LATEST.as_str().to_string(),
    }
}

/// `s` cut to at most `max` bytes on a char boundary (for echoing untrusted input in messages).
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_exact() {
        for v in SUPPORTED_VERSIONS {
            assert_eq!(CniVersion::parse(v.as_str()), Some(v));
        }
        for bad in ["", "0.1.0", "0.2.0", "1.0", "1.2.0", " 1.0.0", "1.0.0 ", "v1.0.0"] {
            assert_eq!(CniVersion::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn ordering_and_features() {
        assert!(CniVersion::V0_3_0 < CniVersion::V0_3_1 && CniVersion::V0_4_0 < CniVersion::V1_0_0);
        assert!(!CniVersion::V0_3_1.supports_check());
        assert!(CniVersion::V0_4_0.supports_check());
        assert!(!CniVersion::V1_0_0.supports_status_and_gc());
        assert!(CniVersion::V1_1_0.supports_status_and_gc());
        assert!(CniVersion::V0_4_0.ips_have_version());
        assert!(!CniVersion::V1_0_0.ips_have_version());
    }

    #[test]
    fn error_tags() {
        assert_eq!(error_tag(Some("0.4.0")), "0.4.0");
        assert_eq!(error_tag(Some("9.9.9")), "9.9.9");
        assert_eq!(error_tag(Some("junk")), "1.1.0");
        assert_eq!(error_tag(Some("")), "1.1.0");
        assert_eq!(error_tag(None), "1.1.0");
        assert_eq!(incompatible("0.2.0").code, code::INCOMPATIBLE_VERSION);
    }

    #[test]
    fn truncate_on_char_boundary() {
        assert_eq!(truncate("abc", 10), "abc");
        assert_eq!(truncate("aé", 2), "a");
    }
}
