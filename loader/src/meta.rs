//! A generation's metadata and its encoding in the commit-marker map.
//!
//! bpffs holds only bpf objects and directories, so the marker that says
//! "generation N is complete" is itself a map: a one-element `ARRAY` pinned at
//! `gen-N/meta` as the *last* step of building N and unpinned as the *first*
//! step of deleting it. Its value is [`META_VALUE_SIZE`] bytes: a
//! little-endian `u32` length, then that many bytes of JSON
//! ([`GenerationMeta`]), then zeros.
//!
//! Contract: [`decode`]`(`[`encode`]`(m)) == m` for every `m` whose JSON fits;
//! [`decode`] rejects anything else with a reason, never panics.

use egret_bpf::artifact::{CounterMap, DecisionTable, ProgramSpec};
use serde::{Deserialize, Serialize};

use crate::pins::Generation;

/// Format identifier inside the metadata.
pub const META_FORMAT: &str = "egret-generation/v1";

/// Value size of the metadata map.
pub const META_VALUE_SIZE: u32 = 4096;

/// Kernel name of the metadata map (at most 15 bytes).
pub const META_MAP_NAME: &str = "egret_meta";

/// What a complete generation records about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationMeta {
    /// [`META_FORMAT`].
    pub format: String,
    /// The generation number (also in the directory name; both must agree).
    pub generation: Generation,
    /// The node the artifact was compiled for.
    pub node: String,
    /// The artifact's digest (`Artifact::digest`).
    pub digest: String,
    /// Programs and where they attach.
    pub programs: Vec<ProgramSpec>,
    /// Map names, in the artifact's order.
    pub maps: Vec<String>,
    /// The state maps among them (shared with the next generation while
    /// their definition is unchanged). Absent in markers written before
    /// state maps existed, which then decode with none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub state: Vec<String>,
}

/// Why metadata bytes are not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetaError {
    /// The JSON does not fit [`META_VALUE_SIZE`].
    #[error("metadata of {len} bytes does not fit {META_VALUE_SIZE}-byte marker")]
    TooLarge {
        /// JSON length.
        len: usize,
    },
    /// The value is not of the expected size.
    #[error("marker value is {len} bytes, expected {META_VALUE_SIZE}")]
    Size {
        /// Actual size.
        len: usize,
    },
    /// The length prefix points past the value.
    #[error("length prefix {len} exceeds the marker value")]
    Length {
        /// The prefix.
        len: usize,
    },
    /// The JSON does not parse.
    #[error("metadata JSON: {reason}")]
    Json {
        /// serde's message.
        reason: String,
    },
    /// An unknown format.
    #[error("metadata format `{found}` is not `{META_FORMAT}`")]
    Format {
        /// The format found.
        found: String,
    },
}

/// Encodes metadata into a marker value of exactly [`META_VALUE_SIZE`] bytes.
///
/// # Errors
/// [`MetaError::TooLarge`] if the JSON does not fit.
pub fn encode(meta: &GenerationMeta) -> Result<Vec<u8>, MetaError> {
    let json = serde_json::to_vec(meta).map_err(|e| MetaError::Json { reason: e.to_string() })?;
    let cap = META_VALUE_SIZE as usize - 4;
    if json.len() > cap {
        return Err(MetaError::TooLarge { len: json.len() });
    }
    let mut v = vec![0u8; META_VALUE_SIZE as usize];
    v[..4].copy_from_slice(&(json.len() as u32).to_le_bytes());
    v[4..4 + json.len()].copy_from_slice(&json);
    Ok(v)
}

/// Decodes a marker value.
///
/// # Errors
/// See [`MetaError`].
pub fn decode(value: &[u8]) -> Result<GenerationMeta, MetaError> {
    if value.len() != META_VALUE_SIZE as usize {
        return Err(MetaError::Size { len: value.len() });
    }
    let mut len_bytes = [0u8; 4];
    len_bytes.copy_from_slice(&value[..4]);
    let len = u32::from_le_bytes(len_bytes) as usize;
    let Some(json) = value.get(4..4 + len) else {
        return Err(MetaError::Length { len });
    };
    let meta: GenerationMeta = serde_json::from_slice(json).map_err(|e| MetaError::Json { reason: e.to_string() })?;
    if meta.format != META_FORMAT {
        return Err(MetaError::Format { found: meta.format });
    }
    Ok(meta)
}

/// A generation's informational record (`gen-N/info`): what inspection
/// needs beyond the maps — the artifact's counter labels and decision table.
/// No program reads it: it is created with `BPF_F_RDONLY_PROG` and frozen.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GenerationInfo {
    /// What each index of the counter maps counts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub counters: Vec<CounterMap>,
    /// The decision table, if the artifact carries one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decisions: Option<DecisionTable>,
}

