//! A tiny seeded generator (SplitMix64) for drawing plans.
//!
//! Our own, not `rand`'s: a seed printed today must replay the same plans
//! after any dependency update, and SplitMix64 is ten lines that never
//! change. It need not be unpredictable, only well spread.

pub struct Rng(u64);

impl Rng {
    /// A generator for one client: the run's seed, mixed with where the
    /// client stands, so that each client's plan can be replayed alone.
    pub fn for_client(seed: u64, round: u64, client: u64) -> Rng {
        let mut r = Rng(seed ^ round.wrapping_mul(0xA24B_AED4_963E_E407));
        r.0 ^= r
            .next()
            .wrapping_add(client.wrapping_mul(0x9FB2_1C65_1E98_DF25));
        r
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-enough in `0..n` (n > 0; the bias is < n / 2^64).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    /// `n` bytes, each one of `alphabet`.
    pub fn bytes(&mut self, n: usize, alphabet: &[u8]) -> Vec<u8> {
        (0..n).map(|_| self.pick(alphabet)).collect()
    }
}
