//! The plugin's function table and the one calling convention every wrapper goes through:
//! args structs with `struct_size` set, a check that the plugin's table has the function, and
//! every returned `PJRT_Error` turned into a [`PjrtError`] (and destroyed).

use std::ffi::c_char;

use super::error::{ErrorCode, PjrtError, Result};
use super::ffi;

/// A zero-initialized `ffi::$ty` with `struct_size` set, plus the given fields.
///
/// bindgen's `Default` leaves `struct_size` at 0, which the plugin rejects. `size_of` is at
/// least the header's `*_STRUCT_SIZE` (that one omits trailing padding), and the plugin only
/// requires `struct_size >= STRUCT_SIZE`.
macro_rules! args {
    ($ty:ident { $($field:ident $(: $value:expr)?),* $(,)? }) => {
        $crate::pjrt::ffi::$ty {
            struct_size: ::std::mem::size_of::<$crate::pjrt::ffi::$ty>(),
            $($field $(: $value)?,)*
            ..::std::default::Default::default()
        }
    };
}

/// Calls `PJRT_Api::$function` with `$args` (a `&mut` args struct) and converts its error.
/// Expands to a call of the unsafe [`Api::call`]: the caller's `unsafe` block vouches that the
/// pointers inside `$args` are valid for that function.
macro_rules! pjrt_call {
    ($api:expr, $function:ident, $args:expr) => {
        $api.call(
            stringify!($function),
            ::std::mem::offset_of!($crate::pjrt::ffi::PJRT_Api, $function),
            |table: &$crate::pjrt::ffi::PJRT_Api| table.$function,
            $args,
        )
    };
}

/// `impl Drop` for a value that owns the handle in its `raw` field: the handle is released with
/// `$function`, and a failure is logged, as a destructor has nobody to return it to.
macro_rules! destroy_on_drop {
    ($owner:ty, $function:ident($args:ident { $field:ident }), api = self.$($api:tt)+) => {
        impl Drop for $owner {
            fn drop(&mut self) {
                let mut destroy = $crate::pjrt::api::args!($args { $field: self.raw });
                // SAFETY: `self.raw` is owned by this value alone and is not used after this.
                let destroyed =
                    unsafe { $crate::pjrt::api::pjrt_call!(self.$($api)+, $function, &mut destroy) };
                if let Err(error) = destroyed {
                    tracing::warn!("{error}");
                }
            }
        }
    };
}

pub(crate) use {args, destroy_on_drop, pjrt_call};

