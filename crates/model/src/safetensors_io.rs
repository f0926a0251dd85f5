//! Reading and writing [safetensors] files, the format Hugging Face checkpoints use.
//!
//! A safetensors file is an 8-byte little-endian header length, a JSON header
//! `{name: {dtype, shape, data_offsets}, "__metadata__": {str: str}}`, then the raw
//! little-endian tensor bytes. pglm computes in f32/f64, so every tensor is read into an
//! owned `ArrayD<f32>`: F32 as is, F16 and BF16 widened exactly. Other dtypes (integer
//! buffers, F64, 8-bit floats) are refused with an error naming the tensor rather than
//! converted silently.
//!
//! Reading this module does no name mapping: HF GPT-2 keys (`transformer.` prefix or not,
//! Conv1D weights stored (in, out)) are the model loader's business.
//!
//! [safetensors]: https://huggingface.co/docs/safetensors

use crate::checkpoint::write_atomically;
use ndarray::{ArrayD, ArrayViewD, IxDyn};
use safetensors::tensor::{Dtype, SafeTensorError, View};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// The reserved header key under which safetensors stores free-form metadata.
const METADATA_KEY: &str = "__metadata__";

/// All tensors of a safetensors file, converted to f32, plus its string metadata.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TensorFile {
    /// Tensors by name, in the file's (row-major) layout.
    pub tensors: BTreeMap<String, ArrayD<f32>>,
    /// The `__metadata__` map (HF writes `{"format": "pt"}`); empty if absent.
    pub metadata: BTreeMap<String, String>,
}

/// Why a safetensors file could not be read or written. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum SafetensorsError {
    /// The file system refused a read or write.
    #[error("{path}: I/O error: {source}", path = path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The header is not valid safetensors (bad length, JSON, offsets or sizes).
    #[error("{path}: not a valid safetensors file: {source}", path = path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// The safetensors crate's complaint.
        #[source]
        source: SafeTensorError,
    },
    /// A tensor has a dtype pglm does not convert to f32.
    #[error("{path}: tensor {tensor:?} has dtype {dtype}; only F32, F16 and BF16 are supported", path = path.display())]
    UnsupportedDtype {
        /// The file.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// Its dtype as written in the header.
        dtype: String,
    },
    /// A tensor name to be written is empty, reserved, or given twice.
    #[error("{path}: cannot write tensor {tensor:?}: {reason}", path = path.display())]
    InvalidName {
        /// The destination file.
        path: PathBuf,
        /// The offending name.
        tensor: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The safetensors crate refused to serialize the tensors.
    #[error("{path}: could not encode safetensors: {source}", path = path.display())]
    Encode {
        /// The destination file.
        path: PathBuf,
        /// The safetensors crate's complaint.
        #[source]
        source: SafeTensorError,
    },
}

/// Reads every tensor of the safetensors file at `path` into f32 arrays.
///
/// The whole file is read into memory once (for GPT-2 small, 0.5 GB, plus the f32 copies).
pub fn read_safetensors(path: impl AsRef<Path>) -> Result<TensorFile, SafetensorsError> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| SafetensorsError::Io { path: path.into(), source })?;
    parse(path, &bytes)
}

/// Decodes a safetensors image held in memory; `path` only labels errors.
fn parse(path: &Path, bytes: &[u8]) -> Result<TensorFile, SafetensorsError> {
    let format_err = |source| SafetensorsError::Format { path: path.into(), source };
    // `read_metadata` validates the header length against the buffer, the offsets against
    // each other, and each tensor's byte size against dtype x shape, before we slice.
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes).map_err(format_err)?;
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(format_err)?;

    let mut tensors = BTreeMap::new();
    for (name, view) in st.iter() {
        let values = to_f32(view.dtype(), view.data()).ok_or_else(|| SafetensorsError::UnsupportedDtype {
            path: path.into(),
            tensor: name.to_string(),
            dtype: view.dtype().to_string(),
        })?;
        let array = ArrayD::from_shape_vec(IxDyn(view.shape()), values).map_err(|_| {
            format_err(SafeTensorError::InvalidTensorView(
                view.dtype(),
                view.shape().to_vec(),
                view.data().len(),
            ))
        })?;
        tensors.insert(name.to_string(), array);
    }
    let metadata = header.metadata().clone().unwrap_or_default().into_iter().collect();
    Ok(TensorFile { tensors, metadata })
}

/// Converts little-endian `data` of `dtype` to f32, or `None` for an unsupported dtype.
///
/// The bytes are decoded element by element rather than reinterpreted in place because
/// a tensor's offset in the file need not be aligned for its type.
fn to_f32(dtype: Dtype, data: &[u8]) -> Option<Vec<f32>> {
    let values = match dtype {
        Dtype::F32 => data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        // Both widenings are exact: every f16 and bf16 value is representable in f32.
        Dtype::F16 => data.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        Dtype::BF16 => {
            data.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect()
        }
        _ => return None,
    };
    Some(values)
}

