#![allow(clippy::unwrap_used, clippy::expect_used)]

//! The dual hasher gives the standard MD5 and SHA-256 of a stream, whatever its chunking.

use bytes::Bytes;
use filetrail_core::hash::{COPY_BELOW, Digests, DualHasher, HasherTuning, lower_hex};
use sha2::Digest as _;

/// SplitMix64 (Steele, Lea, Flood 2014): a seeded generator, so a failing case can be replayed.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (`bound` > 0).
    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

/// The digests computed directly with md-5 and sha2, in one call each.
fn reference(data: &[u8]) -> Digests {
    Digests {
        md5: md5::Md5::digest(data).into(),
        sha256: sha2::Sha256::digest(data).into(),
        bytes: data.len() as u64,
    }
}

/// Feeds `data` cut at the given chunk lengths (cycled; 0 means an empty chunk).
fn hash_in_chunks(data: &[u8], lengths: &[usize], tuning: HasherTuning) -> Digests {
    let mut hasher = DualHasher::with_tuning(tuning).unwrap();
    let shared = Bytes::copy_from_slice(data);
    let mut at = 0;
    for len in lengths.iter().cycle() {
        if at >= data.len() {
            break;
        }
        let end = (at + len).min(data.len());
        hasher.update(shared.slice(at..end)).unwrap();
        at = end;
    }
    hasher.finish().unwrap()
}

fn hash_whole(data: &[u8]) -> Digests {
    let mut hasher = DualHasher::new().unwrap();
    hasher.update(Bytes::copy_from_slice(data)).unwrap();
    hasher.finish().unwrap()
}

