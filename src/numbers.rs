//! The number source: uniform integers in `[min, max]`, written as text.
//!
//! One generator for the whole server (there is one thread), so with
//! `--seed` the numbers depend only on the seed and on the order in which
//! lines are answered, never on how the bytes were cut into segments.
//! Without a seed, the generator is ChaCha12 (`StdRng`, a CSPRNG) keyed by
//! the operating system, so one client's answers say nothing about the next.

use rand::SeedableRng;
use rand::distr::{Distribution, Uniform};
use rand::rngs::{StdRng, SysRng};
use std::io;

/// Produces the answers.
pub struct Numbers {
    rng: StdRng,
    range: Uniform<i64>,
    /// Longest answer this range can produce, `\n` included.
    max_len: usize,
}

impl Numbers {
    /// A source of numbers in `[min, max]`, seeded by `seed` or by the OS.
    ///
    /// Fails when `min > max` or when the OS has no entropy to give.
    pub fn new(min: i64, max: i64, seed: Option<u64>) -> io::Result<Self> {
        let range = Uniform::new_inclusive(min, max).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("range {min}..={max}: {e}"),
            )
        })?;
        let rng = match seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::try_from_rng(&mut SysRng)
                .map_err(|e| io::Error::other(format!("cannot seed from the OS: {e}")))?,
        };
        let text_len = |n: i64| itoa::Buffer::new().format(n).len();
        let max_len = text_len(min).max(text_len(max)) + 1;
        Ok(Numbers {
            rng,
            range,
            max_len,
        })
    }

    /// Appends the next answer, digits then `\n`, to `out`.
    #[inline]
    pub fn write_next(&mut self, out: &mut Vec<u8>) {
        let n = self.range.sample(&mut self.rng);
        out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        out.push(b'\n');
    }

    /// The most bytes one call to [`write_next`](Self::write_next) appends.
    pub fn max_len(&self) -> usize {
        self.max_len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answers(n: &mut Numbers, count: usize) -> Vec<i64> {
        let mut out = Vec::new();
        for _ in 0..count {
            n.write_next(&mut out);
        }
        let text = String::from_utf8(out).expect("ascii");
        text.lines().map(|l| l.parse().expect("integer")).collect()
    }

    #[test]
    fn stays_in_bounds_and_covers_a_small_range() {
        let mut n = Numbers::new(-2, 2, None).expect("numbers");
        let got = answers(&mut n, 2000);
        assert!(got.iter().all(|v| (-2..=2).contains(v)));
        for v in -2..=2 {
            assert!(got.contains(&v), "{v} never drawn in 2000 tries");
        }
    }

    #[test]
    fn the_whole_i64_range_works() {
        let mut n = Numbers::new(i64::MIN, i64::MAX, Some(1)).expect("numbers");
        assert_eq!(n.max_len(), "-9223372036854775808\n".len());
        assert_eq!(answers(&mut n, 100).len(), 100);
        let mut one = Numbers::new(i64::MIN, i64::MIN, None).expect("numbers");
        assert_eq!(answers(&mut one, 3), vec![i64::MIN; 3]);
    }

    #[test]
    fn a_seed_repeats_and_no_seed_does_not() {
        let a = answers(&mut Numbers::new(1, 1 << 40, Some(7)).expect("n"), 20);
        let b = answers(&mut Numbers::new(1, 1 << 40, Some(7)).expect("n"), 20);
        assert_eq!(a, b);
        let c = answers(&mut Numbers::new(1, 1 << 40, None).expect("n"), 20);
        let d = answers(&mut Numbers::new(1, 1 << 40, None).expect("n"), 20);
        assert_ne!(c, d);
    }

    #[test]
    fn rejects_an_empty_range() {
        assert!(Numbers::new(5, 1, Some(0)).is_err());
    }
}
