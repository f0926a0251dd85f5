//! Tests of the checkpoint container: round trips, every error variant, and fuzzing of
//! the loader with arbitrary and mutated bytes.

use super::*;
use ndarray::{Array1, Array2, ArrayD, IxDyn};
use proptest::prelude::*;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};

const KIND: &str = "pglm.test-state";

/// Something shaped like trainer state: arrays of several ranks and element types,
/// text, maps, optionals and an enum.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct State {
    step: u64,
    name: String,
    weights: Array2<f32>,
    moments: ArrayD<f64>,
    token_ids: Array1<u32>,
    by_name: HashMap<String, Vec<f32>>,
    config: BTreeMap<String, String>,
    best_loss: Option<f64>,
    schedule: Schedule,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Schedule {
    Constant,
    Cosine { warmup: u32, total: u32 },
}

fn sample_state() -> State {
    State {
        step: 123_456_789_012,
        name: "policy \u{3c0} run".to_string(),
        weights: Array2::from_shape_fn((3, 5), |(i, j)| i as f32 * 0.5 - j as f32 / 3.0),
        moments: ArrayD::from_shape_fn(IxDyn(&[2, 1, 3]), |ix| (ix[0] * 7 + ix[2]) as f64 * -1e-300),
        token_ids: Array1::from(vec![0, 17, 50_256, u32::MAX]),
        by_name: HashMap::from([("wte".into(), vec![1.0, -2.5]), ("ln_f".into(), vec![])]),
        config: BTreeMap::from([("lr".into(), "3e-4".into()), ("seed".into(), "7".into())]),
        best_loss: Some(f64::MIN_POSITIVE),
        schedule: Schedule::Cosine { warmup: 100, total: 10_000 },
    }
}

fn sample_bytes() -> Vec<u8> {
    encode(Path::new("mem"), KIND, &sample_state()).unwrap()
}

/// A CRC-valid file around an arbitrary payload, as a careful forger would write it.
fn frame(kind: &str, payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&MAGIC);
    bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    bytes.extend_from_slice(&(kind.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    bytes.extend_from_slice(kind.as_bytes());
    bytes.extend_from_slice(payload);
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    bytes
}

fn load_bytes(bytes: &[u8]) -> Result<State, CheckpointError> {
    decode(Path::new("mem"), KIND, bytes)
}

#[test]
fn round_trip_through_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.ckpt");
    save(&path, KIND, &sample_state()).unwrap();
    let loaded: State = load(&path, KIND).unwrap();
    assert_eq!(loaded, sample_state());
    let info = read_info(&path).unwrap();
    assert_eq!(info, CheckpointInfo { version: 1, kind: KIND.into(), payload_len: info.payload_len });
    assert_eq!(fs::metadata(&path).unwrap().len(), 24 + KIND.len() as u64 + info.payload_len + 4);
}

#[test]
fn save_replaces_existing_file_and_leaves_no_temp_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.ckpt");
    save(&path, KIND, &"an older, longer value that is replaced".to_string()).unwrap();
    save(&path, KIND, &sample_state()).unwrap();
    assert_eq!(load::<State>(&path, KIND).unwrap(), sample_state());
    let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, vec![std::ffi::OsString::from("state.ckpt")]);
}

#[test]
fn encoding_is_deterministic() {
    // HashMap iteration order is random per process, but the payload of a map-free value
    // must be byte-identical across saves (reproducible checkpoints).
    let value = (sample_state().weights, "x".to_string(), 5u64);
    let a = encode(Path::new("a"), KIND, &value).unwrap();
    let b = encode(Path::new("b"), KIND, &value).unwrap();
    assert_eq!(a, b);
}

#[test]
fn truncation_at_any_point_is_reported_as_truncated() {
    let bytes = sample_bytes();
    let n = bytes.len();
    for cut in [0, 3, 8, 12, 23, 24, 30, n / 2, n - 5, n - 1] {
        match load_bytes(&bytes[..cut]) {
            Err(CheckpointError::Truncated { expected, actual, .. }) => {
                assert_eq!(actual, cut as u64);
                assert!(expected > actual, "cut {cut}: expected {expected}");
            }
            other => panic!("cut at {cut} of {n}: {other:?}"),
        }
    }
}

#[test]
fn flipped_bytes_fail_the_checksum() {
    let bytes = sample_bytes();
    let payload_start = 24 + KIND.len();
    // In the kind, at the start/middle/end of the payload, and in the checksum itself.
    for at in [25, payload_start, payload_start + 40, bytes.len() - 5, bytes.len() - 1] {
        let mut corrupted = bytes.clone();
        corrupted[at] ^= 0x10;
        match load_bytes(&corrupted) {
            Err(CheckpointError::ChecksumMismatch { stored, computed, .. }) => assert_ne!(stored, computed),
            other => panic!("flip at {at}: {other:?}"),
        }
    }
}

#[test]
fn foreign_files_have_bad_magic() {
    let mut bytes = sample_bytes();
    bytes[0] = b'X';
    assert!(
        matches!(load_bytes(&bytes), Err(CheckpointError::BadMagic { found, .. }) if found == b"XGLMCKPT")
    );
    // A safetensors file starts with its little-endian header length.
    let safetensors_like = [0x40, 0, 0, 0, 0, 0, 0, 0, b'{', b'"'];
    assert!(matches!(load_bytes(&safetensors_like), Err(CheckpointError::BadMagic { .. })));
    // Too short to hold the magic, and already different.
    assert!(matches!(load_bytes(b"{}"), Err(CheckpointError::BadMagic { .. })));
}

