//! The loop's one answer buffer, lent to one connection at a time, and the
//! guarantee that it never carries one client's bytes to another.
//!
//! A read batch's answers are framed here, then written with one `write`;
//! only what the kernel refuses is copied into the connection's own `out`.
//! Sharing one buffer saves an allocation per request, and is safe only if
//! it is empty whenever a connection starts using it. An earlier version
//! kept a plain `Vec` and relied on each path through `Conn::drive` to clear
//! it: one path did not (a read that failed after answers were framed, say
//! a reset client's), and the next client driven sent those answers as its
//! own (tests/isolation.rs).
//!
//! So the guarantee is structural: [`AnswerBuf`] has no way to reach its
//! bytes but [`AnswerBuf::lend`], and the [`Loan`] it returns empties the
//! buffer when it is dropped. `Conn::drive` takes the loan by value, so
//! whatever way it returns (an answer, an error, `?`, a panic that unwinds),
//! the buffer is empty before the loop can lend it again.
//!
//! What is not here: deciding what goes in it (`conn.rs`) and the per-client
//! `out` queue, which belongs to its connection.

use std::ops::{Deref, DerefMut};

/// The shared answer buffer. Holds bytes only while lent.
pub struct AnswerBuf(Vec<u8>);

impl AnswerBuf {
    /// A buffer with room for `capacity` bytes, allocated once.
    pub fn with_capacity(capacity: usize) -> Self {
        AnswerBuf(Vec::with_capacity(capacity))
    }

    /// Lends the buffer, empty, to one connection's drive.
    pub fn lend(&mut self) -> Loan<'_> {
        Loan(&mut self.0)
    }
}

/// The buffer while one connection uses it. Dropping it empties it.
pub struct Loan<'a>(&'a mut Vec<u8>);

impl Deref for Loan<'_> {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        self.0
    }
}

impl DerefMut for Loan<'_> {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        self.0
    }
}

impl Drop for Loan<'_> {
    fn drop(&mut self) {
        // Whatever the borrower did not write is dropped with it: those
        // answers were its client's, and nobody else's.
        self.0.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loan_returns_the_buffer_empty_on_every_path() {
        let mut buf = AnswerBuf::with_capacity(16);
        let fails = |mut loan: Loan<'_>| -> Result<(), ()> {
            loan.extend_from_slice(b"42\n");
            Err(()) // returns early with bytes in it
        };
        assert!(fails(buf.lend()).is_err());
        assert!(buf.lend().is_empty());

        let mut loan = buf.lend();
        loan.extend_from_slice(b"7\n");
        drop(loan);
        assert!(buf.lend().is_empty());
        assert!(buf.0.capacity() >= 16, "the allocation is kept");
    }
}
