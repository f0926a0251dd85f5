//! Checkpoint container: one self-checking file holding any serde value (model
//! parameters, optimizer state, trainer progress, a tokenizer...).
//!
//! File layout (all integers little-endian):
//!
//! ```text
//! offset   size  field
//! 0        8     magic b"PGLMCKPT"
//! 8        4     format version (u32), currently 1
//! 12       4     kind length k (u32), 1..=64
//! 16       8     payload length n (u64)
//! 24       k     kind: ASCII name of the content, e.g. "pglm.model"
//! 24+k     n     payload: bincode 2 via serde, fixed-width little-endian integers
//! 24+k+n   4     CRC-32 (IEEE) of bytes [0, 24+k+n)
//! ```
//!
//! Why these choices:
//! - The *kind* lets `load` refuse a pglm file of another sort (a tokenizer handed to the
//!   model loader) with a clear message instead of a confusing decode error.
//! - CRC-32 detects every burst error up to 32 bits and all 1- and 2-bit flips at these
//!   sizes, which covers what disks and truncated copies do; `crc32fast` (the checksum
//!   behind flate2/zip) runs at many GB/s with SIMD, so a GB checkpoint costs ~0.1 s. A
//!   cryptographic hash (blake3) would be a heavier dependency guarding against an
//!   adversary this format does not claim to resist; byte-serial FNV-1a is slower and
//!   weaker at detecting bit flips.
//! - Fixed-width integers make bincode's byte-limit accounting (which counts the in-memory
//!   size of each decoded integer) equal to the bytes actually read, so the decoder can be
//!   limited to (a small multiple of) the payload length: a corrupted length prefix
//!   *inside* the payload can never make it allocate more than that. Varints would save
//!   little, since checkpoints are dominated by f32 arrays.
//! - Every length field is checked against the real file size before it is used, and the
//!   whole file is read at once (an allocation bounded by the file's actual size).
//! - Writes go through a temp file + fsync + rename + directory fsync (the `atomic` submodule), so a
//!   crash mid-save leaves the previous checkpoint intact.

mod atomic;
#[cfg(test)]
mod tests;

pub use atomic::write_atomically;

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fs;
use std::path::{Path, PathBuf};

/// First eight bytes of every pglm checkpoint.
pub const MAGIC: [u8; 8] = *b"PGLMCKPT";
/// The format version this build writes, and the newest it can read.
pub const FORMAT_VERSION: u32 = 1;
/// Longest accepted kind name, in bytes.
pub const MAX_KIND_LEN: usize = 64;

/// Bytes before the kind: magic, version, kind length, payload length.
const FIXED_HEADER_LEN: usize = 24;
/// Bytes of the trailing CRC-32.
const CHECKSUM_LEN: usize = 4;

/// Why a checkpoint could not be saved or loaded. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The file system refused a read or write.
    #[error("{path}: I/O error: {source}", path = path.display())]
    Io {
        /// The checkpoint file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file does not start with [`MAGIC`]: it is not a pglm checkpoint at all.
    #[error("{path}: not a pglm checkpoint (starts with {found:02x?}, expected \"PGLMCKPT\")", path = path.display())]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// Its first bytes (up to eight).
        found: Vec<u8>,
    },
    /// The file was written by a newer pglm with a format this build does not know.
    #[error(
        "{path}: checkpoint format version {found} is newer than the supported version {supported}; \
         upgrade pglm to read it",
        path = path.display()
    )]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// Version stored in the file.
        found: u32,
        /// Newest version this build reads ([`FORMAT_VERSION`]).
        supported: u32,
    },
    /// The file is shorter than its header says: an interrupted copy or download.
    #[error("{path}: truncated checkpoint: expected {expected} bytes, found {actual}", path = path.display())]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Size the header implies (saturated at `u64::MAX` for absurd length fields).
        expected: u64,
        /// Actual size of the file.
        actual: u64,
    },
    /// The stored checksum does not match the content: the file was altered or damaged.
    #[error(
        "{path}: checksum mismatch (stored {stored:08x}, computed {computed:08x}): the file is corrupted",
        path = path.display()
    )]
    ChecksumMismatch {
        /// The file.
        path: PathBuf,
        /// CRC-32 stored in the file.
        stored: u32,
        /// CRC-32 of the bytes actually read.
        computed: u32,
    },
    /// The file is a valid checkpoint of another kind than the caller asked for.
    #[error("{path}: this checkpoint holds a {found:?}, expected a {expected:?}", path = path.display())]
    WrongKind {
        /// The file.
        path: PathBuf,
        /// Kind the caller asked for.
        expected: String,
        /// Kind stored in the file.
        found: String,
    },
    /// The header is inconsistent in a way a truncation cannot explain.
    #[error("{path}: malformed checkpoint: {reason}", path = path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The checksum is fine but the payload does not decode as the requested type: the
    /// file was written from a different struct layout.
    #[error("{path}: payload of kind {kind:?} does not decode as the requested type: {source}", path = path.display())]
    Decode {
        /// The file.
        path: PathBuf,
        /// Kind stored in the file.
        kind: String,
        /// bincode's complaint.
        #[source]
        source: bincode::error::DecodeError,
    },
    /// The value could not be serialized (e.g. a map with non-string keys is fine, but a
    /// serde impl returned an error).
    #[error("{path}: could not encode the checkpoint: {source}", path = path.display())]
    Encode {
        /// The destination file.
        path: PathBuf,
        /// bincode's complaint.
        #[source]
        source: bincode::error::EncodeError,
    },
    /// The kind passed to [`save`] is empty, too long, or not printable ASCII.
    #[error("{path}: invalid checkpoint kind {kind:?}: use 1 to 64 printable ASCII characters", path = path.display())]
    InvalidKind {
        /// The destination file.
        path: PathBuf,
        /// The rejected kind.
        kind: String,
    },
}

