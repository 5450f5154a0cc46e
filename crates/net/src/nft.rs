//! nftables through libnftables' JSON interface: the library Debian ships with nft (libnftables1), loaded
//! at run time so that building vessel needs no nftables headers. One context per call: they are not
//! thread-safe, and a fresh one always speaks for the calling thread's network namespace.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::sync::OnceLock;

use crate::NetError;

type CtxNew = unsafe extern "C" fn(c_uint) -> *mut c_void;
type CtxFree = unsafe extern "C" fn(*mut c_void);
type CtxInt = unsafe extern "C" fn(*mut c_void) -> c_int;
type CtxStr = unsafe extern "C" fn(*mut c_void) -> *const c_char;
type SetFlags = unsafe extern "C" fn(*mut c_void, c_uint);
type RunCmd = unsafe extern "C" fn(*mut c_void, *const c_char) -> c_int;

const NFT_CTX_OUTPUT_HANDLE: c_uint = 1 << 3;
const NFT_CTX_OUTPUT_JSON: c_uint = 1 << 4;

struct Lib {
    _lib: libloading::Library,
    new: CtxNew,
    free: CtxFree,
    buffer_output: CtxInt,
    buffer_error: CtxInt,
    output: CtxStr,
    error: CtxStr,
    set_output_flags: SetFlags,
    run: RunCmd,
}

fn load() -> Result<Lib, String> {
    // SAFETY: libnftables runs no code of consequence when loaded (no constructors with side effects).
    let lib = unsafe { libloading::Library::new("libnftables.so.1") }.map_err(|e| {
        format!("Cannot load libnftables.so.1 (install Debian's nftables or libnftables1): {e}")
    })?;
    macro_rules! sym {
        ($name:literal, $t:ty) => {
            // SAFETY: the symbol has this C signature in libnftables 1.x (nftables/libnftables.h).
            *unsafe { lib.get::<$t>($name) }.map_err(|e| {
                format!(
                    "libnftables.so.1 lacks {}: {e}",
                    String::from_utf8_lossy($name)
                )
            })?
        };
    }
    Ok(Lib {
        new: sym!(b"nft_ctx_new\0", CtxNew),
        free: sym!(b"nft_ctx_free\0", CtxFree),
        buffer_output: sym!(b"nft_ctx_buffer_output\0", CtxInt),
        buffer_error: sym!(b"nft_ctx_buffer_error\0", CtxInt),
        output: sym!(b"nft_ctx_get_output_buffer\0", CtxStr),
        error: sym!(b"nft_ctx_get_error_buffer\0", CtxStr),
        set_output_flags: sym!(b"nft_ctx_output_set_flags\0", SetFlags),
        run: sym!(b"nft_run_cmd_from_buffer\0", RunCmd),
        _lib: lib,
    })
}

fn lib() -> Result<&'static Lib, NetError> {
    static LIB: OnceLock<Result<Lib, String>> = OnceLock::new();
    LIB.get_or_init(load)
        .as_ref()
        .map_err(|e| NetError::Nftables(e.clone()))
}

/// Runs `commands` (an nftables JSON document; one batch, applied atomically) and returns what nft
/// printed (JSON, with rule handles).
pub fn run(commands: &serde_json::Value) -> Result<String, NetError> {
    let lib = lib()?;
    let text = CString::new(commands.to_string()).map_err(|e| NetError::Nftables(e.to_string()))?;
    // SAFETY: a context from nft_ctx_new is used only on this thread and freed once, below; the strings it
    // returns are copied before the free.
    unsafe {
        let ctx = (lib.new)(0);
        if ctx.is_null() {
            return Err(NetError::Nftables("nft_ctx_new failed".into()));
        }
        (lib.set_output_flags)(ctx, NFT_CTX_OUTPUT_JSON | NFT_CTX_OUTPUT_HANDLE);
        (lib.buffer_output)(ctx);
        (lib.buffer_error)(ctx);
        let rc = (lib.run)(ctx, text.as_ptr());
        let copy = |p: *const c_char| {
            if p.is_null() {
                String::new()
            } else {
                CStr::from_ptr(p).to_string_lossy().into_owned()
            }
        };
        let out = copy((lib.output)(ctx));
        let err = copy((lib.error)(ctx));
        (lib.free)(ctx);
        if rc != 0 {
            let first = err
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("unknown error");
            return Err(NetError::Nftables(first.trim().to_string()));
        }
        Ok(out)
    }
}

/// The whole ruleset of the calling thread's namespace, as nft's JSON.
pub fn list_ruleset() -> Result<serde_json::Value, NetError> {
    let out = run(&serde_json::json!({ "nftables": [{ "list": { "ruleset": null } }] }))?;
    serde_json::from_str(&out).map_err(|e| NetError::Nftables(format!("Unreadable ruleset listing: {e}")))
}
