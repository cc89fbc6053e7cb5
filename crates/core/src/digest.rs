//! MD5 and SHA-256 of a byte stream in one pass, with bounded memory and nothing written to disk.
//!
//! OneDrive for Business gives no usable content hash (only `quickXorHash`,
//! <https://learn.microsoft.com/en-us/graph/api/resources/hashes>), so
//! hash-file streams each file and computes both digests itself. One thread doing MD5 then
//! SHA-256 on each buffer reaches 352 MB/s on the benchmark machine, while `openssl dgst -md5`
//! alone reaches 571: the two digests are serial chains that cannot share a core. So the
//! [`DualHasher`] runs each digest on a thread of its own and hands both the same chunks
//! (reference-counted [`Bytes`], not copies) through small bounded queues. SHA-256 (SHA-NI,
//! ~1,250 MB/s) is twice as fast as MD5 (~570 MB/s in assembly), so the stream is hashed at MD5's
//! speed given two cores.
//!
//! MD5 is not computed on the caller's thread (the first design) because an HTTP client reads
//! the next body chunk off the socket only when asked for it (hyper signals demand when the body
//! is polled): hashing inside `update` left the socket unread while MD5 ran, and the download
//! and MD5 took turns (0.82-0.84× `openssl dgst -md5` over loopback HTTP on a quiet machine,
//! against 0.93-0.95× with MD5 on a thread of its own and 1.01× for either fed from memory;
//! BENCHMARKS.md). With both digests on their own threads, `update` only queues and the caller is
//! back reading while the previous chunks are hashed. Hashing at MD5's speed needs two cores (in
//! Lambda, two vCPUs); on one, the digests share it.
//!
//! Resuming a dropped download with `Range` needs nothing special: [`DualHasher::bytes`] is the
//! offset to ask from (`Range: bytes={n}-`), and the caller keeps feeding the new body to the same
//! hasher. If the server ignores the `Range` and answers `200` with the whole file
//! (<https://learn.microsoft.com/en-us/graph/api/driveitem-get-content#partial-range-downloads>),
//! the caller must skip the first `n` bytes of it (or start over with a new hasher).
//!
//! # Continuing in a later invocation
//!
//! A file can take longer to hash than one Lambda invocation may run (15 minutes; OneDrive files
//! go up to 250 GB). [`DualHasher::checkpoint`] stops a hasher at any point and returns its state
//! as a [`HashCheckpoint`], which serde turns into a small record (under 300 bytes of JSON); a
//! later invocation passes it to [`DualHasher::resume`], asks for the rest of the file with
//! `Range: bytes={n}-` ([`HashCheckpoint::bytes`]) and feeds it on. The digests at the end are
//! those of the whole file, however many times it was checkpointed. The caller must check that
//! the file did not change in between (its cTag) and start over with a new hasher if it did: the
//! checkpoint knows nothing of which file it belongs to.
//!
//! MD5 and SHA-256 process 64-byte blocks in a chain (Merkle–Damgård), so a checkpoint holds:
//! - `version`: the record format, [`HashCheckpoint::VERSION`]; other versions are refused;
//! - `bytes`: how many bytes of the stream were hashed (the `Range` offset);
//! - `md5` and `sha256`: the chaining state after the last whole block (4 and 8 words of 32 bits,
//!   as hex in each digest's byte order: little-endian words for MD5, big-endian for SHA-256);
//! - `pending`: the bytes after the last whole block (`bytes % 64` of them, so under 64), as hex.
//!
//! **Where a checkpoint may be kept.** The chaining states are one-way functions of the content
//! and reveal no more of it than a digest does, but `pending` **is file content**: up to 63
//! bytes of the file, all of it for a file under 64 bytes. A checkpoint may therefore only be
//! stored where the service keeps data about the files, under the same access control and
//! encryption at rest: a row of the DynamoDB state table, or a job message on an encrypted queue
//! whose bodies are not logged, for as long as the continuation needs it. It must never be
//! written to logs, metrics, traces or error messages: its [`Debug`](std::fmt::Debug) output
//! leaves the states and the pending bytes out for that reason, the errors of decoding one name
//! fields and lengths only, and nothing in this module logs it.
//!
//! The md-5 and sha2 `Digest` types (0.10) keep their state private, so the hasher does not use
//! them: it calls the crates' block-compression functions (MD5: `md5_asm::compress`, the x86 and
//! x86-64 assembly that md-5's `asm` feature uses, or md-5 0.11's portable `compress` on other
//! targets; SHA-256: `sha2::compress256`, which picks SHA-NI at run time) and does the buffering
//! of a partial block and the final padding itself. The compression functions, where all of the
//! cryptography is, are the crates'; the padding is checked against the crates' own digests and
//! the standard vectors by the tests. MD5 runs as fast as through md-5's `Digest` type, and
//! SHA-256 faster: it is handed copies of up to 16 blocks at a time (1 KiB, on the stack), which
//! ran at 1,650 MB/s on the benchmark machine against 1,150 through its `Digest` type.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use bytes::BytesMut;
#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
use md5_asm::compress as md5_compress_blocks;
#[cfg(not(any(target_arch = "x86", target_arch = "x86_64")))]
use md5_portable::block_api::compress as md5_compress_blocks;
use serde::{Deserialize, Serialize};
use sha2::digest::generic_array::GenericArray;
use sha2::digest::typenum::U64;