/// What the header of a valid checkpoint says (see [`read_info`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointInfo {
    /// Format version the file was written with.
    pub version: u32,
    /// Name of the content, as given to [`save`].
    pub kind: String,
    /// Size of the bincode payload in bytes.
    pub payload_len: u64,
}

/// The bincode configuration of format version 1 (see the module docs for why fixed-width).
type BincodeConfig = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Fixint,
    bincode::config::NoLimit,
>;

fn bincode_config() -> BincodeConfig {
    bincode::config::standard().with_little_endian().with_fixed_int_encoding()
}

/// Serializes `value` and writes it to `path` as a checkpoint of the given `kind`,
/// atomically replacing any existing file.
///
/// `kind` names the content so that [`load`] can refuse a different sort of pglm file;
/// use a dotted name such as `"pglm.model"` or `"pglm.trainer-state"`.
pub fn save<T: Serialize + ?Sized>(
    path: impl AsRef<Path>,
    kind: &str,
    value: &T,
) -> Result<(), CheckpointError> {
    let path = path.as_ref();
    let bytes = encode(path, kind, value)?;
    write_atomically(path, &bytes).map_err(|source| CheckpointError::Io { path: path.into(), source })
}

/// Reads the checkpoint at `path`, verifies it, and decodes its payload as a `T`.
///
/// Fails with a [`CheckpointError`] naming the file if it is missing, foreign, newer,
/// truncated, corrupted, of another kind than `kind`, or not a `T`. Never panics on bad
/// input.
pub fn load<T: DeserializeOwned>(path: impl AsRef<Path>, kind: &str) -> Result<T, CheckpointError> {
    let path = path.as_ref();
    let bytes = fs::read(path).map_err(|source| CheckpointError::Io { path: path.into(), source })?;
    decode(path, kind, &bytes)
}

/// Verifies the checkpoint at `path` (magic, version, lengths, checksum) and returns its
/// header without decoding the payload: what a CLI needs to say "this is a X".
pub fn read_info(path: impl AsRef<Path>) -> Result<CheckpointInfo, CheckpointError> {
    let path = path.as_ref();
    let bytes = fs::read(path).map_err(|source| CheckpointError::Io { path: path.into(), source })?;
    let frame = parse_frame(path, &bytes)?;
    Ok(CheckpointInfo {
        version: frame.version,
        kind: frame.kind.to_string(),
        payload_len: frame.payload.len() as u64,
    })
}

/// Builds the complete file contents for `value`.
fn encode<T: Serialize + ?Sized>(path: &Path, kind: &str, value: &T) -> Result<Vec<u8>, CheckpointError> {
    let kind_ok =
        !kind.is_empty() && kind.len() <= MAX_KIND_LEN && kind.bytes().all(|b| b.is_ascii_graphic());
    if !kind_ok {
        return Err(CheckpointError::InvalidKind { path: path.into(), kind: kind.to_string() });
    }
    let payload = bincode::serde::encode_to_vec(value, bincode_config())
        .map_err(|source| CheckpointError::Encode { path: path.into(), source })?;

    let mut bytes = Vec::with_capacity(FIXED_HEADER_LEN + kind.len() + payload.len() + CHECKSUM_LEN);
    bytes.extend_from_slice(&MAGIC);
    bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    bytes.extend_from_slice(&(kind.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    bytes.extend_from_slice(kind.as_bytes());
    bytes.extend_from_slice(&payload);
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    Ok(bytes)
}

/// Verifies a whole checkpoint held in memory and decodes its payload.
fn decode<T: DeserializeOwned>(path: &Path, kind: &str, bytes: &[u8]) -> Result<T, CheckpointError> {
    let frame = parse_frame(path, bytes)?;
    if frame.kind != kind {
        return Err(CheckpointError::WrongKind {
            path: path.into(),
            expected: kind.to_string(),
            found: frame.kind.to_string(),
        });
    }
    let decode_err =
        |source| CheckpointError::Decode { path: path.into(), kind: frame.kind.to_string(), source };
    let (value, used) = decode_payload::<T>(frame.payload).map_err(decode_err)?;
    if used != frame.payload.len() {
        return Err(CheckpointError::Malformed {
            path: path.into(),
            reason: format!(
                "payload of kind {:?} has {} unread bytes after the value: written from a different type?",
                frame.kind,
                frame.payload.len() - used
            ),
        });
    }
    Ok(value)
}

/// A checkpoint whose framing and checksum have been verified.
struct Frame<'a> {
    version: u32,
    kind: &'a str,
    payload: &'a [u8],
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("slice of length 4"))
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("slice of length 8"))
}

