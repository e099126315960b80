//! Reads a GGUF file (llama.cpp's single-file model format, versions 2 and 3) through a memory map:
//! the typed metadata key/values, the tensor directory (name, ggml dims, type, offset) and each
//! tensor's bytes. Every malformed or truncated part is an error naming the file and the key or
//! tensor being read.
//!
//! Layout: `GGUF` magic, `u32` version, `u64` tensor count, `u64` key count; the keys (a string,
//! a `u32` value type, the value); the tensor infos; padding to `general.alignment` (32 by
//! default); the tensor data, each tensor at its offset (a multiple of the alignment).

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::types::GgmlType;
use crate::error::{Error, Result};

/// `GGUF` read as a little-endian `u32`.
pub const MAGIC: u32 = 0x4655_4747;
/// The alignment of the tensor data when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// A metadata value, as GGUF types it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl Value {
    /// An integer of any width, if non-negative.
    pub fn as_u64(&self) -> Option<u64> {
        Some(match *self {
            Self::U8(v) => v as u64,
            Self::U16(v) => v as u64,
            Self::U32(v) => v as u64,
            Self::U64(v) => v,
            Self::I8(v) => u64::try_from(v).ok()?,
            Self::I16(v) => u64::try_from(v).ok()?,
            Self::I32(v) => u64::try_from(v).ok()?,
            Self::I64(v) => u64::try_from(v).ok()?,
            _ => return None,
        })
    }

    /// A number of any type as f64.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Self::F32(v) => Some(v as f64),
            Self::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Self::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Self::Array(items) => Some(items),
            _ => None,
        }
    }
}

/// One tensor of the directory.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    /// ggml order: `dims[0]` is the contiguous (innermost) axis, so a PyTorch `[out, in]` weight
    /// is `[in, out]` here.
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Byte offset from the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    pub fn num_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// The PyTorch shape: the ggml dims reversed.
    pub fn torch_shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
}

/// An open GGUF file.
pub struct GgufFile {
    pub path: PathBuf,
    pub version: u32,
    pub metadata: BTreeMap<String, Value>,
    pub tensors: BTreeMap<String, TensorInfo>,
    /// The tensor names in file order.
    pub order: Vec<String>,
    map: Mmap,
    data_start: usize,
}

/// A cursor over the mapped bytes that names the file and what it was reading when it runs out.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &dyn Fn() -> String) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return Err(Error::weights(
                self.path,
                format!("truncated GGUF file: it ends inside {}", what()),
            ));
        };
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N]> {
        Ok(self.take(N, what)?.try_into().expect("N bytes"))
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String> {
        let len = self.u64(what)?;
        let bytes = self.take(self.len_of(len, what)?, what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| Error::weights(self.path, format!("{} is not valid UTF-8", what())))
    }

    /// A length read from the file, refused when it could not fit in what is left.
    fn len_of(&self, len: u64, what: &dyn Fn() -> String) -> Result<usize> {
        let left = (self.bytes.len() - self.pos) as u64;
        if len > left {
            return Err(Error::weights(
                self.path,
                format!("truncated GGUF file: {} declares {len} items", what()),
            ));
        }
        Ok(len as usize)
    }

    fn value(&mut self, kind: u32, what: &dyn Fn() -> String) -> Result<Value> {
        Ok(match kind {
            0 => Value::U8(self.array::<1>(what)?[0]),
            1 => Value::I8(self.array::<1>(what)?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.array(what)?)),
            3 => Value::I16(i16::from_le_bytes(self.array(what)?)),
            4 => Value::U32(self.u32(what)?),
            5 => Value::I32(i32::from_le_bytes(self.array(what)?)),
            6 => Value::F32(f32::from_le_bytes(self.array(what)?)),
            7 => Value::Bool(self.array::<1>(what)?[0] != 0),
            8 => Value::String(self.string(what)?),
            9 => {
                let inner = self.u32(what)?;
                let n = self.u64(what)?;
                let n = self.len_of(n, what)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(inner, what)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64(what)?),
            11 => Value::I64(i64::from_le_bytes(self.array(what)?)),
            12 => Value::F64(f64::from_le_bytes(self.array(what)?)),
            other => {
                return Err(Error::weights(
                    self.path,
                    format!("{} has unknown GGUF value type {other}", what()),
                ));
            }
        })
    }
}