/// The chunk type the hasher takes, re-exported so callers need no `bytes` dependency of their own
/// (reqwest hands body chunks as this type).
pub use bytes::Bytes;

/// Bytes handed to the digest threads at once: chunks are gathered until they add up to this.
/// 1 MiB batches reached 562 MB/s on two threads against 571 MB/s for `openssl dgst -md5` on
/// the benchmark machine; one queue operation per MiB costs nothing measurable.
pub const BATCH_BYTES: usize = 1 << 20;

/// Batches that may wait in each digest thread's queue. Two let the caller run ahead of the
/// digests by up to 2 MiB (reading the next chunks off the socket while they are hashed) and
/// absorb a scheduling hiccup on a busy machine.
pub const QUEUE_DEPTH: usize = 2;

/// Chunks shorter than this are copied into a coalescing buffer instead of being queued by
/// reference, so a stream of tiny chunks (one byte at a time, at worst) neither holds thousands
/// of small buffers alive nor sends thousands of handles. HTTP bodies arrive in chunks of 8 KiB
/// and more (one TLS record is up to 16 KiB), which pass by reference: copying every byte
/// would cost ~5% of MD5's time.
pub const COPY_BELOW: usize = 4 << 10;

/// How the hasher batches the chunks it hands to its digest threads. [`Default`] is what
/// production uses; other values exist for benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HasherTuning {
    /// Bytes gathered before a batch is queued ([`BATCH_BYTES`]); 0 queues every chunk alone.
    pub batch_bytes: usize,
    /// Batches waiting in each queue at most ([`QUEUE_DEPTH`]; at least 1 is used).
    pub queue_depth: usize,
    /// Chunks shorter than this are copied and coalesced ([`COPY_BELOW`]).
    pub copy_below: usize,
    /// MD5 on a thread of its own (the default) rather than on the caller's thread inside
    /// [`DualHasher::update`].
    pub md5_on_worker: bool,
}

impl Default for HasherTuning {
    fn default() -> Self {
        Self {
            batch_bytes: BATCH_BYTES,
            queue_depth: QUEUE_DEPTH,
            copy_below: COPY_BELOW,
            md5_on_worker: true,
        }
    }
}

impl HasherTuning {
    /// About the most content bytes a hasher with this tuning keeps alive: the batches in the
    /// queues, the one each thread is hashing and the one being gathered or sent, each at most
    /// `batch_bytes` plus a short chunk. A single chunk longer than a batch is the caller's and
    /// adds its own length. Batches are shared by the two threads, so the slower one bounds it.
    /// 4 MiB (and 16 KiB) by default.
    pub fn max_bytes_held(&self) -> usize {
        (self.queue_depth.max(1) + 2) * (self.batch_bytes + self.copy_below)
    }
}

/// The digests of a whole stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digests {
    pub md5: [u8; 16],
    pub sha256: [u8; 32],
    /// Bytes hashed.
    pub bytes: u64,
}

impl Digests {
    /// MD5 as 32 lowercase hex digits.
    pub fn md5_hex(&self) -> String {
        lower_hex(&self.md5)
    }

    /// SHA-256 as 64 lowercase hex digits.
    pub fn sha256_hex(&self) -> String {
        lower_hex(&self.sha256)
    }
}

/// `bytes` as lowercase hex, two digits per byte.
pub fn lower_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// Why a stream could not be hashed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    /// A digest thread could not be started.
    #[error("cannot start a digest thread: {0}; the process is out of threads or memory, retry later")]
    Spawn(String),
    /// A digest thread stopped before the end of the stream: the digests are lost.
    #[error("the {digest} thread panicked ({message}); this stream's digests are lost, hash it again")]
    WorkerPanicked { digest: &'static str, message: String },
}

/// Bytes in a block of MD5 and of SHA-256.
const BLOCK: usize = 64;

/// A digest built on a 64-byte block compression function (MD5 and SHA-256), whose chaining
/// state this module keeps so that it can be checkpointed.
trait Algorithm: 'static {
    /// The chaining state.
    type Words: Copy + Send + 'static;
    /// The state before any block.
    const INIT: Self::Words;
    /// The algorithm's byte order, of the length that closes the padding and of the words of
    /// the digest: big-endian (SHA-256) or little-endian (MD5).
    const BIG_ENDIAN: bool;
    /// Compresses whole blocks: `blocks.len()` is a multiple of [`BLOCK`].
    fn compress(words: &mut Self::Words, blocks: &[u8]);
}