/// An f32 tensor flattened to little-endian bytes, in the form `safetensors::serialize`
/// consumes.
struct F32Bytes {
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl F32Bytes {
    /// Row-major bytes of `array` whatever its memory layout (views may be transposed
    /// or strided; `iter` walks them in logical order).
    fn new(array: &ArrayViewD<'_, f32>) -> Self {
        let mut bytes = Vec::with_capacity(array.len() * 4);
        for &x in array.iter() {
            bytes.extend_from_slice(&x.to_le_bytes());
        }
        Self { shape: array.shape().to_vec(), bytes }
    }
}

impl View for F32Bytes {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// Writes `tensors` as F32 to a safetensors file at `path`, atomically replacing any
/// existing file. `metadata` becomes the `__metadata__` map (omitted when empty); pass
/// `{"format": "pt"}` to match what Hugging Face writes.
pub fn write_safetensors(
    path: impl AsRef<Path>,
    tensors: &[(String, ArrayViewD<'_, f32>)],
    metadata: &BTreeMap<String, String>,
) -> Result<(), SafetensorsError> {
    let path = path.as_ref();
    let mut seen = BTreeSet::new();
    for (name, _) in tensors {
        let reason = if name.is_empty() {
            Some("empty name")
        } else if name == METADATA_KEY {
            Some("reserved for the metadata map")
        } else if !seen.insert(name.as_str()) {
            // safetensors would silently keep only one of them.
            Some("name given twice")
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(SafetensorsError::InvalidName { path: path.into(), tensor: name.clone(), reason });
        }
    }

    let views = tensors.iter().map(|(name, array)| (name.as_str(), F32Bytes::new(array)));
    let metadata: Option<HashMap<String, String>> =
        (!metadata.is_empty()).then(|| metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
    let bytes = safetensors::serialize(views, metadata)
        .map_err(|source| SafetensorsError::Encode { path: path.into(), source })?;
    write_atomically(path, &bytes).map_err(|source| SafetensorsError::Io { path: path.into(), source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array2, arr0};
    use proptest::prelude::*;
    use safetensors::tensor::TensorView;

    fn no_metadata() -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    /// A file image holding one tensor of any dtype, written by the safetensors crate.
    fn image_with(name: &str, dtype: Dtype, shape: &[usize], data: &[u8]) -> Vec<u8> {
        let view = TensorView::new(dtype, shape.to_vec(), data).unwrap();
        safetensors::serialize([(name, view)], None).unwrap()
    }

    #[test]
    fn round_trip_with_metadata_and_odd_shapes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        let matrix = Array2::from_shape_fn((3, 4), |(i, j)| i as f32 - 0.25 * j as f32).into_dyn();
        // A transposed view is not contiguous in row-major order: written in logical order.
        let transposed = matrix.t().to_owned();
        let scalar = arr0(-7.5f32).into_dyn();
        let empty = ArrayD::<f32>::zeros(IxDyn(&[0, 3]));
        let tensors = vec![
            ("h.0.attn.c_attn.weight".to_string(), matrix.view()),
            ("transposed".to_string(), matrix.t()),
            ("scalar".to_string(), scalar.view()),
            ("empty".to_string(), empty.view()),
        ];
        let metadata = BTreeMap::from([("format".to_string(), "pt".to_string())]);
        write_safetensors(&path, &tensors, &metadata).unwrap();

        let file = read_safetensors(&path).unwrap();
        assert_eq!(file.metadata, metadata);
        assert_eq!(file.tensors.len(), 4);
        assert_eq!(file.tensors["h.0.attn.c_attn.weight"], matrix);
        assert_eq!(file.tensors["transposed"], transposed);
        assert_eq!(file.tensors["scalar"], scalar);
        assert_eq!(file.tensors["empty"].shape(), &[0, 3]);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("model.safetensors")]);
    }

    #[test]
    fn empty_metadata_is_omitted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.safetensors");
        let x = ArrayD::from_elem(IxDyn(&[2]), 1.5f32);
        write_safetensors(&path, &[("x".to_string(), x.view())], &no_metadata()).unwrap();
        let header = std::fs::read(&path).unwrap();
        assert!(!String::from_utf8_lossy(&header).contains(METADATA_KEY));
        assert!(read_safetensors(&path).unwrap().metadata.is_empty());
    }

    #[test]
    fn half_precision_dtypes_widen_exactly() {
        let f16s = [1.0f32, -2.5, 65504.0, 5.960_464_5e-8]; // incl. max and smallest subnormal
        let data: Vec<u8> = f16s.iter().flat_map(|&x| half::f16::from_f32(x).to_le_bytes()).collect();
        let file = parse(Path::new("mem"), &image_with("w", Dtype::F16, &[2, 2], &data)).unwrap();
        assert_eq!(file.tensors["w"].as_slice().unwrap(), &f16s);

        let bf16s = [1.0f32, -3.0, 3.389_531_4e38, 0.0078125];
        let data: Vec<u8> = bf16s.iter().flat_map(|&x| half::bf16::from_f32(x).to_le_bytes()).collect();
        let file = parse(Path::new("mem"), &image_with("w", Dtype::BF16, &[4], &data)).unwrap();
        assert_eq!(file.tensors["w"].as_slice().unwrap(), &bf16s);
    }

    #[test]
    fn unaligned_tensor_data_is_read_correctly() {
        // A 1-element F16 tensor first puts the F32 tensor at byte offset 2 of the data.
        let header = r#"{"a":{"dtype":"F16","shape":[1],"data_offsets":[0,2]},"b":{"dtype":"F32","shape":[2],"data_offsets":[2,10]}}"#;
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(&half::f16::from_f32(0.5).to_le_bytes());
        bytes.extend_from_slice(&1.25f32.to_le_bytes());
        bytes.extend_from_slice(&(-3.0f32).to_le_bytes());
        let file = parse(Path::new("mem"), &bytes).unwrap();
        assert_eq!(file.tensors["a"].as_slice().unwrap(), &[0.5]);
        assert_eq!(file.tensors["b"].as_slice().unwrap(), &[1.25, -3.0]);
    }

    #[test]
    fn unsupported_dtype_names_the_tensor() {
        let image = image_with("h.0.attn.bias", Dtype::I64, &[2], &[0; 16]);
        match parse(Path::new("model.safetensors"), &image) {
            Err(err @ SafetensorsError::UnsupportedDtype { .. }) => {
                let msg = err.to_string();
                assert!(
                    msg.contains("h.0.attn.bias") && msg.contains("I64") && msg.contains("model.safetensors")
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_files_are_typed_errors() {
        let x = ArrayD::from_elem(IxDyn(&[3]), 2.0f32);
        let image = safetensors::serialize([("x", F32Bytes::new(&x.view()))], None).unwrap();
        for cut in [0, 7, 8, 20, image.len() - 1] {
            let result = parse(Path::new("mem"), &image[..cut]);
            assert!(matches!(result, Err(SafetensorsError::Format { .. })), "cut {cut}: {result:?}");
        }
        assert!(matches!(
            parse(Path::new("mem"), b"PGLMCKPT and more"),
            Err(SafetensorsError::Format { .. })
        ));

        let dir = tempfile::tempdir().unwrap();
        let err = read_safetensors(dir.path().join("absent.safetensors")).unwrap_err();
        assert!(matches!(err, SafetensorsError::Io { .. }) && err.to_string().contains("absent.safetensors"));
    }

    #[test]
    fn bad_names_are_refused_on_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.safetensors");
        let x = ArrayD::from_elem(IxDyn(&[1]), 0.0f32);
        for names in [vec!["a", "a"], vec![""], vec![METADATA_KEY]] {
            let tensors: Vec<_> = names.iter().map(|n| (n.to_string(), x.view())).collect();
            let result = write_safetensors(&path, &tensors, &no_metadata());
            assert!(matches!(result, Err(SafetensorsError::InvalidName { .. })), "{names:?}: {result:?}");
        }
        assert!(!path.exists());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse(Path::new("mem"), &bytes);
        }

        #[test]
        fn arbitrary_header_after_a_valid_length_never_panics(header in "[ -~]{0,120}", tail in 0usize..64) {
            let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
            bytes.extend_from_slice(header.as_bytes());
            bytes.resize(bytes.len() + tail, 0x3f);
            let _ = parse(Path::new("mem"), &bytes);
        }

        #[test]
        fn f32_values_round_trip_bit_exactly(bits in proptest::collection::vec(any::<u32>(), 0..40)) {
            let values: Vec<f32> = bits.iter().map(|&b| f32::from_bits(b)).collect();
            let x = ArrayD::from_shape_vec(IxDyn(&[values.len()]), values).unwrap();
            let image = safetensors::serialize([("x", F32Bytes::new(&x.view()))], None).unwrap();
            let back = parse(Path::new("mem"), &image).unwrap();
            let back_bits: Vec<u32> = back.tensors["x"].iter().map(|v| v.to_bits()).collect();
            prop_assert_eq!(back_bits, bits);
        }
    }
}
