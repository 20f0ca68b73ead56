//! Helpers shared by the fuzz targets: cutting one byte stream into the
//! segments that reads could deliver.
//!
//! The parsers under test are fed socket reads, which the kernel may cut
//! anywhere. Each target feeds the same stream whole, byte by byte, and cut
//! at points chosen by [`Cuts`] from a seed taken from the fuzz input, and
//! requires the same result every time.

/// splitmix64: a tiny deterministic generator, so a crashing input replays
/// with the same cuts.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for this seed (and stream length, so that the same seed
    /// byte cuts streams of different lengths differently).
    pub fn new(seed: u8, len: usize) -> Self {
        Rng((u64::from(seed) << 32) ^ (len as u64) ^ 0x5eed_5eed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..=max`.
    pub fn up_to(&mut self, max: usize) -> usize {
        (self.next_u64() % (max as u64 + 1)) as usize
    }
}

/// Cuts `stream` into consecutive segments whose lengths are drawn from
/// `0..=max_len` (so empty segments, which a parser must accept and ignore,
/// occur too). The segments joined give `stream` back.
pub fn random_segments<'a>(stream: &'a [u8], rng: &mut Rng, max_len: usize) -> Vec<&'a [u8]> {
    let mut segments = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        let n = rng.up_to(max_len).min(rest.len());
        let (seg, tail) = rest.split_at(n);
        segments.push(seg);
        rest = tail;
    }
    // An empty read at the very end as well, now and then.
    if rng.up_to(3) == 0 {
        segments.push(&[]);
    }
    segments
}

/// The three ways every target feeds a stream: whole, one byte per read,
/// and two random cuttings (short segments, then longer ones).
pub fn cuttings(stream: &[u8], seed: u8) -> Vec<Vec<&[u8]>> {
    let mut rng = Rng::new(seed, stream.len());
    vec![
        vec![stream],
        stream.chunks(1).collect(),
        random_segments(stream, &mut rng, 3),
        random_segments(stream, &mut rng, 40),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cutting_joins_back_to_the_stream() {
        let stream: Vec<u8> = (0..=255).collect();
        for seed in 0..=255 {
            for cut in cuttings(&stream, seed) {
                assert_eq!(cut.concat(), stream);
            }
        }
    }
}
