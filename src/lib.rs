//! sparkrtc-gateway: an authenticating reverse proxy for Huawei Cloud SparkRTC.

pub mod secret;
pub mod signer;