struct Md5Algorithm;

impl Algorithm for Md5Algorithm {
    type Words = [u32; 4];
    // RFC 1321 §3.3.
    const INIT: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];
    const BIG_ENDIAN: bool = false;

    fn compress(words: &mut [u32; 4], blocks: &[u8]) {
        // The assembly takes one block per call whatever it is given, so nothing is lost by
        // handing blocks one at a time.
        for block in blocks.chunks_exact(BLOCK) {
            if let Ok(block) = <&[u8; BLOCK]>::try_from(block) {
                md5_compress_blocks(words, std::slice::from_ref(block));
            }
        }
    }
}

struct Sha256Algorithm;

impl Algorithm for Sha256Algorithm {
    type Words = [u32; 8];
    // FIPS 180-4 §5.3.3.
    const INIT: [u32; 8] = [
        0x6a09_e667,
        0xbb67_ae85,
        0x3c6e_f372,
        0xa54f_f53a,
        0x510e_527f,
        0x9b05_688c,
        0x1f83_d9ab,
        0x5be0_cd19,
    ];
    const BIG_ENDIAN: bool = true;

    fn compress(words: &mut [u32; 8], blocks: &[u8]) {
        // `compress256` takes `GenericArray` blocks, which a byte slice cannot be viewed as
        // without `unsafe`: blocks are copied to the stack, 16 at a time. On the benchmark
        // machine this ran at ~1,650 MB/s, against ~1,120 with one call per block and ~1,150
        // through sha2's `Digest` type.
        const STAGED: usize = 16;
        if blocks.len() == BLOCK {
            sha2::compress256(words, std::slice::from_ref(GenericArray::from_slice(blocks)));
            return;
        }
        let mut staged = [GenericArray::<u8, U64>::default(); STAGED];
        for group in blocks.chunks(BLOCK * STAGED) {
            let mut n = 0;
            for (slot, block) in staged.iter_mut().zip(group.chunks_exact(BLOCK)) {
                slot.copy_from_slice(block);
                n += 1;
            }
            sha2::compress256(words, &staged[..n]);
        }
    }
}

/// One digest in progress: the chaining state after the whole blocks so far, and the bytes of
/// the partial block after them.
struct Chain<A: Algorithm> {
    words: A::Words,
    /// Bytes hashed, pending ones included.
    bytes: u64,
    /// The first `bytes % 64` bytes are the partial block; the rest is stale.
    pending: [u8; BLOCK],
}

impl<A: Algorithm> Chain<A> {
    fn new() -> Self {
        Self {
            words: A::INIT,
            bytes: 0,
            pending: [0; BLOCK],
        }
    }

    fn pending_len(&self) -> usize {
        (self.bytes % BLOCK as u64) as usize
    }

    fn update(&mut self, mut data: &[u8]) {
        let used = self.pending_len();
        self.bytes += data.len() as u64;
        if used > 0 {
            let take = (BLOCK - used).min(data.len());
            self.pending[used..used + take].copy_from_slice(&data[..take]);
            data = &data[take..];
            if used + take < BLOCK {
                return;
            }
            A::compress(&mut self.words, &self.pending);
        }
        let whole = data.len() - data.len() % BLOCK;
        if whole > 0 {
            A::compress(&mut self.words, &data[..whole]);
        }
        self.pending[..data.len() - whole].copy_from_slice(&data[whole..]);
    }

    /// The state after the padding (a 1 bit, zeros, the length in bits): the digest's words.
    fn finalize(&self) -> A::Words {
        let used = self.pending_len();
        let mut tail = [0; 2 * BLOCK];
        tail[..used].copy_from_slice(&self.pending[..used]);
        tail[used] = 0x80;
        let end = if used < BLOCK - 8 { BLOCK } else { 2 * BLOCK };
        let bits = self.bytes.wrapping_mul(8);
        tail[end - 8..end].copy_from_slice(&if A::BIG_ENDIAN {
            bits.to_be_bytes()
        } else {
            bits.to_le_bytes()
        });
        let mut words = self.words;
        A::compress(&mut words, &tail[..end]);
        words
    }
}

type Md5Chain = Chain<Md5Algorithm>;
type Sha256Chain = Chain<Sha256Algorithm>;

/// `N` bytes from `W` words, each little- or big-endian.
fn words_to_bytes<const W: usize, const N: usize>(words: &[u32; W], big_endian: bool) -> [u8; N] {
    let mut out = [0; N];
    for (bytes, word) in out.chunks_exact_mut(4).zip(words) {
        bytes.copy_from_slice(&if big_endian {
            word.to_be_bytes()
        } else {
            word.to_le_bytes()
        });
    }
    out
}

fn bytes_to_words<const W: usize>(bytes: &[u8], big_endian: bool) -> [u32; W] {
    let mut words = [0; W];
    for (word, b) in words.iter_mut().zip(bytes.chunks_exact(4)) {
        let b = [b[0], b[1], b[2], b[3]];
        *word = if big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        };
    }
    words
}

