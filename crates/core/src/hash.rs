//! MD5 and SHA-256 of a byte stream in one pass, with bounded memory and nothing written to disk.
//!
//! OneDrive for Business gives no usable content hash (only `quickXorHash`, FACTS §4), so
//! hash-file streams each file and computes both digests itself. One thread doing MD5 then
//! SHA-256 on each buffer reaches 352 MB/s on the benchmark machine, while `openssl dgst -md5`
//! alone reaches 571: the two digests are serial chains that cannot share a core. So the
//! [`DualHasher`] runs each digest on a thread of its own and hands both the same chunks
//! (reference-counted [`Bytes`], not copies) through small bounded queues. SHA-256 (SHA-NI,
//! ~1,250 MB/s) is twice as fast as MD5 (~570 MB/s with the `asm` feature), so the stream is
//! hashed at MD5's speed given two cores.
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
//! hasher. If the server ignores the `Range` and answers `200` with the whole file (FACTS §6), the
//! caller must skip the first `n` bytes of it (or start over with a new hasher).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use bytes::BytesMut;
use md5::Md5;
use sha2::{Digest as _, Sha256};

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

/// What a digest thread receives: consecutive chunks of the stream, in order, shared by both
/// threads.
type Batch = Arc<Vec<Bytes>>;

/// The body of a digest thread: hashes batches until its queue closes, or stops early when
/// `abandoned` is set, and returns the digest.
type WorkerFn<const N: usize> = fn(Receiver<Batch>, Arc<AtomicBool>) -> [u8; N];

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

fn md5_worker(batches: Receiver<Batch>, abandoned: Arc<AtomicBool>) -> [u8; 16] {
    let mut md5 = Md5::new();
    drain(batches, &abandoned, |chunk| md5.update(chunk));
    md5.finalize().into()
}

fn sha256_worker(batches: Receiver<Batch>, abandoned: Arc<AtomicBool>) -> [u8; 32] {
    let mut sha256 = Sha256::new();
    drain(batches, &abandoned, |chunk| sha256.update(chunk));
    sha256.finalize().into()
}

/// A digest thread and its queue.
struct Worker<const N: usize> {
    digest: &'static str,
    queue: SyncSender<Batch>,
    thread: JoinHandle<[u8; N]>,
}

impl<const N: usize> Worker<N> {
    fn spawn(
        digest: &'static str,
        depth: usize,
        work: WorkerFn<N>,
        abandoned: &Arc<AtomicBool>,
    ) -> Result<Self, HashError> {
        let (queue, batches) = sync_channel::<Batch>(depth.max(1));
        let flag = Arc::clone(abandoned);
        let thread = std::thread::Builder::new()
            .name(digest.to_ascii_lowercase().replace('-', ""))
            .spawn(move || work(batches, flag))
            .map_err(|e| HashError::Spawn(format!("{digest}: {e}")))?;
        Ok(Self { digest, queue, thread })
    }

    /// Queues `batch`, waiting while the queue is full; false if the thread is gone.
    fn send(&self, batch: &Batch) -> bool {
        self.queue.send(Arc::clone(batch)).is_ok()
    }

    /// Closes the queue and waits for the digest (or the panic, as an error).
    fn finish(self) -> Result<[u8; N], HashError> {
        drop(self.queue);
        self.thread.join().map_err(|panic| HashError::WorkerPanicked {
            digest: self.digest,
            message: panic_message(panic.as_ref()),
        })
    }
}

/// Where MD5 is computed.
enum Md5Side {
    Caller(Md5),
    Worker(Worker<16>),
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
/// Dropping a hasher without [`finish`](Self::finish) stops its threads (they skip queued
/// batches) and joins them.
pub struct DualHasher {
    bytes: u64,
    tuning: HasherTuning,
    /// Chunks gathered for the next batch, and their total length.
    batch: Vec<Bytes>,
    batch_len: usize,
    /// Short chunks copied together; becomes one chunk of `batch` when it is flushed.
    small: BytesMut,
    /// `None` once finished or failed.
    workers: Option<(Md5Side, Worker<32>)>,
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
        Self::start(tuning, md5_worker, sha256_worker)
    }

