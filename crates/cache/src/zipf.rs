//! A seeded Zipf workload generator, shared by the cache's tests, its hit-rate example and
//! `hsync bench`, so every comparison sees the same request sequence.

/// xorshift64*: small, fast, and the same sequence on every machine.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Zipf(s) over ranks 0..n (rank 0 the most popular), by inverse CDF.
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    pub fn new(n: usize, s: f64) -> Zipf {
        let mut cdf = Vec::with_capacity(n.max(1));
        let mut acc = 0.0;
        for k in 1..=n.max(1) {
            acc += 1.0 / (k as f64).powf(s);
            cdf.push(acc);
        }
        for c in &mut cdf {
            *c /= acc;
        }
        Zipf { cdf }
    }

    pub fn sample(&self, rng: &mut Rng) -> usize {
        let u = rng.unit();
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }

    /// The share of requests that go to the `k` most popular ranks: the hit rate of an
    /// ideal cache of `k` entries.
    pub fn top_share(&self, k: usize) -> f64 {
        if k == 0 {
            0.0
        } else {
            self.cdf[(k - 1).min(self.cdf.len() - 1)]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skewed_and_in_range() {
        let z = Zipf::new(100_000, 1.0);
        // H(10^4)/H(10^5) = 9.7876/12.0901.
        assert!((z.top_share(10_000) - 0.8095).abs() < 1e-3, "{}", z.top_share(10_000));
        let mut rng = Rng::new(7);
        let samples: Vec<usize> = (0..100_000).map(|_| z.sample(&mut rng)).collect();
        assert!(samples.iter().all(|&k| k < 100_000));
        let top = samples.iter().filter(|&&k| k < 10_000).count() as f64 / samples.len() as f64;
        assert!((0.79..0.83).contains(&top), "top-10k share {top}");
        let first = samples.iter().filter(|&&k| k == 0).count() as f64 / samples.len() as f64;
        assert!((0.07..0.10).contains(&first), "rank-0 share {first}");
    }
}