/// The state of a [`DualHasher`] stopped part way through a stream, from which
/// [`DualHasher::resume`] continues; see the [module documentation](self) for what it holds
/// and where it may be kept (not in logs: it holds up to 63 bytes of the content).
///
/// It is made by [`DualHasher::checkpoint`] or by deserialising one (which checks it), so it is
/// always consistent.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "CheckpointRecord", into = "CheckpointRecord")]
pub struct HashCheckpoint {
    md5: [u32; 4],
    sha256: [u32; 8],
    bytes: u64,
    /// `bytes % 64` bytes.
    pending: Vec<u8>,
}

impl HashCheckpoint {
    /// The format of the serialised record this build writes, and the only one it reads.
    pub const VERSION: u32 = 1;

    /// Bytes of the stream hashed before the checkpoint: the offset to resume the download from
    /// (`Range: bytes={n}-`).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    fn new(md5: &Md5Chain, sha256: &Sha256Chain) -> Self {
        Self {
            md5: md5.words,
            sha256: sha256.words,
            bytes: md5.bytes,
            pending: md5.pending[..md5.pending_len()].to_vec(),
        }
    }

    fn chains(&self) -> (Md5Chain, Sha256Chain) {
        let mut pending = [0; BLOCK];
        pending[..self.pending.len()].copy_from_slice(&self.pending);
        let md5 = Chain {
            words: self.md5,
            bytes: self.bytes,
            pending,
        };
        let sha256 = Chain {
            words: self.sha256,
            bytes: self.bytes,
            pending,
        };
        (md5, sha256)
    }
}

/// Leaves out the chaining states and the pending bytes (file content): a checkpoint inside a
/// job or an error that gets logged shows only how far it is.
impl std::fmt::Debug for HashCheckpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HashCheckpoint")
            .field("bytes", &self.bytes)
            .field("pending_len", &self.pending.len())
            .finish_non_exhaustive()
    }
}

/// The serialised form of a [`HashCheckpoint`]. Every field but `version` may be missing from
/// the input, so that a record of another version is refused for its version rather than for
/// the first field this one lacks.
#[derive(Serialize, Deserialize)]
struct CheckpointRecord {
    version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    md5: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pending: Option<String>,
}

impl From<HashCheckpoint> for CheckpointRecord {
    fn from(c: HashCheckpoint) -> Self {
        Self {
            version: HashCheckpoint::VERSION,
            bytes: Some(c.bytes),
            md5: Some(lower_hex(&words_to_bytes::<4, 16>(&c.md5, Md5Algorithm::BIG_ENDIAN))),
            sha256: Some(lower_hex(&words_to_bytes::<8, 32>(
                &c.sha256,
                Sha256Algorithm::BIG_ENDIAN,
            ))),
            pending: Some(lower_hex(&c.pending)),
        }
    }
}

impl TryFrom<CheckpointRecord> for HashCheckpoint {
    type Error = CheckpointError;

    fn try_from(r: CheckpointRecord) -> Result<Self, CheckpointError> {
        if r.version != Self::VERSION {
            return Err(CheckpointError::UnsupportedVersion { found: r.version });
        }
        let bytes = r.bytes.ok_or(CheckpointError::Missing("bytes"))?;
        let md5 = parse_hex("md5", r.md5.as_deref(), Some(16))?;
        let sha256 = parse_hex("sha256", r.sha256.as_deref(), Some(32))?;
        let pending = parse_hex("pending", r.pending.as_deref(), None)?;
        let expected = (bytes % BLOCK as u64) as usize;
        if pending.len() != expected {
            return Err(CheckpointError::PendingLength {
                len: pending.len(),
                bytes,
                expected,
            });
        }
        Ok(Self {
            md5: bytes_to_words(&md5, Md5Algorithm::BIG_ENDIAN),
            sha256: bytes_to_words(&sha256, Sha256Algorithm::BIG_ENDIAN),
            bytes,
            pending,
        })
    }
}