/// Value size of one chunk of the info map.
pub const INFO_CHUNK: u32 = 4096;

/// Kernel name of the info map.
pub const INFO_MAP_NAME: &str = "egret_info";

/// Encodes an info record as chunks of [`INFO_CHUNK`] bytes: a little-endian
/// `u64` length, the JSON, zeros.
///
/// # Errors
/// [`MetaError::Json`] if it does not serialize.
pub fn encode_info(info: &GenerationInfo) -> Result<Vec<Vec<u8>>, MetaError> {
    let json = serde_json::to_vec(info).map_err(|e| MetaError::Json { reason: e.to_string() })?;
    let mut blob = (json.len() as u64).to_le_bytes().to_vec();
    blob.extend_from_slice(&json);
    Ok(blob
        .chunks(INFO_CHUNK as usize)
        .map(|c| {
            let mut v = c.to_vec();
            v.resize(INFO_CHUNK as usize, 0);
            v
        })
        .collect())
}

/// Decodes [`encode_info`]'s chunks.
///
/// # Errors
/// A length past the chunks, or JSON that does not parse.
pub fn decode_info(chunks: &[Vec<u8>]) -> Result<GenerationInfo, MetaError> {
    let blob: Vec<u8> = chunks.concat();
    let len = blob.get(..8).map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as usize);
    let json = blob.get(8..8 + len).ok_or(MetaError::Length { len })?;
    serde_json::from_slice(json).map_err(|e| MetaError::Json { reason: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use egret_bpf::artifact::AttachPoint;

    fn sample() -> GenerationMeta {
        GenerationMeta {
            format: META_FORMAT.into(),
            generation: Generation(42),
            node: "node-1".into(),
            digest: "0123456789abcdef".into(),
            programs: vec![ProgramSpec::attached("egret_src", AttachPoint::PodVethIngress)],
            maps: vec!["verdicts".into(), "counters".into()],
            state: vec!["counters".into()],
        }
    }

    #[test]
    fn round_trip() {
        let m = sample();
        let v = encode(&m).expect("fits");
        assert_eq!(v.len(), META_VALUE_SIZE as usize);
        assert_eq!(decode(&v), Ok(m));
    }

    #[test]
    fn markers_without_state_decode() {
        let mut m = sample();
        m.state.clear();
        let v = encode(&m).expect("fits");
        let json = String::from_utf8_lossy(&v[4..]).into_owned();
        assert!(!json.contains("state"), "an older marker's JSON: {json}");
        assert_eq!(decode(&v), Ok(m));
    }

    #[test]
    fn info_round_trips_across_chunks() {
        use egret_bpf::artifact::{Decision, DecisionRow};
        let rows = (0..200u32)
            .map(|i| DecisionRow {
                source: std::net::Ipv4Addr::from(0x0af4_0000 + i).into(),
                destination: "203.0.113.0/24".into(),
                decision: Decision::Redirect { gateway: std::net::Ipv4Addr::new(192, 0, 2, 13).into(), slot: i },
                failover: Vec::new(),
                rule: Some(i),
            })
            .collect();
        let info = GenerationInfo {
            counters: vec![],
            decisions: Some(DecisionTable {
                layout: "inline".into(),
                internal: vec!["10.0.0.0/8".into()],
                rows,
                classes: [(std::net::Ipv4Addr::new(10, 244, 0, 1).into(), 0)].into(),
                egress: [(3, std::net::Ipv4Addr::new(198, 51, 100, 100).into())].into(),
                egress6: Default::default(),
            }),
        };
        let chunks = encode_info(&info).expect("encodes");
        assert!(chunks.len() > 1 && chunks.iter().all(|c| c.len() == INFO_CHUNK as usize));
        assert_eq!(decode_info(&chunks), Ok(info));
        assert!(decode_info(&chunks[..1]).is_err(), "a truncated record is refused");
    }

    #[test]
    fn rejects_bad_values() {
        let v = encode(&sample()).expect("fits");
        assert!(matches!(decode(&v[..100]), Err(MetaError::Size { len: 100 })));
        let mut long = v.clone();
        long[..4].copy_from_slice(&5000u32.to_le_bytes());
        assert!(matches!(decode(&long), Err(MetaError::Length { len: 5000 })));
        let zero = vec![0u8; META_VALUE_SIZE as usize];
        assert!(matches!(decode(&zero), Err(MetaError::Json { .. })));
        let mut other = sample();
        other.format = "egret-generation/v0".into();
        let v = encode(&other).expect("fits");
        assert!(matches!(decode(&v), Err(MetaError::Format { .. })));
        let mut huge = sample();
        huge.maps = (0..1000).map(|i| format!("map_{i}")).collect();
        assert!(matches!(encode(&huge), Err(MetaError::TooLarge { .. })));
    }
}
