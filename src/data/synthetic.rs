//! placeholder
use super::{Dataset, Split};
pub const DEFAULT_TRAIN: usize = 12_000;
pub const DEFAULT_TEST: usize = 2_000;
pub fn generate(seed: u64, train_len: usize, test_len: usize) -> Dataset {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut split = |n: usize| {
        let labels: Vec<u8> = (0..n).map(|_| rng.u8(0..10)).collect();
        let mut images = vec![0u8; n * 784];
        for (i, &l) in labels.iter().enumerate() {
            for p in 0..784 { images[i * 784 + p] = if p % 10 == l as usize { 200 } else { rng.u8(0..60) }; }
        }
        Split { images, labels, len: n }
    };
    let train = split(train_len);
    let test = split(test_len);
    Dataset { name: "synthetic".into(), channels: 1, height: 28, width: 28, num_classes: 10,
        class_names: (0..10).map(|i| i.to_string()).collect(), train, test }
}