impl GgufFile {
    /// Maps `path` and reads its metadata and tensor directory; tensor bytes are read on demand.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the file is opened read-only and not modified while mapped.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let mut c = Cursor {
            bytes: &map,
            pos: 0,
            path,
        };
        let header = || "the header".to_string();
        if c.u32(&header)? != MAGIC {
            return Err(Error::weights(path, "not a GGUF file (no `GGUF` magic)"));
        }
        let version = c.u32(&header)?;
        if !(2..=3).contains(&version) {
            return Err(Error::weights(
                path,
                format!("GGUF version {version} is not supported; supported: 2, 3"),
            ));
        }
        let n_tensors = c.u64(&header)?;
        let n_keys = c.u64(&header)?;

        let mut metadata = BTreeMap::new();
        for i in 0..n_keys {
            let key = c.string(&|| format!("metadata key #{i}"))?;
            let what = || format!("metadata key `{key}`");
            let kind = c.u32(&what)?;
            let value = c.value(kind, &what)?;
            metadata.insert(key, value);
        }

        let mut tensors = BTreeMap::new();
        let mut order = Vec::new();
        for i in 0..n_tensors {
            let name = c.string(&|| format!("tensor info #{i}"))?;
            let what = || format!("the info of tensor `{name}`");
            let n_dims = c.u32(&what)?;
            if n_dims > 4 {
                return Err(Error::weights(
                    path,
                    format!("tensor `{name}` has {n_dims} dimensions; GGUF allows at most 4"),
                ));
            }
            let dims = (0..n_dims)
                .map(|_| c.u64(&what))
                .collect::<Result<Vec<u64>>>()?;
            let type_id = c.u32(&what)?;
            let ggml_type = GgmlType::from_id(type_id).ok_or_else(|| {
                Error::weights(
                    path,
                    format!(
                        "tensor `{name}` has tensor type {type_id}, which is not supported; \
                         supported: {}",
                        GgmlType::supported_names()
                    ),
                )
            })?;
            let offset = c.u64(&what)?;
            order.push(name.clone());
            tensors.insert(
                name,
                TensorInfo {
                    dims,
                    ggml_type,
                    offset,
                },
            );
        }

        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() => a,
                _ => {
                    return Err(Error::weights(
                        path,
                        format!("metadata key `general.alignment` is {v:?}, not a power of two"),
                    ));
                }
            },
        };
        let data_start = (c.pos as u64).div_ceil(alignment) * alignment;
        let gguf = Self {
            path: path.to_path_buf(),
            version,
            metadata,
            tensors,
            order,
            data_start: data_start as usize,
            map,
        };
        for name in &gguf.order {
            gguf.bytes(name)?;
        }
        Ok(gguf)
    }

    /// The raw bytes of tensor `name` (checked to lie inside the file).
    pub fn bytes(&self, name: &str) -> Result<&[u8]> {
        let info = self.info(name)?;
        let len = info
            .ggml_type
            .bytes_for(info.num_elements())
            .ok_or_else(|| {
                Error::weights(
                    &self.path,
                    format!(
                        "tensor `{name}`: {} elements in rows of {} are not whole {} blocks",
                        info.num_elements(),
                        info.dims.first().copied().unwrap_or(1),
                        info.ggml_type.name()
                    ),
                )
            })?;
        let start = self.data_start as u64 + info.offset;
        start
            .checked_add(len)
            .filter(|&end| end <= self.map.len() as u64)
            .map(|end| &self.map[start as usize..end as usize])
            .ok_or_else(|| {
                Error::weights(
                    &self.path,
                    format!("truncated GGUF file: tensor `{name}` lies past its end"),
                )
            })
    }

    pub fn info(&self, name: &str) -> Result<&TensorInfo> {
        self.tensors.get(name).ok_or_else(|| {
            Error::weights(
                &self.path,
                format!("missing tensor `{name}` in the GGUF file"),
            )
        })
    }

    /// A metadata value, or an error naming the missing key.
    pub fn get(&self, key: &str) -> Result<&Value> {
        self.metadata
            .get(key)
            .ok_or_else(|| Error::weights(&self.path, format!("missing metadata key `{key}`")))
    }

    /// A metadata string, or an error naming the key.
    pub fn get_str(&self, key: &str) -> Result<&str> {
        let value = self.get(key)?;
        value.as_str().ok_or_else(|| {
            Error::weights(
                &self.path,
                format!("metadata key `{key}` is {value:?}, not a string"),
            )
        })
    }

    /// `general.architecture` (`llama`, `qwen2`, `gemma3`, …).
    pub fn architecture(&self) -> Result<&str> {
        self.get_str("general.architecture")
    }
}

/// Whether `path` is a GGUF file (by its first four bytes; a directory is not).
pub fn is_gguf(path: &Path) -> bool {
    use std::io::Read;
    if !path.is_file() {
        return false;
    }
    let mut magic = [0u8; 4];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok_and(|()| u32::from_le_bytes(magic) == MAGIC)
}
