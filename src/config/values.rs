//! Values written as text in the config: durations (`90s`, `6h`) and sizes (`10GiB`),
//! parsed once into numbers and printed back the same way.

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub(crate) fn ser_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

pub(super) fn ser_opt_duration<S: serde::Serializer>(
    d: &Option<Duration>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
        None => s.serialize_none(),
    }
}

// ---------------------------------------------------------------- raw (serde) layer

/// A duration written like `26h`, `30d` or `1h 30m`.
#[derive(Debug, Clone, Copy)]
pub(super) struct HumanDuration(pub(super) Duration);

impl Serialize for HumanDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s)
            .map(HumanDuration)
            .map_err(serde::de::Error::custom)
    }
}

/// Parses `26h`, `30d`, `90s`, `1h 30m` into a duration.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| {
        format!("invalid duration {s:?} ({e}); write it like \"90s\", \"26h\", \"30d\"")
    })
}

/// A byte size written like `10GiB`, `500 MB` or a plain number of bytes.
#[derive(Debug, Clone, Copy)]
pub(super) struct Size(pub(super) u64);

impl Serialize for Size {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            N(u64),
            S(String),
        }
        match Either::deserialize(d)? {
            Either::N(n) => Ok(Size(n)),
            Either::S(s) => parse_size(&s).map(Size).map_err(serde::de::Error::custom),
        }
    }
}

/// Parses `10GiB`, `1.5 GB`, `512k` into bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    match s.trim().parse::<bytesize::ByteSize>().map(|b| b.as_u64()) {
        // bytesize saturates instead of failing.
        Ok(u64::MAX) => Err(format!(
            "size {s:?} is larger than the largest steward handles (16 EiB)"
        )),
        Ok(n) => Ok(n),
        Err(e) => Err(format!(
            "invalid size {s:?} ({e}); write it like \"10GiB\" or \"500MB\""
        )),
    }
}

// ---------------------------------------------------------------- loading