/// The `PJRT_Api` table of a loaded plugin. It lives for the whole process: plugins are never
/// unloaded (see [`super::Plugin`]).
#[derive(Clone, Copy)]
pub(crate) struct Api(&'static ffi::PJRT_Api);

// SAFETY: the table is a version and function pointers that the plugin fills in before
// `GetPjrtApi` returns and never changes; the C API functions may be called from any thread.
unsafe impl Send for Api {}
// SAFETY: as above, the table is immutable and its functions are thread-safe.
unsafe impl Sync for Api {}

type RawFunction<A> = Option<unsafe extern "C" fn(*mut A) -> *mut ffi::PJRT_Error>;

impl Api {
    /// # Safety
    /// `table` must point to the plugin's `PJRT_Api`, valid for the rest of the process.
    pub(crate) unsafe fn new(table: *const ffi::PJRT_Api) -> Api {
        // SAFETY: the caller guarantees a valid table that lives for the process.
        Api(unsafe { &*table })
    }

    /// (major, minor) of the C API the plugin implements.
    pub(crate) fn version(self) -> (i32, i32) {
        (self.0.pjrt_api_version.major_version, self.0.pjrt_api_version.minor_version)
    }

    /// Calls one function of the table (use [`pjrt_call!`], which fills in name and offset).
    /// A function the plugin's (older, shorter) table lacks is an `Unimplemented` error.
    ///
    /// # Safety
    /// `args` must be the args struct of that function with every pointer in it valid as the
    /// C API documents for it.
    pub(crate) unsafe fn call<A>(
        self,
        name: &'static str,
        offset: usize,
        function: impl FnOnce(&ffi::PJRT_Api) -> RawFunction<A>,
        args: &mut A,
    ) -> Result<()> {
        // Fields past the plugin's `struct_size` are not part of its table: never read them.
        let function = if offset < self.0.struct_size { function(self.0) } else { None };
        let Some(function) = function else {
            return Err(PjrtError::Call {
                call: name,
                code: ErrorCode::Unimplemented,
                message: "the plugin does not provide this function".into(),
            });
        };
        // SAFETY: the caller guarantees `args` is valid for `function`.
        let error = unsafe { function(args) };
        self.check(name, error)
    }

    /// `Ok` for a null error, otherwise the error's code and message (the error is destroyed).
    pub(crate) fn check(self, call: &'static str, error: *mut ffi::PJRT_Error) -> Result<()> {
        if error.is_null() {
            Ok(())
        } else {
            Err(self.take_error(call, error))
        }
    }

    /// Reads code and message of a non-null `error`, which this takes ownership of and destroys.
    pub(crate) fn take_error(self, call: &'static str, error: *mut ffi::PJRT_Error) -> PjrtError {
        let mut message_args = args!(PJRT_Error_Message_Args { error });
        let message = match self.0.PJRT_Error_Message {
            Some(read_message) => {
                // SAFETY: `error` is a live error owned by us; the message it returns lives as
                // long as the error, and is copied before the error is destroyed below.
                unsafe {
                    read_message(&mut message_args);
                    string_from_raw(message_args.message, message_args.message_size)
                }
            }
            None => "(the plugin does not provide PJRT_Error_Message)".to_owned(),
        };
        let mut code_args = args!(PJRT_Error_GetCode_Args { error });
        let code = match self.0.PJRT_Error_GetCode {
            Some(read_code) => {
                // SAFETY: `error` is live; the code is read as its integer representation so that
                // a code unknown to this header is not an invalid Rust enum value.
                unsafe {
                    let code_error = read_code(&mut code_args);
                    self.destroy_error(code_error);
                    ErrorCode::from_raw(std::ptr::addr_of!(code_args.code).cast::<u32>().read())
                }
            }
            None => ErrorCode::Unknown(2),
        };
        self.destroy_error(error);
        PjrtError::Call { call, code, message }
    }

    fn destroy_error(self, error: *mut ffi::PJRT_Error) {
        if error.is_null() {
            return;
        }
        if let Some(destroy) = self.0.PJRT_Error_Destroy {
            let mut destroy_args = args!(PJRT_Error_Destroy_Args { error });
            // SAFETY: `error` is a live error owned by us and not used after this.
            unsafe { destroy(&mut destroy_args) };
        }
    }
}

/// Copies `len` bytes at `data` into a String (invalid UTF-8 replaced); empty for null.
///
/// # Safety
/// `data` must be null or point to `len` readable bytes.
pub(crate) unsafe fn string_from_raw(data: *const c_char, len: usize) -> String {
    if data.is_null() || len == 0 {
        return String::new();
    }
    // SAFETY: the caller guarantees `len` readable bytes at `data`.
    let bytes = unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) };
    String::from_utf8_lossy(bytes).into_owned()
}

/// Copies `len` elements at `data` into a Vec; empty for null.
///
/// # Safety
/// `data` must be null or point to `len` readable, initialized `T`s.
pub(crate) unsafe fn vec_from_raw<T: Copy>(data: *const T, len: usize) -> Vec<T> {
    if data.is_null() || len == 0 {
        return Vec::new();
    }
    // SAFETY: the caller guarantees `len` readable elements at `data`.
    unsafe { std::slice::from_raw_parts(data, len) }.to_vec()
}
