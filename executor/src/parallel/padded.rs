//! Cache-line padding for state that different workers write side by side.

/// Aligns `T` to 128 bytes (two cache lines, as adjacent-line prefetch pairs them), so that
/// neighbouring entries of a vector never share a line between threads.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct CachePadded<T>(pub(crate) T);

impl<T> std::ops::Deref for CachePadded<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}