    fn start(tuning: HasherTuning, md5_work: WorkerFn<16>, sha256_work: WorkerFn<32>) -> Result<Self, HashError> {
        let abandoned = Arc::new(AtomicBool::new(false));
        let sha256 = Worker::spawn("SHA-256", tuning.queue_depth, sha256_work, &abandoned)?;
        let md5 = if tuning.md5_on_worker {
            match Worker::spawn("MD5", tuning.queue_depth, md5_work, &abandoned) {
                Ok(worker) => Md5Side::Worker(worker),
                Err(e) => {
                    abandoned.store(true, Ordering::Relaxed);
                    let _ = sha256.finish();
                    return Err(e);
                }
            }
        } else {
            Md5Side::Caller(Md5::new())
        };
        Ok(Self {
            bytes: 0,
            tuning,
            batch: Vec::new(),
            batch_len: 0,
            small: BytesMut::new(),
            workers: Some((md5, sha256)),
            abandoned,
            failure: None,
        })
    }

    /// Bytes fed so far: the offset a `Range` resume asks from.
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

    /// The digests of everything fed. Waits for the threads to hash what is queued (about
    /// 1.6 ms per queued MiB). Fails if a digest thread died.
    pub fn finish(mut self) -> Result<Digests, HashError> {
        self.check()?;
        if self.batch_len > 0 {
            self.send_batch()?;
        }
        let Some((md5, sha256)) = self.workers.take() else {
            return Err(self.failed("SHA-256", "the hasher has no threads left".to_owned()));
        };
        let md5 = match md5 {
            Md5Side::Caller(md5) => md5.finalize().into(),
            Md5Side::Worker(worker) => match worker.finish() {
                Ok(digest) => digest,
                Err(e) => {
                    self.abandoned.store(true, Ordering::Relaxed);
                    let _ = sha256.finish();
                    return Err(e);
                }
            },
        };
        Ok(Digests {
            md5,
            sha256: sha256.finish()?,
            bytes: self.bytes,
        })
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

    fn panicking_sha256(batches: Receiver<Batch>, _: Arc<AtomicBool>) -> [u8; 32] {
        let _first = batches.recv();
        panic!("injected SHA-256 failure");
    }

    fn panicking_md5(batches: Receiver<Batch>, _: Arc<AtomicBool>) -> [u8; 16] {
        let _first = batches.recv();
        panic!("injected MD5 failure");
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
            let mut hasher = DualHasher::start(tiny_tuning(md5_on_worker), md5_worker, panicking_sha256).unwrap();
            let err = feed_until_error(&mut hasher);
            assert!(err.to_string().contains("injected SHA-256 failure"), "{err}");
            // Every later call reports the same failure.
            assert_eq!(hasher.update(Bytes::from_static(b"more")), Err(err.clone()));
            assert_eq!(hasher.finish(), Err(err));
        }
    }

    #[test]
    fn an_md5_thread_that_panics_makes_update_fail_with_its_message() {
        let mut hasher = DualHasher::start(tiny_tuning(true), panicking_md5, sha256_worker).unwrap();
        let err = feed_until_error(&mut hasher);
        assert!(
            matches!(&err, HashError::WorkerPanicked { digest: "MD5", message } if message.contains("injected")),
            "{err}"
        );
    }

    #[test]
    fn a_thread_that_panics_before_the_end_makes_finish_fail() {
        let mut hasher = DualHasher::start(HasherTuning::default(), md5_worker, panicking_sha256).unwrap();
        hasher.update(Bytes::from_static(b"abc")).unwrap();
        let err = hasher.finish().unwrap_err();
        assert!(
            matches!(&err, HashError::WorkerPanicked { digest: "SHA-256", message } if message.contains("injected")),
            "{err}"
        );
        let mut hasher = DualHasher::start(HasherTuning::default(), panicking_md5, sha256_worker).unwrap();
        hasher.update(Bytes::from_static(b"abc")).unwrap();
        assert!(matches!(
            hasher.finish(),
            Err(HashError::WorkerPanicked { digest: "MD5", .. })
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
