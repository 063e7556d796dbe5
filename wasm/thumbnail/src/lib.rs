//! The article's thumbnail function, built for the WebAssembly sandbox (`core/sandbox.py`).
//!
//! ABI (all integers are wasm `i32`/`i64`, pointers are offsets into the exported `memory`):
//! - `alloc(len: i32) -> i32`: a buffer of `len` bytes for the host to write the input into; 0 if refused.
//! - `dealloc(ptr: i32, len: i32)`: frees a buffer from `alloc` or a result of `thumbnail`.
//! - `thumbnail(ptr: i32, len: i32) -> i64`: reads the image at `ptr..ptr+len` (PNG or JPEG; the input stays the
//!   host's), resizes it to fit 300x300 with Lanczos3 keeping the aspect ratio and encodes it as PNG. Returns
//!   `(out_ptr << 32) | out_len` of the PNG, or `out_ptr == 0` and `out_len` one of the `ERROR_*` codes.
//! - Import `sandbox.out_of_memory(size: i32)`: called just before an allocation fails (the store's memory limit
//!   refused `memory.grow`), so the host can tell memory exhaustion from any other trap. The module then aborts.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Cursor;

use image::imageops::FilterType;
use image::io::Reader;
use image::{ImageError, ImageOutputFormat};

/// The article's size: the thumbnail fits in a 300x300 box.
const THUMBNAIL_SIZE: u32 = 300;

/// The input is in no format this module decodes (PNG and JPEG only).
pub const ERROR_UNSUPPORTED_FORMAT: u32 = 1;
/// The input claims to be PNG or JPEG but does not decode (truncated, corrupt).
pub const ERROR_DECODE: u32 = 2;
/// The decoder's own limits refused the image (dimensions or allocation, checked before decoding).
pub const ERROR_LIMITS: u32 = 3;
/// Encoding the PNG failed.
pub const ERROR_ENCODE: u32 = 4;

#[link(wasm_import_module = "sandbox")]
extern "C" {
    fn out_of_memory(size: u32);
}

/// The standard allocator (dlmalloc on wasm32), telling the host when an allocation fails: Rust then aborts
/// with a bare `unreachable` trap, which says nothing about why.
struct ReportingAllocator;

unsafe impl GlobalAlloc for ReportingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        report_if_null(System.alloc(layout), layout.size())
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        report_if_null(System.alloc_zeroed(layout), layout.size())
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        report_if_null(System.realloc(ptr, layout, new_size), new_size)
    }
}

fn report_if_null(ptr: *mut u8, size: usize) -> *mut u8 {
    if ptr.is_null() {
        // usize is u32 on wasm32: the cast loses nothing.
        unsafe { out_of_memory(size as u32) };
    }
    ptr
}

#[global_allocator]
static ALLOCATOR: ReportingAllocator = ReportingAllocator;

/// A buffer of `len` bytes (alignment 1) for the host to write into; 0 when memory is exhausted.
#[no_mangle]
pub extern "C" fn alloc(len: u32) -> u32 {
    match Layout::from_size_align(len.max(1) as usize, 1) {
        Ok(layout) => unsafe { ALLOCATOR.alloc(layout) as u32 },
        Err(_) => 0,
    }
}

/// Frees a buffer returned by `alloc` or by `thumbnail`, given the same length.
#[no_mangle]
pub extern "C" fn dealloc(ptr: u32, len: u32) {
    if let Ok(layout) = Layout::from_size_align(len.max(1) as usize, 1) {
        unsafe { ALLOCATOR.dealloc(ptr as *mut u8, layout) }
    }
}

/// The exported entry point: see the ABI at the top of this file.
#[no_mangle]
pub extern "C" fn thumbnail(ptr: u32, len: u32) -> u64 {
    // Safety: the host wrote `len` bytes at `ptr`, a buffer it got from `alloc`; wasm memory is always mapped.
    let input = unsafe { std::slice::from_raw_parts(ptr as *const u8, len as usize) };
    match make_thumbnail(input) {
        Ok(png) => {
            let png = png.into_boxed_slice();
            let out_len = png.len() as u64;
            // Leaked on purpose: the host reads it, then frees it with `dealloc` or drops the whole store.
            let out_ptr = Box::into_raw(png) as *mut u8 as u64;
            (out_ptr << 32) | out_len
        }
        Err(code) => u64::from(code),
    }
}

fn make_thumbnail(input: &[u8]) -> Result<Vec<u8>, u32> {
    let reader = Reader::new(Cursor::new(input))
        .with_guessed_format()
        .map_err(|_| ERROR_DECODE)?;
    let image = reader.decode().map_err(|error| match error {
        ImageError::Unsupported(_) => ERROR_UNSUPPORTED_FORMAT,
        ImageError::Limits(_) => ERROR_LIMITS,
        _ => ERROR_DECODE,
    })?;
    // `resize` keeps the aspect ratio: the longer side becomes 300 (the article's `resize(300, 300, Lanczos3)`).
    let thumbnail = image.resize(THUMBNAIL_SIZE, THUMBNAIL_SIZE, FilterType::Lanczos3);
    let mut output = Cursor::new(Vec::new());
    thumbnail
        .write_to(&mut output, ImageOutputFormat::Png)
        .map_err(|_| ERROR_ENCODE)?;
    Ok(output.into_inner())
}
