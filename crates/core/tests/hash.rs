#![allow(clippy::unwrap_used, clippy::expect_used)]

//! The dual hasher gives the standard MD5 and SHA-256 of a stream, whatever its chunking and
//! wherever it is checkpointed and resumed.

use bytes::Bytes;
use filetrail_core::digest::{COPY_BELOW, Digests, DualHasher, HashCheckpoint, HasherTuning, lower_hex};
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

// --- Checkpoints -------------------------------------------------------------------------------

/// A few tunings, so that a stream is checkpointed by a hasher of one and resumed in another.
fn tunings() -> [HasherTuning; 4] {
    [
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
    ]
}

/// Feeds `data[from..to]` in chunks of `chunk` bytes (at least 1), by reference or as slices.
fn feed(hasher: &mut DualHasher, data: &Bytes, from: usize, to: usize, chunk: usize, slices: bool) {
    let mut at = from;
    while at < to {
        let end = (at + chunk.max(1)).min(to);
        if slices {
            hasher.update_from_slice(&data[at..end]).unwrap();
        } else {
            hasher.update(data.slice(at..end)).unwrap();
        }
        at = end;
    }
}

/// Checkpoint -> JSON -> checkpoint, checking that nothing is lost on the way.
fn round_trip(checkpoint: &HashCheckpoint) -> HashCheckpoint {
    let json = serde_json::to_string(checkpoint).unwrap();
    let back: HashCheckpoint = serde_json::from_str(&json).unwrap();
    assert_eq!(&back, checkpoint, "{json}");
    back
}

/// Hashes `data` in parts ending at `cuts` (offsets in increasing order, repeats allowed: a
/// repeat is an empty part). At each cut the hasher is checkpointed, the checkpoint goes through
/// JSON and a new hasher (with the next tuning) resumes from it, as a later invocation would.
fn hash_with_checkpoints(data: &[u8], cuts: &[usize], chunk: usize, slices: bool, tunings: &[HasherTuning]) -> Digests {
    let shared = Bytes::copy_from_slice(data);
    let mut hasher = DualHasher::with_tuning(tunings[0]).unwrap();
    let mut at = 0;
    for (i, &cut) in cuts.iter().enumerate() {
        feed(&mut hasher, &shared, at, cut, chunk, slices);
        let checkpoint = round_trip(&hasher.checkpoint().unwrap());
        assert_eq!(checkpoint.bytes(), cut as u64);
        hasher = DualHasher::resume(&checkpoint, tunings[(i + 1) % tunings.len()]).unwrap();
        assert_eq!(hasher.bytes(), cut as u64);
        at = cut;
    }
    feed(&mut hasher, &shared, at, data.len(), chunk, slices);
    hasher.finish().unwrap()
}

#[test]
fn every_length_up_to_200_bytes_has_the_crates_digests_with_and_without_a_checkpoint() {
    // The padding is this crate's: lengths 55, 56, 63, 64, 119, 120... are where it changes.
    let data = SplitMix64(200).bytes(200);
    for len in 0..=200 {
        let part = &data[..len];
        assert_eq!(hash_whole(part), reference(part), "{len} bytes");
        let cut = len / 3;
        assert_eq!(
            hash_with_checkpoints(part, &[cut], 7, false, &tunings()),
            reference(part),
            "{len} bytes, checkpoint at {cut}"
        );
    }
}

