//! `PJRT_NamedValue`: the key-value pairs of plugin attributes and client create options.

use std::marker::PhantomData;

use super::api::{args, string_from_raw, vec_from_raw};
use super::ffi;

/// The value of a plugin attribute or a client create option.
#[derive(Debug, Clone, PartialEq)]
pub enum NamedValue {
    Str(String),
    Int64(i64),
    Int64List(Vec<i64>),
    /// The C API carries single-precision floats.
    Float(f32),
    Bool(bool),
}

impl std::fmt::Display for NamedValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NamedValue::Str(value) => f.write_str(value),
            NamedValue::Int64(value) => write!(f, "{value}"),
            NamedValue::Int64List(values) => write!(f, "{values:?}"),
            NamedValue::Float(value) => write!(f, "{value}"),
            NamedValue::Bool(value) => write!(f, "{value}"),
        }
    }
}

/// Copies a plugin-owned named value; `None` for a value type this header does not know.
///
/// # Safety
/// `value` must be a `PJRT_NamedValue` filled in by the plugin, with its name and any array it
/// points to readable.
pub(crate) unsafe fn named_value_from_raw(value: &ffi::PJRT_NamedValue) -> Option<(String, NamedValue)> {
    // SAFETY: the caller guarantees the name is readable; the type is read as an integer so
    // that a type unknown to this header is not an invalid Rust enum value, and only the union
    // member that the type selects is read.
    unsafe {
        let name = string_from_raw(value.name, value.name_size);
        let payload = &value.__bindgen_anon_1;
        let parsed = match std::ptr::addr_of!(value.type_).cast::<u32>().read() {
            0 => NamedValue::Str(string_from_raw(payload.string_value, value.value_size)),
            1 => NamedValue::Int64(payload.int64_value),
            2 => NamedValue::Int64List(vec_from_raw(payload.int64_array_value, value.value_size)),
            3 => NamedValue::Float(payload.float_value),
            4 => NamedValue::Bool(payload.bool_value),
            _ => return None,
        };
        Some((name, parsed))
    }
}

/// Named values laid out as a `PJRT_NamedValue` array that points into `'a`-borrowed names and
/// values, so the borrow checker keeps them alive while the plugin reads the array.
pub(crate) struct RawNamedValues<'a> {
    raw: Vec<ffi::PJRT_NamedValue>,
    borrowed: PhantomData<&'a [(String, NamedValue)]>,
}

impl<'a> RawNamedValues<'a> {
    pub(crate) fn new(values: &'a [(String, NamedValue)]) -> Self {
        let raw = values
            .iter()
            .map(|(name, value)| {
                let (type_, payload, value_size) = match value {
                    NamedValue::Str(text) => (
                        ffi::PJRT_NamedValue_Type::PJRT_NamedValue_kString,
                        ffi::PJRT_NamedValue__bindgen_ty_1 { string_value: text.as_ptr().cast() },
                        text.len(),
                    ),
                    NamedValue::Int64(number) => (
                        ffi::PJRT_NamedValue_Type::PJRT_NamedValue_kInt64,
                        ffi::PJRT_NamedValue__bindgen_ty_1 { int64_value: *number },
                        1,
                    ),
                    NamedValue::Int64List(numbers) => (
                        ffi::PJRT_NamedValue_Type::PJRT_NamedValue_kInt64List,
                        ffi::PJRT_NamedValue__bindgen_ty_1 { int64_array_value: numbers.as_ptr() },
                        numbers.len(),
                    ),
                    NamedValue::Float(number) => (
                        ffi::PJRT_NamedValue_Type::PJRT_NamedValue_kFloat,
                        ffi::PJRT_NamedValue__bindgen_ty_1 { float_value: *number },
                        1,
                    ),
                    NamedValue::Bool(flag) => (
                        ffi::PJRT_NamedValue_Type::PJRT_NamedValue_kBool,
                        ffi::PJRT_NamedValue__bindgen_ty_1 { bool_value: *flag },
                        1,
                    ),
                };
                args!(PJRT_NamedValue {
                    name: name.as_ptr().cast(),
                    name_size: name.len(),
                    type_: type_,
                    __bindgen_anon_1: payload,
                    value_size: value_size,
                })
            })
            .collect();
        RawNamedValues { raw, borrowed: PhantomData }
    }

    pub(crate) fn as_ptr(&self) -> *const ffi::PJRT_NamedValue {
        self.raw.as_ptr()
    }

    pub(crate) fn len(&self) -> usize {
        self.raw.len()
    }
}