#[test]
fn newer_version_is_refused_before_anything_else() {
    let mut bytes = sample_bytes();
    bytes[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    match load_bytes(&bytes) {
        Err(CheckpointError::UnsupportedVersion { found, supported, .. }) => {
            assert_eq!((found, supported), (FORMAT_VERSION + 1, FORMAT_VERSION));
        }
        other => panic!("{other:?}"),
    }
    bytes[8..12].copy_from_slice(&0u32.to_le_bytes());
    assert!(matches!(load_bytes(&bytes), Err(CheckpointError::Malformed { .. })));
}

#[test]
fn huge_length_fields_are_caught_without_allocating() {
    let mut bytes = sample_bytes();
    bytes[16..24].copy_from_slice(&(u64::MAX - 3).to_le_bytes());
    match load_bytes(&bytes) {
        Err(CheckpointError::Truncated { expected, actual, .. }) => {
            assert_eq!((expected, actual), (u64::MAX, bytes.len() as u64));
        }
        other => panic!("{other:?}"),
    }
    let mut bytes = sample_bytes();
    bytes[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(load_bytes(&bytes), Err(CheckpointError::Malformed { .. })));
}

#[test]
fn huge_length_prefix_inside_a_valid_payload_does_not_allocate() {
    // A checksum-valid file whose payload claims a 1 TiB string: bincode would allocate
    // the string before reading it, unless the byte limit stops it first.
    let mut payload = (1u64 << 40).to_le_bytes().to_vec();
    payload.extend_from_slice(b"short");
    let bytes = frame(KIND, &payload);
    let result: Result<String, _> = decode(Path::new("mem"), KIND, &bytes);
    assert!(matches!(result, Err(CheckpointError::Decode { .. })), "{result:?}");
}

#[test]
fn fixed_int_limit_accounting_matches_bytes_read() {
    // 8-byte length + 511 u64s = exactly 4096 bytes; with varints bincode would count
    // 8 bytes per decoded 1-byte integer and exceed a limit equal to the payload size.
    let value: Vec<u64> = (0..511).collect();
    let payload = bincode::serde::encode_to_vec(&value, bincode_config()).unwrap();
    assert_eq!(payload.len(), 4096);
    let (decoded, used) = decode_limited::<Vec<u64>, 4096>(&payload).unwrap();
    assert_eq!((decoded, used), (value, 4096));
}

#[test]
fn wrong_kind_and_wrong_type_are_distinguished() {
    let bytes = frame("pglm.tokenizer", &[1, 2, 3]);
    match load_bytes(&bytes) {
        Err(CheckpointError::WrongKind { expected, found, .. }) => {
            assert_eq!((expected.as_str(), found.as_str()), (KIND, "pglm.tokenizer"));
        }
        other => panic!("{other:?}"),
    }
    // Right kind, but a payload written from another type: too short...
    let short = encode(Path::new("mem"), KIND, &7u8).unwrap();
    assert!(matches!(load_bytes(&short), Err(CheckpointError::Decode { .. })));
    // ...or with bytes left over.
    let long = encode(Path::new("mem"), KIND, &(sample_state(), 1u8)).unwrap();
    assert!(matches!(load_bytes(&long), Err(CheckpointError::Malformed { .. })));
}

#[test]
fn trailing_bytes_after_the_checksum_are_malformed() {
    let mut bytes = sample_bytes();
    bytes.push(0);
    assert!(matches!(load_bytes(&bytes), Err(CheckpointError::Malformed { .. })));
}

#[test]
fn invalid_kinds_are_refused_on_save() {
    let long = "k".repeat(MAX_KIND_LEN + 1);
    for kind in ["", "has space", "tab\t", "caf\u{e9}", long.as_str()] {
        assert!(
            matches!(encode(Path::new("mem"), kind, &1u8), Err(CheckpointError::InvalidKind { .. })),
            "{kind:?}"
        );
    }
    assert!(encode(Path::new("mem"), &"k".repeat(MAX_KIND_LEN), &1u8).is_ok());
}

#[test]
fn errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.ckpt");
    let err = load::<State>(&path, KIND).unwrap_err();
    assert!(matches!(err, CheckpointError::Io { .. }));
    assert!(err.to_string().contains("missing.ckpt"), "{err}");

    fs::write(&path, b"not a checkpoint").unwrap();
    let err = load::<State>(&path, KIND).unwrap_err();
    assert!(err.to_string().contains("missing.ckpt") && err.to_string().contains("not a pglm checkpoint"));
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = load_bytes(&bytes);
        let _ = decode::<String>(Path::new("mem"), KIND, &bytes);
    }

    #[test]
    fn arbitrary_payloads_in_a_valid_frame_never_panic(
        payload in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        // Past the checksum: this exercises bincode and the serde impls on garbage.
        let _ = load_bytes(&frame(KIND, &payload));
    }

    #[test]
    fn any_single_byte_change_is_detected(at in any::<prop::sample::Index>(), xor in 1u8..=255) {
        let mut bytes = sample_bytes();
        let at = at.index(bytes.len());
        bytes[at] ^= xor;
        prop_assert!(load_bytes(&bytes).is_err());
    }

    #[test]
    fn any_truncation_is_detected(cut in any::<prop::sample::Index>()) {
        let bytes = sample_bytes();
        let cut = cut.index(bytes.len());
        let is_truncated = matches!(load_bytes(&bytes[..cut]), Err(CheckpointError::Truncated { .. }));
        prop_assert!(is_truncated);
    }
}