#[test]
fn empty_input_has_the_standard_digests() {
    let digests = DualHasher::new().unwrap().finish().unwrap();
    assert_eq!(digests.md5_hex(), "d41d8cd98f00b204e9800998ecf8427e");
    assert_eq!(
        digests.sha256_hex(),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(digests.bytes, 0);
}

#[test]
fn abc_has_the_standard_digests() {
    let digests = hash_whole(b"abc");
    assert_eq!(digests.md5_hex(), "900150983cd24fb0d6963f7d28e17f72");
    assert_eq!(
        digests.sha256_hex(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(digests.bytes, 3);
}

#[test]
fn a_million_a_has_the_standard_digests_fed_whole_or_byte_by_byte() {
    let data = vec![b'a'; 1_000_000];
    let whole = hash_whole(&data);
    assert_eq!(whole.md5_hex(), "7707d6ae4e027c70eea2a935c2296f21");
    assert_eq!(
        whole.sha256_hex(),
        "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
    );
    assert_eq!(whole.bytes, 1_000_000);

    let mut hasher = DualHasher::new().unwrap();
    for byte in &data {
        hasher.update_from_slice(std::slice::from_ref(byte)).unwrap();
    }
    assert_eq!(hasher.finish().unwrap(), whole);
}

#[test]
fn the_digests_do_not_depend_on_the_chunking() {
    let mut rng = SplitMix64(0x5EED_4A54);
    let data = rng.bytes(3 * (1 << 20) + 12_345);
    let expected = reference(&data);
    let mib = 1 << 20;
    let chunkings: [&[usize]; 9] = [
        &[data.len()],
        &[7],
        &[4095, 4096, 4097],
        &[COPY_BELOW - 1, COPY_BELOW, COPY_BELOW + 1],
        &[mib + 1],
        &[mib - 1, 3],
        &[16 << 10],
        &[0, 0, 0, 65_537, 0, 1],
        &[1, 100_000, 2, 3 * mib],
    ];
    for lengths in chunkings {
        for md5_on_worker in [true, false] {
            let tuning = HasherTuning {
                md5_on_worker,
                ..HasherTuning::default()
            };
            assert_eq!(
                hash_in_chunks(&data, lengths, tuning),
                expected,
                "chunk lengths {lengths:?}, {tuning:?}"
            );
        }
    }
}

#[test]
fn one_byte_chunks_give_the_same_digests() {
    let data = SplitMix64(1).bytes(300_001);
    assert_eq!(hash_in_chunks(&data, &[1], HasherTuning::default()), reference(&data));
}

#[test]
fn random_chunkings_and_tunings_give_the_same_digests() {
    // Property: for any data, any cut into chunks (empty ones included) and any batching, the
    // digests are those of the whole. 40 seeded cases; the seed is in the failure message.
    let tunings = [
        HasherTuning::default(),
        HasherTuning {
            md5_on_worker: false,
            ..HasherTuning::default()
        },
        HasherTuning {
            batch_bytes: 0,
            queue_depth: 1,
            copy_below: 0,
            md5_on_worker: true,
        },
        HasherTuning {
            batch_bytes: 1000,
            queue_depth: 1,
            copy_below: 64,
            md5_on_worker: false,
        },
        HasherTuning {
            batch_bytes: 256 << 10,
            queue_depth: 8,
            copy_below: 64 << 10,
            md5_on_worker: true,
        },
    ];
    for seed in 0..40_u64 {
        let mut rng = SplitMix64(seed);
        let tuning = tunings[rng.below(tunings.len())];
        let len = match rng.below(4) {
            0 => rng.below(100),
            1 => rng.below(70_000),
            // Tiny batches wake the worker for every chunk: keep those streams short.
            _ if tuning.batch_bytes < COPY_BELOW => rng.below(150_000),
            _ => rng.below(2_500_000),
        };
        let data = rng.bytes(len);
        let mut lengths = Vec::new();
        for _ in 0..1 + rng.below(50) {
            lengths.push(match rng.below(6) {
                0 => 0,
                1 => 1 + rng.below(16),
                2 => 1 + rng.below(COPY_BELOW * 2),
                3 => 1 + rng.below(200_000),
                4 => (1 << 20) + rng.below(3) - 1,
                _ => 1 + rng.below(3 << 20),
            });
        }
        if lengths.iter().all(|l| *l == 0) {
            lengths.push(1);
        }
        let use_slices = rng.below(2) == 0;
        let got = if use_slices {
            let mut hasher = DualHasher::with_tuning(tuning).unwrap();
            let mut at = 0;
            for l in lengths.iter().cycle() {
                if at >= data.len() {
                    break;
                }
                let end = (at + l).min(data.len());
                hasher.update_from_slice(&data[at..end]).unwrap();
                at = end;
            }
            hasher.finish().unwrap()
        } else {
            hash_in_chunks(&data, &lengths, tuning)
        };
        assert_eq!(
            got,
            reference(&data),
            "seed {seed}: {len} bytes, chunk lengths {lengths:?}, {tuning:?}, slices {use_slices}"
        );
    }
}

#[test]
fn many_empty_chunks_change_nothing() {
    let mut hasher = DualHasher::new().unwrap();
    for i in 0..10_000 {
        hasher.update(Bytes::new()).unwrap();
        hasher.update_from_slice(&[]).unwrap();
        if i % 1000 == 0 {
            hasher.update_from_slice(b"abc").unwrap();
        }
    }
    let expected = reference(&b"abc".repeat(10));
    assert_eq!(hasher.bytes(), 30);
    assert_eq!(hasher.finish().unwrap(), expected);
}

#[test]
fn a_range_resume_continues_from_the_bytes_hashed() {
    // GIVEN a download that dropped after some bytes
    let data = SplitMix64(42).bytes(5_000_000);
    let mut hasher = DualHasher::new().unwrap();
    let dropped_at = 1_234_567;
    for piece in data[..dropped_at].chunks(16_384) {
        hasher.update_from_slice(piece).unwrap();
    }
    // WHEN the caller asks for `Range: bytes={hasher.bytes()}-` and feeds the rest
    let resume_from = usize::try_from(hasher.bytes()).unwrap();
    assert_eq!(resume_from, dropped_at);
    hasher.update(Bytes::copy_from_slice(&data[resume_from..])).unwrap();
    // THEN the digests are those of the whole file
    assert_eq!(hasher.finish().unwrap(), reference(&data));
}

#[test]
fn a_64_mib_stream_matches_md5_and_sha256_computed_directly() {
    let data = SplitMix64(64).bytes(64 << 20);
    let expected = reference(&data);
    // Chunks as an HTTP client hands them: mostly 16 KiB, some shorter.
    let got = hash_in_chunks(&data, &[16_384, 16_384, 9_000, 16_384, 1_448], HasherTuning::default());
    assert_eq!(got, expected);
    assert_eq!(got.bytes, 64 << 20);
    assert_eq!(got.md5_hex(), lower_hex(&expected.md5));
}

#[test]
fn a_hasher_can_move_between_threads() {
    fn assert_send<T: Send>() {}
    assert_send::<DualHasher>();
    let handle = std::thread::spawn(|| {
        let mut hasher = DualHasher::new().unwrap();
        hasher.update_from_slice(b"abc").unwrap();
        hasher
    });
    let hasher = handle.join().unwrap();
    assert_eq!(hasher.finish().unwrap().md5_hex(), "900150983cd24fb0d6963f7d28e17f72");
}
