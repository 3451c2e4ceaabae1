//! Element types shared by the runtime (buffers) and the builder (tensor types).

use std::fmt;

/// The element types sirocco moves between host and device and builds graphs over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    /// Boolean, one byte per element (`i1` in StableHLO, `PRED` in XLA).
    Pred,
    U8,
    U32,
    U64,
    I32,
    I64,
    F16,
    BF16,
    F32,
    F64,
}

impl DType {
    /// Every supported element type.
    pub const ALL: [DType; 10] = [
        DType::Pred,
        DType::U8,
        DType::U32,
        DType::U64,
        DType::I32,
        DType::I64,
        DType::F16,
        DType::BF16,
        DType::F32,
        DType::F64,
    ];

    /// Bytes per element in a dense host buffer.
    pub const fn size_in_bytes(self) -> usize {
        match self {
            DType::Pred | DType::U8 => 1,
            DType::F16 | DType::BF16 => 2,
            DType::U32 | DType::I32 | DType::F32 => 4,
            DType::U64 | DType::I64 | DType::F64 => 8,
        }
    }

    /// The StableHLO spelling of the element type (`f32`, `bf16`, `i1`, `ui32`, ...).
    pub const fn stablehlo_name(self) -> &'static str {
        match self {
            DType::Pred => "i1",
            DType::U8 => "ui8",
            DType::U32 => "ui32",
            DType::U64 => "ui64",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::F32 => "f32",
            DType::F64 => "f64",
        }
    }

    pub const fn is_float(self) -> bool {
        matches!(self, DType::F16 | DType::BF16 | DType::F32 | DType::F64)
    }

    pub const fn is_integer(self) -> bool {
        matches!(self, DType::U8 | DType::U32 | DType::U64 | DType::I32 | DType::I64)
    }

    pub const fn is_signed_integer(self) -> bool {
        matches!(self, DType::I32 | DType::I64)
    }

    pub const fn is_unsigned_integer(self) -> bool {
        matches!(self, DType::U8 | DType::U32 | DType::U64)
    }

    /// Native-endian bytes of `value` converted to this type (floats round to nearest,
    /// integers truncate toward zero and saturate, pred is `value != 0`).
    pub fn encode_f64(self, value: f64) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.size_in_bytes());
        match self {
            DType::Pred => (value != 0.0).write_bytes(&mut bytes),
            DType::U8 => (value as u8).write_bytes(&mut bytes),
            DType::U32 => (value as u32).write_bytes(&mut bytes),
            DType::U64 => (value as u64).write_bytes(&mut bytes),
            DType::I32 => (value as i32).write_bytes(&mut bytes),
            DType::I64 => (value as i64).write_bytes(&mut bytes),
            DType::F16 => half::f16::from_f64(value).write_bytes(&mut bytes),
            DType::BF16 => half::bf16::from_f64(value).write_bytes(&mut bytes),
            DType::F32 => (value as f32).write_bytes(&mut bytes),
            DType::F64 => value.write_bytes(&mut bytes),
        }
        bytes
    }

    /// Parses the names users write in configs and safetensors headers (`f32`, `float32`,
    /// `bfloat16`, `bool`, ...).
    pub fn parse(name: &str) -> Option<DType> {
        Some(match name.to_ascii_lowercase().as_str() {
            "pred" | "bool" | "i1" => DType::Pred,
            "u8" | "ui8" | "uint8" => DType::U8,
            "u32" | "ui32" | "uint32" => DType::U32,
            "u64" | "ui64" | "uint64" => DType::U64,
            "i32" | "s32" | "int32" => DType::I32,
            "i64" | "s64" | "int64" => DType::I64,
            "f16" | "float16" | "half" => DType::F16,
            "bf16" | "bfloat16" => DType::BF16,
            "f32" | "float32" | "float" => DType::F32,
            "f64" | "float64" | "double" => DType::F64,
            _ => return None,
        })
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            DType::Pred => "pred",
            DType::U8 => "u8",
            DType::U32 => "u32",
            DType::U64 => "u64",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::F32 => "f32",
            DType::F64 => "f64",
        };
        f.write_str(name)
    }
}

/// A Rust type that is the host representation of one [`DType`].
pub trait Element: Copy + Send + Sync + 'static + sealed::Sealed {
    const DTYPE: DType;
    /// Appends the element's native-endian bytes.
    fn write_bytes(self, out: &mut Vec<u8>);
    /// Reads one element from exactly `DTYPE.size_in_bytes()` native-endian bytes.
    fn read_bytes(bytes: &[u8]) -> Self;
    /// The value as f64 (lossless for every type but i64 beyond 2^53).
    fn to_f64(self) -> f64;
}

mod sealed {
    pub trait Sealed {}
}

macro_rules! numeric_element {
    ($($ty:ty => $dtype:ident, |$v:ident| $to_f64:expr);* $(;)?) => {$(
        impl sealed::Sealed for $ty {}
        impl Element for $ty {
            const DTYPE: DType = DType::$dtype;
            fn write_bytes(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_ne_bytes());
            }
            fn read_bytes(bytes: &[u8]) -> Self {
                <$ty>::from_ne_bytes(bytes.try_into().expect("caller passes exactly one element"))
            }
            fn to_f64(self) -> f64 {
                let $v = self;
                $to_f64
            }
        }
    )*};
}

numeric_element!(
    u8 => U8, |v| f64::from(v);
    u32 => U32, |v| f64::from(v);
    i32 => I32, |v| f64::from(v);
    f32 => F32, |v| f64::from(v);
    f64 => F64, |v| v;
    // Exact below 2^53; the nearest f64 beyond.
    i64 => I64, |v| v as f64;
    u64 => U64, |v| v as f64;
);

macro_rules! half_element {
    ($($ty:ty => $dtype:ident),* $(,)?) => {$(
        impl sealed::Sealed for $ty {}
        impl Element for $ty {
            const DTYPE: DType = DType::$dtype;
            fn write_bytes(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_bits().to_ne_bytes());
            }
            fn read_bytes(bytes: &[u8]) -> Self {
                <$ty>::from_bits(u16::from_ne_bytes(bytes.try_into().expect("caller passes exactly one element")))
            }
            fn to_f64(self) -> f64 {
                self.to_f64()
            }
        }
    )*};
}

half_element!(half::f16 => F16, half::bf16 => BF16);

impl sealed::Sealed for bool {}
impl Element for bool {
    const DTYPE: DType = DType::Pred;
    fn write_bytes(self, out: &mut Vec<u8>) {
        out.push(u8::from(self));
    }
    fn read_bytes(bytes: &[u8]) -> Self {
        bytes[0] != 0
    }
    fn to_f64(self) -> f64 {
        f64::from(u8::from(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for dtype in DType::ALL {
            assert_eq!(DType::parse(&dtype.to_string()), Some(dtype));
            assert_eq!(DType::parse(dtype.stablehlo_name()), Some(dtype));
        }
        assert_eq!(DType::parse("complex64"), None);
    }
}