/// `field`'s hex digits as bytes, `len` of them if given.
fn parse_hex(field: &'static str, hex: Option<&str>, len: Option<usize>) -> Result<Vec<u8>, CheckpointError> {
    let hex = hex.ok_or(CheckpointError::Missing(field))?;
    let bad = |reason: String| CheckpointError::BadHex { field, reason };
    if hex.len() % 2 != 0 {
        return Err(bad(format!("{} digits, an odd number", hex.len())));
    }
    match len {
        Some(len) if hex.len() != 2 * len => {
            return Err(bad(format!("{} digits instead of {}", hex.len(), 2 * len)));
        }
        _ => {}
    }
    hex.as_bytes()
        .chunks_exact(2)
        .map(|pair| match (hex_digit(pair[0]), hex_digit(pair[1])) {
            (Some(high), Some(low)) => Ok(high << 4 | low),
            _ => Err(bad("a character other than a hex digit".to_owned())),
        })
        .collect()
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Why a serialised [`HashCheckpoint`] was refused. Its messages name fields and lengths, never
/// their content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// Written by a build with another record format.
    #[error(
        "hash checkpoint format version {found}, but this build reads version {} only; hash the file again from its start",
        HashCheckpoint::VERSION
    )]
    UnsupportedVersion { found: u32 },
    #[error("hash checkpoint has no `{0}`")]
    Missing(&'static str),
    #[error("hash checkpoint `{field}` is not valid hex: {reason}")]
    BadHex { field: &'static str, reason: String },
    /// The partial block must hold exactly the bytes after the last whole block.
    #[error(
        "hash checkpoint pending block of {len} bytes, but {bytes} bytes hashed leave {expected} after the last 64-byte block"
    )]
    PendingLength { len: usize, bytes: u64, expected: usize },
}

/// What a digest thread receives: consecutive chunks of the stream, in order, shared by both
/// threads.
type Batch = Arc<Vec<Bytes>>;

/// The body of a digest thread: continues the chain it is given with the batches until its
/// queue closes, or stops early when `abandoned` is set, and returns the chain.
type WorkerFn<A> = fn(Receiver<Batch>, Arc<AtomicBool>, Chain<A>) -> Chain<A>;

fn drain(batches: Receiver<Batch>, abandoned: &AtomicBool, mut update: impl FnMut(&[u8])) {
    for batch in batches {
        if abandoned.load(Ordering::Relaxed) {
            break;
        }
        for chunk in batch.iter() {
            update(chunk);
        }
    }
}

fn chain_worker<A: Algorithm>(batches: Receiver<Batch>, abandoned: Arc<AtomicBool>, mut chain: Chain<A>) -> Chain<A> {
    drain(batches, &abandoned, |chunk| chain.update(chunk));
    chain
}

/// A digest thread and its queue.
struct Worker<A: Algorithm> {
    digest: &'static str,
    queue: SyncSender<Batch>,
    thread: JoinHandle<Chain<A>>,
}

impl<A: Algorithm> Worker<A> {
    fn spawn(
        digest: &'static str,
        depth: usize,
        work: WorkerFn<A>,
        chain: Chain<A>,
        abandoned: &Arc<AtomicBool>,
    ) -> Result<Self, HashError> {
        let (queue, batches) = sync_channel::<Batch>(depth.max(1));
        let flag = Arc::clone(abandoned);
        let thread = std::thread::Builder::new()
            .name(digest.to_ascii_lowercase().replace('-', ""))
            .spawn(move || work(batches, flag, chain))
            .map_err(|e| HashError::Spawn(format!("{digest}: {e}")))?;
        Ok(Self { digest, queue, thread })
    }

    /// Queues `batch`, waiting while the queue is full; false if the thread is gone.
    fn send(&self, batch: &Batch) -> bool {
        self.queue.send(Arc::clone(batch)).is_ok()
    }

    /// Closes the queue and waits for the chain to take in what was queued (or for the panic, as
    /// an error).
    fn finish(self) -> Result<Chain<A>, HashError> {
        drop(self.queue);
        self.thread.join().map_err(|panic| HashError::WorkerPanicked {
            digest: self.digest,
            message: panic_message(panic.as_ref()),
        })
    }
}

/// Where MD5 is computed.
enum Md5Side {
    Caller(Md5Chain),
    Worker(Worker<Md5Algorithm>),
}

/// Computes MD5 and SHA-256 of a stream fed chunk by chunk, in one pass.
///
/// Each digest runs on a thread the hasher owns (MD5 may run on the caller's instead, see
/// [`HasherTuning::md5_on_worker`]), fed the same chunks, reference-counted rather than copied,
/// through queues bounded by [`HasherTuning::max_bytes_held`] (about 4 MiB by default): memory
/// does not grow with the stream and nothing is written anywhere. [`update`](Self::update) only
/// queues, so the caller goes back to reading the next chunk while the previous ones are hashed;
/// it waits when the queues are full, which is the back-pressure that keeps memory bounded (in
/// async code this briefly holds the runtime thread, as the hashing itself would).
///
/// [`checkpoint`](Self::checkpoint) stops it part way, to be [`resume`](Self::resume)d in
/// another process. Dropping a hasher without [`finish`](Self::finish) or `checkpoint` stops its
/// threads (they skip queued batches) and joins them.
pub struct DualHasher {
    bytes: u64,
    tuning: HasherTuning,
    /// Chunks gathered for the next batch, and their total length.
    batch: Vec<Bytes>,
    batch_len: usize,
    /// Short chunks copied together; becomes one chunk of `batch` when it is flushed.
    small: BytesMut,
    /// `None` once finished or failed.
    workers: Option<(Md5Side, Worker<Sha256Algorithm>)>,
    abandoned: Arc<AtomicBool>,
    /// Set once a digest thread is found dead; every later call fails with it.
    failure: Option<HashError>,
}

