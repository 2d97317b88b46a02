//! What the geometry examples share (a directory, so cargo does not take it for an example).

/// `n` points of the ball (c = 1) in `dim` dimensions from a fixed seed: uniform
/// directions, hyperbolic radius uniform in [0, 8), so many lie near the boundary.
pub fn cloud(n: usize, dim: usize, seed: u64) -> Vec<Vec<f64>> {
    let mut s = seed;
    let mut next = move || {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (s >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            let v: Vec<f64> = (0..dim).map(|_| next() * 2.0 - 1.0).collect();
            let len = hsync_geometry::norm(&v).max(1e-12);
            let r = (next() * 4.0).tanh();
            v.iter().map(|x| x / len * r).collect()
        })
        .collect()
}