#[test]
fn a_checkpoint_before_any_byte_resumes_to_the_standard_digests() {
    let checkpoint = round_trip(&DualHasher::new().unwrap().checkpoint().unwrap());
    assert_eq!(checkpoint.bytes(), 0);
    let empty = DualHasher::resume(&checkpoint, HasherTuning::default())
        .unwrap()
        .finish()
        .unwrap();
    assert_eq!(empty.md5_hex(), "d41d8cd98f00b204e9800998ecf8427e");
    assert_eq!(
        empty.sha256_hex(),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    let mut hasher = DualHasher::resume(&checkpoint, HasherTuning::default()).unwrap();
    hasher.update_from_slice(b"abc").unwrap();
    let abc = hasher.finish().unwrap();
    assert_eq!(abc.md5_hex(), "900150983cd24fb0d6963f7d28e17f72");
    assert_eq!(
        abc.sha256_hex(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(abc.bytes, 3);
}

#[test]
fn the_rfc_1321_and_fips_180_vectors_hold_wherever_they_are_checkpointed() {
    // (message, MD5 from RFC 1321 §A.5, SHA-256 from the FIPS 180-2 examples); a missing value
    // is compared with the crates' own digest only.
    let vectors: [(&[u8], Option<&str>, Option<&str>); 9] = [
        (b"", Some("d41d8cd98f00b204e9800998ecf8427e"), None),
        (b"a", Some("0cc175b9c0f1b6a831c399e269772661"), None),
        (
            b"abc",
            Some("900150983cd24fb0d6963f7d28e17f72"),
            Some("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
        ),
        (b"message digest", Some("f96b697d7cb7938d525a2f31aaf161d0"), None),
        (
            b"abcdefghijklmnopqrstuvwxyz",
            Some("c3fcd3d76192e4007dfb496cca67e13b"),
            None,
        ),
        (
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
            Some("d174ab98d277d9f5a5611c2c9f419d9f"),
            None,
        ),
        (
            b"12345678901234567890123456789012345678901234567890123456789012345678901234567890",
            Some("57edf4a22be3c955ac49da2e2107b67a"),
            None,
        ),
        (
            b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
            None,
            Some("248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"),
        ),
        (
            b"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu",
            None,
            Some("cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1"),
        ),
    ];
    for (message, md5, sha256) in vectors {
        let expected = reference(message);
        if let Some(md5) = md5 {
            assert_eq!(expected.md5_hex(), md5);
        }
        if let Some(sha256) = sha256 {
            assert_eq!(expected.sha256_hex(), sha256);
        }
        for cut in 0..=message.len() {
            let got = hash_with_checkpoints(message, &[cut], 1, cut % 2 == 0, &tunings()[..2]);
            assert_eq!(
                got,
                expected,
                "{:?} checkpointed at {cut}",
                String::from_utf8_lossy(message)
            );
        }
        // And a checkpoint after every byte.
        let every: Vec<usize> = (0..=message.len()).collect();
        assert_eq!(hash_with_checkpoints(message, &every, 1, false, &tunings()), expected);
    }
}

#[test]
fn a_million_a_has_the_standard_digests_across_checkpoints() {
    let data = vec![b'a'; 1_000_000];
    let got = hash_with_checkpoints(&data, &[1, 640_000, 999_999], 16_384, false, &tunings()[..2]);
    assert_eq!(got.md5_hex(), "7707d6ae4e027c70eea2a935c2296f21");
    assert_eq!(
        got.sha256_hex(),
        "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
    );
}

#[test]
fn checkpoints_at_and_around_block_boundaries_give_the_same_digests() {
    let data = SplitMix64(64).bytes((1 << 20) + 3 * 64 + 5);
    let expected = reference(&data);
    let mib = 1 << 20;
    let cuts = [0, 1, 55, 56, 63, 64, 65, 127, 128, 129, 4096, mib - 1, mib, mib + 64];
    for chunk in [1000, 64, 4096, mib] {
        for slices in [false, true] {
            assert_eq!(
                hash_with_checkpoints(&data, &cuts, chunk, slices, &tunings()),
                expected,
                "chunks of {chunk}, slices {slices}"
            );
        }
    }
    // Each boundary alone too, with a stream whose length is no multiple of 64.
    for cut in cuts {
        assert_eq!(
            hash_with_checkpoints(&data, &[cut], 16_384, false, &tunings()[..2]),
            expected,
            "checkpoint at {cut}"
        );
    }
}

#[test]
fn one_byte_parts_each_checkpointed_give_the_same_digests() {
    let data = SplitMix64(7).bytes(300);
    let every: Vec<usize> = (0..=data.len()).collect();
    for tunings in [&tunings()[..1], &tunings()[1..2], &tunings()[..]] {
        assert_eq!(hash_with_checkpoints(&data, &every, 1, true, tunings), reference(&data));
    }
}

#[test]
fn an_empty_first_part_and_repeated_checkpoints_change_nothing() {
    let data = SplitMix64(3).bytes(10_007);
    let cuts = [0, 0, 0, 5_000, 5_000, 10_007, 10_007];
    assert_eq!(
        hash_with_checkpoints(&data, &cuts, 333, false, &tunings()),
        reference(&data)
    );
    // A resumed hasher checkpointed again at once gives back the same checkpoint.
    let mut hasher = DualHasher::new().unwrap();
    hasher.update_from_slice(&data[..5_000]).unwrap();
    let first = hasher.checkpoint().unwrap();
    let again = DualHasher::resume(&first, HasherTuning::default())
        .unwrap()
        .checkpoint()
        .unwrap();
    assert_eq!(again, first);
}

#[test]
fn random_splits_of_random_streams_checkpointed_give_the_same_digests() {
    // Property: for any stream, any cuts (at 0, at the end, repeated, on or off a block
    // boundary), any chunking and any tunings, checkpoint -> JSON -> resume at each cut gives
    // the digests of the whole. 40 seeded cases; the seed is in the failure message.
    let all_tunings = tunings();
    for seed in 0..40_u64 {
        let mut rng = SplitMix64(0xC0FF_EE00 + seed);
        let len = match rng.below(4) {
            0 => rng.below(200),
            1 => rng.below(70_000),
            _ => rng.below(2_500_000),
        };
        // Mostly no multiple of 64, sometimes one.
        let len = if rng.below(5) == 0 { len - len % 64 } else { len | 1 };
        let data = rng.bytes(len);
        let mut cuts: Vec<usize> = (0..rng.below(6))
            .map(|_| match rng.below(5) {
                0 => 0,
                1 => len,
                2 => rng.below(len / 64 + 1) * 64,
                _ => rng.below(len + 1),
            })
            .collect();
        cuts.sort_unstable();
        let chunk = match rng.below(5) {
            0 => 1 + rng.below(16),
            1 => 1 + rng.below(COPY_BELOW * 2),
            2 => 16_384,
            3 => (1 << 20) + 1,
            _ => 1 + rng.below(200_000),
        };
        // Batches of 0 bytes wake the threads for every chunk, and slices reach them one byte
        // at a time: that tuning is kept for short streams.
        let tunings: Vec<HasherTuning> = if len > 100_000 {
            all_tunings.iter().copied().filter(|t| t.batch_bytes > 0).collect()
        } else {
            all_tunings.to_vec()
        };
        let slices = rng.below(2) == 0;
        assert_eq!(
            hash_with_checkpoints(&data, &cuts, chunk, slices, &tunings),
            reference(&data),
            "seed {seed}: {len} bytes, cuts {cuts:?}, chunks of {chunk}, slices {slices}"
        );
    }
}

#[test]
fn a_checkpoint_serialises_to_a_small_record_of_the_documented_fields() {
    let fresh = DualHasher::new().unwrap().checkpoint().unwrap();
    let json: serde_json::Value = serde_json::to_value(&fresh).unwrap();
    // The initial states, as the module documentation describes their encoding.
    assert_eq!(
        json,
        serde_json::json!({
            "version": 1,
            "bytes": 0,
            "md5": "0123456789abcdeffedcba9876543210",
            "sha256": "6a09e667bb67ae853c6ef372a54ff53a510e527f9b05688c1f83d9ab5be0cd19",
            "pending": "",
        })
    );
    assert_eq!(HashCheckpoint::VERSION, 1);

    let data = SplitMix64(9).bytes(1000);
    for len in [64, 128, 999, 1000] {
        let mut hasher = DualHasher::new().unwrap();
        hasher.update_from_slice(&data[..len]).unwrap();
        let checkpoint = hasher.checkpoint().unwrap();
        let text = serde_json::to_string(&checkpoint).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        let pending = &data[len - len % 64..len];
        assert_eq!(json["pending"], lower_hex(pending), "{len} bytes");
        assert_eq!(json["bytes"], len);
        assert!(text.len() < 300, "{} bytes of JSON: {text}", text.len());
    }
}

#[test]
fn debug_output_leaves_the_pending_content_and_the_states_out() {
    let mut hasher = DualHasher::new().unwrap();
    hasher.update_from_slice(b"a secret line").unwrap();
    let checkpoint = hasher.checkpoint().unwrap();
    let shown = format!("{checkpoint:?}");
    assert!(shown.contains("bytes: 13"), "{shown}");
    let json = serde_json::to_value(&checkpoint).unwrap();
    for field in ["pending", "md5", "sha256"] {
        let value = json[field].as_str().unwrap();
        assert!(!shown.contains(value), "{field} shown: {shown}");
    }
    assert!(!shown.contains("secret"), "{shown}");
}

/// The JSON of a checkpoint after `len` bytes of a seeded stream, as a value to tamper with.
fn checkpoint_json(len: usize) -> serde_json::Value {
    let mut hasher = DualHasher::new().unwrap();
    hasher.update_from_slice(&SplitMix64(5).bytes(len)).unwrap();
    serde_json::to_value(hasher.checkpoint().unwrap()).unwrap()
}

fn decode_error(json: &serde_json::Value) -> String {
    serde_json::from_value::<HashCheckpoint>(json.clone())
        .unwrap_err()
        .to_string()
}

#[test]
fn a_checkpoint_of_another_format_version_is_refused_clearly() {
    let mut json = checkpoint_json(100);
    json["version"] = 2.into();
    let err = decode_error(&json);
    assert!(
        err.contains("format version 2") && err.contains("reads version 1 only"),
        "{err}"
    );
    // Even when the rest of the record is of another shape.
    let err = decode_error(&serde_json::json!({"version": 0, "state": [1, 2, 3]}));
    assert!(err.contains("format version 0"), "{err}");
    let err = decode_error(&serde_json::json!({"bytes": 3}));
    assert!(err.contains("version"), "{err}");
}

#[test]
fn a_checkpoint_with_a_pending_block_of_the_wrong_length_is_refused_clearly() {
    let json = checkpoint_json(100);
    let pending = json["pending"].as_str().unwrap().to_owned();
    assert_eq!(pending.len(), 2 * 36);

    // A whole block (or more) pending.
    let mut whole = json.clone();
    whole["bytes"] = 64.into();
    whole["pending"] = "ab".repeat(64).into();
    let err = decode_error(&whole);
    assert!(err.contains("pending block of 64 bytes"), "{err}");
    let mut more = json.clone();
    more["pending"] = "ab".repeat(100).into();
    let err = decode_error(&more);
    assert!(
        err.contains("pending block of 100 bytes") && err.contains("leave 36"),
        "{err}"
    );

    // Fewer bytes than `bytes % 64`.
    let mut short = json.clone();
    short["pending"] = pending[2..].into();
    let err = decode_error(&short);
    assert!(
        err.contains("pending block of 35 bytes, but 100 bytes hashed leave 36"),
        "{err}"
    );

    // Half a byte.
    let mut odd = json.clone();
    odd["pending"] = pending[1..].into();
    let err = decode_error(&odd);
    assert!(err.contains("`pending` is not valid hex"), "{err}");

    // No error message repeats the content.
    for err in [decode_error(&whole), decode_error(&short), decode_error(&odd)] {
        assert!(!err.contains(&pending[2..20]), "{err}");
    }
}

#[test]
fn a_checkpoint_with_damaged_states_is_refused_clearly() {
    let json = checkpoint_json(100);
    let mut short = json.clone();
    short["md5"] = "0123".into();
    assert!(decode_error(&short).contains("`md5` is not valid hex: 4 digits instead of 32"));
    let mut bad = json.clone();
    bad["sha256"] = "zz".repeat(32).into();
    assert!(decode_error(&bad).contains("`sha256` is not valid hex"));
    let mut missing = json.clone();
    missing.as_object_mut().unwrap().remove("bytes");
    assert!(decode_error(&missing).contains("has no `bytes`"));
    // The states decode case-insensitively and come back as written by this build.
    let mut upper = json.clone();
    upper["md5"] = json["md5"].as_str().unwrap().to_uppercase().into();
    let decoded: HashCheckpoint = serde_json::from_value(upper).unwrap();
    assert_eq!(serde_json::to_value(&decoded).unwrap(), json);
}

/// Informal throughput check (not a benchmark, no assertion on time): 1 GiB from memory in
/// 16 KiB slices, with and without a checkpoint every 256 MiB. Run with
/// `cargo test --release -p filetrail-core --test hash -- --ignored --nocapture`.
#[test]
#[ignore = "informal throughput check, run in release mode by hand"]
fn throughput_of_1_gib_from_memory() {
    let data = Bytes::from(SplitMix64(1).bytes(1 << 30));
    let mut runs = Vec::new();
    for pass in 0..3 {
        for (name, tuning, checkpoint_every) in [
            ("two threads", HasherTuning::default(), None),
            (
                "two threads, checkpoint every 256 MiB",
                HasherTuning::default(),
                Some(256 << 20),
            ),
            (
                "MD5 on the caller",
                HasherTuning {
                    md5_on_worker: false,
                    ..HasherTuning::default()
                },
                None,
            ),
        ] {
            let started = std::time::Instant::now();
            let mut hasher = DualHasher::with_tuning(tuning).unwrap();
            let mut at = 0;
            while at < data.len() {
                let end = (at + 16_384).min(data.len());
                hasher.update(data.slice(at..end)).unwrap();
                at = end;
                if checkpoint_every.is_some_and(|every| at % every == 0 && at < data.len()) {
                    let checkpoint = round_trip(&hasher.checkpoint().unwrap());
                    hasher = DualHasher::resume(&checkpoint, tuning).unwrap();
                }
            }
            let digests = hasher.finish().unwrap();
            let mb_s = data.len() as f64 / started.elapsed().as_secs_f64() / 1e6;
            println!("pass {pass}: {name}: {mb_s:.0} MB/s ({})", digests.md5_hex());
            runs.push(digests);
        }
    }
    assert!(runs.windows(2).all(|w| w[0] == w[1]));
}