impl std::fmt::Debug for DualHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DualHasher")
            .field("bytes", &self.bytes)
            .field("tuning", &self.tuning)
            .field("batch_len", &self.batch_len)
            .field("small_len", &self.small.len())
            .field("running", &self.workers.is_some())
            .field("failure", &self.failure)
            .finish()
    }
}

impl DualHasher {
    /// A hasher with the production tuning. Fails only if a thread cannot be started.
    pub fn new() -> Result<Self, HashError> {
        Self::with_tuning(HasherTuning::default())
    }

    /// A hasher with another tuning (benchmarks). Fails only if a thread cannot be started.
    pub fn with_tuning(tuning: HasherTuning) -> Result<Self, HashError> {
        Self::start(tuning, (Chain::new(), Chain::new()), chain_worker, chain_worker)
    }

    /// A hasher that continues the stream `checkpoint` was taken from: feed it the bytes from
    /// offset [`HashCheckpoint::bytes`] on. Any tuning may be used, whatever the checkpointed
    /// hasher's was. Fails only if a thread cannot be started.
    pub fn resume(checkpoint: &HashCheckpoint, tuning: HasherTuning) -> Result<Self, HashError> {
        Self::start(tuning, checkpoint.chains(), chain_worker, chain_worker)
    }

    fn start(
        tuning: HasherTuning,
        (md5_chain, sha256_chain): (Md5Chain, Sha256Chain),
        md5_work: WorkerFn<Md5Algorithm>,
        sha256_work: WorkerFn<Sha256Algorithm>,
    ) -> Result<Self, HashError> {
        let bytes = md5_chain.bytes;
        let abandoned = Arc::new(AtomicBool::new(false));
        let sha256 = Worker::spawn("SHA-256", tuning.queue_depth, sha256_work, sha256_chain, &abandoned)?;
        let md5 = if tuning.md5_on_worker {
            match Worker::spawn("MD5", tuning.queue_depth, md5_work, md5_chain, &abandoned) {
                Ok(worker) => Md5Side::Worker(worker),
                Err(e) => {
                    abandoned.store(true, Ordering::Relaxed);
                    let _ = sha256.finish();
                    return Err(e);
                }
            }
        } else {
            Md5Side::Caller(md5_chain)
        };
        Ok(Self {
            bytes,
            tuning,
            batch: Vec::new(),
            batch_len: 0,
            small: BytesMut::new(),
            workers: Some((md5, sha256)),
            abandoned,
            failure: None,
        })
    }

    /// Bytes fed so far, those before the checkpoint it was resumed from included: the offset a
    /// `Range` resume asks from.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Hashes the next chunk of the stream, without copying it unless it is shorter than
    /// [`HasherTuning::copy_below`]. Empty chunks are allowed. Fails if a digest thread has
    /// died (then every later call fails too).
    pub fn update(&mut self, chunk: Bytes) -> Result<(), HashError> {
        self.check()?;
        if chunk.is_empty() {
            return Ok(());
        }
        if let Some((Md5Side::Caller(md5), _)) = &mut self.workers {
            md5.update(&chunk);
        }
        self.bytes += chunk.len() as u64;
        self.batch_len += chunk.len();
        if chunk.len() < self.tuning.copy_below {
            self.small.extend_from_slice(&chunk);
        } else {
            self.flush_small();
            self.batch.push(chunk);
        }
        if self.batch_len >= self.tuning.batch_bytes {
            self.send_batch()?;
        }
        Ok(())
    }

    /// Hashes the next chunk given as a borrowed slice (copied once). Fails as
    /// [`update`](Self::update).
    pub fn update_from_slice(&mut self, data: &[u8]) -> Result<(), HashError> {
        if data.len() < self.tuning.copy_below {
            // Coalesced in `small` without an allocation per call.
            self.check()?;
            if data.is_empty() {
                return Ok(());
            }
            if let Some((Md5Side::Caller(md5), _)) = &mut self.workers {
                md5.update(data);
            }
            self.bytes += data.len() as u64;
            self.small.extend_from_slice(data);
            self.batch_len += data.len();
            if self.batch_len >= self.tuning.batch_bytes {
                self.send_batch()?;
            }
            return Ok(());
        }
        for piece in data.chunks(self.tuning.batch_bytes.max(self.tuning.copy_below).max(1)) {
            self.update(Bytes::copy_from_slice(piece))?;
        }
        Ok(())
    }

    /// The digests of everything fed (since the start of the stream, for a resumed hasher).
    /// Waits for the threads to hash what is queued (about 1.6 ms per queued MiB). Fails if a
    /// digest thread died.
    pub fn finish(self) -> Result<Digests, HashError> {
        let (md5, sha256) = self.drain_threads()?;
        Ok(Digests {
            md5: words_to_bytes(&md5.finalize(), Md5Algorithm::BIG_ENDIAN),
            sha256: words_to_bytes(&sha256.finalize(), Sha256Algorithm::BIG_ENDIAN),
            bytes: md5.bytes,
        })
    }