/// Checks, in order: magic, version, lengths against the real size, checksum, kind text.
/// The version is checked before the checksum because a newer format may place it
/// differently; lengths before anything is sliced, so no field is trusted unchecked.
fn parse_frame<'a>(path: &Path, bytes: &'a [u8]) -> Result<Frame<'a>, CheckpointError> {
    let actual = bytes.len() as u64;
    let prefix = &bytes[..bytes.len().min(MAGIC.len())];
    if prefix != &MAGIC[..prefix.len()] {
        return Err(CheckpointError::BadMagic { path: path.into(), found: prefix.to_vec() });
    }
    if bytes.len() < FIXED_HEADER_LEN {
        let expected = (FIXED_HEADER_LEN + CHECKSUM_LEN) as u64;
        return Err(CheckpointError::Truncated { path: path.into(), expected, actual });
    }

    let version = read_u32(bytes, 8);
    if version > FORMAT_VERSION {
        return Err(CheckpointError::UnsupportedVersion {
            path: path.into(),
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let malformed = |reason: String| CheckpointError::Malformed { path: path.into(), reason };
    if version == 0 {
        return Err(malformed("format version 0 does not exist".into()));
    }

    let kind_len = read_u32(bytes, 12) as u64;
    let payload_len = read_u64(bytes, 16);
    if kind_len == 0 || kind_len > MAX_KIND_LEN as u64 {
        return Err(malformed(format!("kind length {kind_len} is outside 1..={MAX_KIND_LEN}")));
    }
    // u128 so that no length field, however absurd, can overflow the sum.
    let expected = FIXED_HEADER_LEN as u128 + kind_len as u128 + payload_len as u128 + CHECKSUM_LEN as u128;
    if (actual as u128) < expected {
        let expected = u64::try_from(expected).unwrap_or(u64::MAX);
        return Err(CheckpointError::Truncated { path: path.into(), expected, actual });
    }
    if (actual as u128) > expected {
        return Err(malformed(format!("{} trailing bytes after the checksum", actual as u128 - expected)));
    }

    // From here on every offset is within `bytes`: expected == bytes.len().
    let kind_end = FIXED_HEADER_LEN + kind_len as usize;
    let payload_end = bytes.len() - CHECKSUM_LEN;
    let stored = read_u32(bytes, payload_end);
    let computed = crc32fast::hash(&bytes[..payload_end]);
    if stored != computed {
        return Err(CheckpointError::ChecksumMismatch { path: path.into(), stored, computed });
    }
    let kind = std::str::from_utf8(&bytes[FIXED_HEADER_LEN..kind_end])
        .map_err(|_| malformed("kind is not UTF-8".into()))?;
    Ok(Frame { version, kind, payload: &bytes[kind_end..payload_end] })
}

/// Decodes `payload` with a bincode byte limit just above its length, so that a length
/// prefix inside it (a string's, say) cannot make bincode allocate more than ~4x the
/// payload. bincode's limit is a const generic, hence the ladder of power-of-4 limits.
fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<(T, usize), bincode::error::DecodeError> {
    macro_rules! limit_ladder {
        ($($shift:literal)*) => {
            $(
                if payload.len() < (1usize << $shift) {
                    return decode_limited::<T, { 1usize << $shift }>(payload);
                }
            )*
        };
    }
    limit_ladder!(12 14 16 18 20 22 24 26 28 30 32 34 36 38 40 42 44 46 48);
    Err(bincode::error::DecodeError::LimitExceeded)
}

/// One rung of [`decode_payload`]'s ladder.
fn decode_limited<T: DeserializeOwned, const LIMIT: usize>(
    payload: &[u8],
) -> Result<(T, usize), bincode::error::DecodeError> {
    bincode::serde::decode_from_slice(payload, bincode_config().with_limit::<LIMIT>())
}
