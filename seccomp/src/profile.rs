//! The input: OCI `linux.seccomp`, field for field, with the OCI JSON names.
//!
//! Actions, operators, architectures and flags stay strings here so that a bad value is
//! reported by [`crate::Program::compile`] with its place in the profile
//! (`linux.seccomp.syscalls[3].action = "SCMP_ACT_FOO": unknown action`) rather than as a
//! serde error. From oci-spec types: `serde_json::from_value(serde_json::to_value(&s)?)`.

use serde::{Deserialize, Deserializer, Serialize};

/// `linux.seccomp`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Seccomp {
    /// `SCMP_ACT_*`, applied to every syscall no rule matches.
    pub default_action: String,
    /// errno for a default `SCMP_ACT_ERRNO` (default EPERM) or data for `SCMP_ACT_TRACE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_errno_ret: Option<u32>,
    /// `SCMP_ARCH_*`, the ABIs filtered besides the native one.
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub architectures: Vec<String>,
    /// `SECCOMP_FILTER_FLAG_*`.
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<String>,
    /// Unix socket the runtime sends the NOTIFY listener fd to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listener_path: Option<String>,
    /// Opaque data sent with the listener fd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listener_metadata: Option<String>,
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub syscalls: Vec<Syscall>,
}

/// One entry of `linux.seccomp.syscalls`: an action for some syscalls, optionally conditional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Syscall {
    #[serde(default, deserialize_with = "null_as_default")]
    pub names: Vec<String>,
    pub action: String,
    /// errno for `SCMP_ACT_ERRNO` (default EPERM), data for `SCMP_ACT_TRACE`; ignored otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno_ret: Option<u32>,
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<Arg>,
}

/// A condition on one syscall argument.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Arg {
    /// Argument number, 0..=5.
    pub index: u32,
    /// The value compared with; the mask for `SCMP_CMP_MASKED_EQ`.
    pub value: u64,
    /// The datum for `SCMP_CMP_MASKED_EQ` (`(arg & value) == valueTwo`); unused otherwise.
    #[serde(default)]
    pub value_two: u64,
    /// `SCMP_CMP_*`.
    pub op: String,
}

/// Go writes a nil slice as `null`; treat it like an absent field.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}