    /// Stops here and returns the state to [`resume`](Self::resume) from, in this process or
    /// another. Waits for the threads to hash what is queued, as [`finish`](Self::finish) does,
    /// and fails as it does. The checkpoint holds up to 63 bytes of the stream: keep it out of
    /// logs (see the [module documentation](self)).
    pub fn checkpoint(self) -> Result<HashCheckpoint, HashError> {
        let (md5, sha256) = self.drain_threads()?;
        Ok(HashCheckpoint::new(&md5, &sha256))
    }

    /// Hashes what is gathered and queued, stops the threads and returns both chains.
    fn drain_threads(mut self) -> Result<(Md5Chain, Sha256Chain), HashError> {
        self.check()?;
        if self.batch_len > 0 {
            self.send_batch()?;
        }
        let Some((md5, sha256)) = self.workers.take() else {
            return Err(self.failed("SHA-256", "the hasher has no threads left".to_owned()));
        };
        let md5 = match md5 {
            Md5Side::Caller(md5) => md5,
            Md5Side::Worker(worker) => match worker.finish() {
                Ok(chain) => chain,
                Err(e) => {
                    self.abandoned.store(true, Ordering::Relaxed);
                    let _ = sha256.finish();
                    return Err(e);
                }
            },
        };
        let sha256 = sha256.finish()?;
        // Both were fed the same batches, so this holds unless a thread stopped early.
        for (digest, bytes) in [("MD5", md5.bytes), ("SHA-256", sha256.bytes)] {
            if bytes != self.bytes {
                let message = format!("it hashed {bytes} bytes of the {} fed", self.bytes);
                return Err(self.failed(digest, message));
            }
        }
        Ok((md5, sha256))
    }

    fn check(&self) -> Result<(), HashError> {
        match &self.failure {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    fn flush_small(&mut self) {
        if !self.small.is_empty() {
            self.batch.push(self.small.split().freeze());
        }
    }

    /// Queues the gathered batch to each digest thread, waiting while a queue is full.
    fn send_batch(&mut self) -> Result<(), HashError> {
        self.flush_small();
        let batch: Batch = Arc::new(std::mem::take(&mut self.batch));
        self.batch_len = 0;
        let Some((md5, sha256)) = &self.workers else {
            return Err(self.failed("SHA-256", "the hasher has no threads left".to_owned()));
        };
        // MD5 first: it is the slower digest, so it should never wait for SHA-256's queue.
        let dead = match md5 {
            Md5Side::Worker(worker) if !worker.send(&batch) => Some("MD5"),
            _ if !sha256.send(&batch) => Some("SHA-256"),
            _ => None,
        };
        match dead {
            None => Ok(()),
            Some(digest) => Err(self.dead(digest)),
        }
    }

    /// Records that the `digest` thread stopped taking work: stops the other, joins both and
    /// returns the error with the panic's message.
    fn dead(&mut self, digest: &'static str) -> HashError {
        self.abandoned.store(true, Ordering::Relaxed);
        let mut error = None;
        if let Some((md5, sha256)) = self.workers.take() {
            if let Md5Side::Worker(worker) = md5
                && let Err(e) = worker.finish()
            {
                error = Some(e);
            }
            if let Err(e) = sha256.finish() {
                error = error.or(Some(e));
            }
        }
        let error = error.unwrap_or_else(|| HashError::WorkerPanicked {
            digest,
            message: "it stopped taking work".to_owned(),
        });
        self.failure = Some(error.clone());
        error
    }

    fn failed(&mut self, digest: &'static str, message: String) -> HashError {
        let error = HashError::WorkerPanicked { digest, message };
        self.failure = Some(error.clone());
        error
    }
}

impl Drop for DualHasher {
    fn drop(&mut self) {
        if let Some((md5, sha256)) = self.workers.take() {
            self.abandoned.store(true, Ordering::Relaxed);
            // A panic in a thread has nowhere to go from here; finish() is where it is reported.
            if let Md5Side::Worker(worker) = md5 {
                let _ = worker.finish();
            }
            let _ = sha256.finish();
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn panicking_sha256(batches: Receiver<Batch>, _: Arc<AtomicBool>, _: Sha256Chain) -> Sha256Chain {
        let _first = batches.recv();
        panic!("injected SHA-256 failure");
    }

    fn panicking_md5(batches: Receiver<Batch>, _: Arc<AtomicBool>, _: Md5Chain) -> Md5Chain {
        let _first = batches.recv();
        panic!("injected MD5 failure");
    }

    fn fresh() -> (Md5Chain, Sha256Chain) {
        (Chain::new(), Chain::new())
    }

    fn tiny_tuning(md5_on_worker: bool) -> HasherTuning {
        HasherTuning {
            batch_bytes: 16,
            queue_depth: 1,
            copy_below: 4,
            md5_on_worker,
        }
    }

    fn feed_until_error(hasher: &mut DualHasher) -> HashError {
        // The first batch is taken, then the thread dies; a bounded queue would block a sender
        // forever if the failure were not noticed.
        for _ in 0..1000 {
            if let Err(e) = hasher.update(Bytes::from_static(&[7; 16])) {
                return e;
            }
        }
        panic!("1000 updates succeeded after the thread died");
    }

    #[test]
    fn a_sha256_thread_that_panics_makes_update_fail_with_its_message_and_never_hang() {
        for md5_on_worker in [true, false] {
            let mut hasher =
                DualHasher::start(tiny_tuning(md5_on_worker), fresh(), chain_worker, panicking_sha256).unwrap();
            let err = feed_until_error(&mut hasher);
            assert!(err.to_string().contains("injected SHA-256 failure"), "{err}");
            // Every later call reports the same failure.
            assert_eq!(hasher.update(Bytes::from_static(b"more")), Err(err.clone()));
            assert_eq!(hasher.finish(), Err(err));
        }
    }

    #[test]
    fn an_md5_thread_that_panics_makes_update_fail_with_its_message() {
        let mut hasher = DualHasher::start(tiny_tuning(true), fresh(), panicking_md5, chain_worker).unwrap();
        let err = feed_until_error(&mut hasher);
        assert!(
            matches!(&err, HashError::WorkerPanicked { digest: "MD5", message } if message.contains("injected")),
            "{err}"
        );
    }

    #[test]
    fn a_thread_that_panics_before_the_end_makes_finish_fail() {
        let mut hasher = DualHasher::start(HasherTuning::default(), fresh(), chain_worker, panicking_sha256).unwrap();
        hasher.update(Bytes::from_static(b"abc")).unwrap();
        let err = hasher.finish().unwrap_err();
        assert!(
            matches!(&err, HashError::WorkerPanicked { digest: "SHA-256", message } if message.contains("injected")),
            "{err}"
        );
        let mut hasher = DualHasher::start(HasherTuning::default(), fresh(), panicking_md5, chain_worker).unwrap();
        hasher.update(Bytes::from_static(b"abc")).unwrap();
        assert!(matches!(
            hasher.finish(),
            Err(HashError::WorkerPanicked { digest: "MD5", .. })
        ));
    }

    #[test]
    fn a_thread_that_panics_makes_checkpoint_fail() {
        let mut hasher = DualHasher::start(HasherTuning::default(), fresh(), chain_worker, panicking_sha256).unwrap();
        hasher.update(Bytes::from_static(b"abc")).unwrap();
        let err = hasher.checkpoint().unwrap_err();
        assert!(
            matches!(&err, HashError::WorkerPanicked { digest: "SHA-256", message } if message.contains("injected")),
            "{err}"
        );
    }

    #[test]
    fn a_thread_that_skips_batches_makes_checkpoint_and_finish_fail_rather_than_lie() {
        fn skipping(batches: Receiver<Batch>, _: Arc<AtomicBool>, chain: Sha256Chain) -> Sha256Chain {
            for _ in batches {}
            chain
        }
        let mut hasher = DualHasher::start(HasherTuning::default(), fresh(), chain_worker, skipping).unwrap();
        hasher.update(Bytes::from_static(b"abc")).unwrap();
        let err = hasher.checkpoint().unwrap_err();
        assert!(err.to_string().contains("hashed 0 bytes of the 3 fed"), "{err}");
        let mut hasher = DualHasher::start(HasherTuning::default(), fresh(), chain_worker, skipping).unwrap();
        hasher.update(Bytes::from_static(b"abc")).unwrap();
        assert!(matches!(
            hasher.finish(),
            Err(HashError::WorkerPanicked { digest: "SHA-256", .. })
        ));
    }

    #[test]
    fn dropping_an_unfinished_hasher_stops_and_joins_its_threads() {
        for md5_on_worker in [true, false] {
            let mut hasher = DualHasher::with_tuning(tiny_tuning(md5_on_worker)).unwrap();
            for _ in 0..100 {
                hasher.update(Bytes::from_static(&[1; 64])).unwrap();
            }
            drop(hasher);
        }
    }

    #[test]
    fn the_default_tuning_holds_a_few_mib_at_most() {
        assert_eq!(HasherTuning::default().max_bytes_held(), 4 * (BATCH_BYTES + COPY_BELOW));
        assert!(HasherTuning::default().max_bytes_held() < 5 << 20);
    }

    #[test]
    fn hex_is_lowercase_two_digits_per_byte() {
        assert_eq!(lower_hex(&[0x00, 0x0f, 0xa0, 0xff]), "000fa0ff");
    }
}
