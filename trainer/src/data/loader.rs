//! From a tokenized split to batches: packing into sequences, a per-epoch shuffle, resumable
//! positions and a background prefetcher.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use sirocco::HostTensor;

use super::cache::{Shard, TokenizedSplit};
use crate::error::{Result, TrainerError};

/// A split's tokens in memory, packed into sequences of `seq_len + 1` ids: sequence `k` covers
/// tokens `[k * seq_len, k * seq_len + seq_len + 1)`, so it holds the inputs and next-token
/// targets of `seq_len` positions, and its last token is sequence `k + 1`'s first. Documents
/// run across sequence boundaries, separated by the end-of-text id.
#[derive(Debug)]
pub struct Dataset {
    split: String,
    directory: PathBuf,
    seq_len: u64,
    /// Bytes per token in `tokens`: 2 or 4.
    token_width: usize,
    /// The shards' little-endian ids, concatenated.
    tokens: Vec<u8>,
    num_bytes: u64,
}

impl Dataset {
    /// Loads the shards of `split` into memory for a model of `vocab_size` ids: the split's
    /// vocabulary (its manifest's `vocab_size`) must not be larger, and [`Dataset::open`] checks
    /// that every id is inside it.
    pub fn open_for_model(split: &TokenizedSplit, seq_len: i64, vocab_size: i64) -> Result<Dataset> {
        let cached = split.manifest.vocab_size;
        if cached > vocab_size {
            return Err(TrainerError::data(
                split.manifest_path(),
                format!(
                    "vocab_size is {cached}, more than the model's vocab_size of {vocab_size} (the \
                     vocabulary of data.tokenizer): the cache was built with another tokenizer or is \
                     corrupt; delete {} to tokenize again",
                    split.directory.display()
                ),
            ));
        }
        Dataset::open(split, seq_len)
    }

    /// Loads the shards of `split` into memory, checking that every id is below its manifest's
    /// `vocab_size` (an id outside the vocabulary would index past the embedding table).
    pub fn open(split: &TokenizedSplit, seq_len: i64) -> Result<Dataset> {
        let manifest = &split.manifest;
        let name = &manifest.split;
        let seq_len = u64::try_from(seq_len).ok().filter(|&length| length >= 1).ok_or_else(|| {
            TrainerError::Other(format!("split `{name}`: seq_len must be at least 1, got {seq_len}"))
        })?;
        let total_bytes = checked_size(split)?;
        if manifest.num_tokens < seq_len + 1 {
            return Err(TrainerError::Other(format!(
                "split `{name}` has {} tokens, fewer than seq_len + 1 = {}: add text or lower model.seq_len",
                manifest.num_tokens,
                seq_len + 1
            )));
        }
        let token_width = manifest.token_width as usize;
        let mut tokens = Vec::new();
        tokens.try_reserve_exact(total_bytes).map_err(|error| {
            TrainerError::data(
                &split.directory,
                format!("cannot hold its {total_bytes} bytes of tokens in memory: {error}"),
            )
        })?;
        for shard in &manifest.shards {
            let path = split.directory.join(&shard.file);
            let bytes = std::fs::read(&path).map_err(|error| TrainerError::io(&path, error))?;
            if bytes.len() as u64 != shard.num_tokens * token_width as u64 {
                return Err(shard_size_error(split, shard, bytes.len() as u64));
            }
            if let Some((index, id)) = first_id_at_or_above(&bytes, token_width, manifest.vocab_size) {
                return Err(TrainerError::data(
                    &path,
                    format!(
                        "its token at index {index} is id {id}, outside the vocabulary of {} ids that \
                         {} records; the shard is corrupt: delete {} to tokenize again",
                        manifest.vocab_size,
                        split.manifest_path().display(),
                        split.directory.display()
                    ),
                ));
            }
            tokens.extend_from_slice(&bytes);
        }
        Ok(Dataset {
            split: name.clone(),
            directory: split.directory.clone(),
            seq_len,
            token_width,
            tokens,
            num_bytes: manifest.num_bytes,
        })
    }

    pub fn split(&self) -> &str {
        &self.split
    }

    /// The cache directory the tokens came from.
    pub fn directory(&self) -> &std::path::Path {
        &self.directory
    }

    pub fn seq_len(&self) -> i64 {
        self.seq_len as i64
    }

    pub fn num_tokens(&self) -> u64 {
        (self.tokens.len() / self.token_width) as u64
    }

    /// UTF-8 bytes of the split's text.
    pub fn num_bytes(&self) -> u64 {
        self.num_bytes
    }

    /// `(num_tokens - 1) / seq_len`: the tail too short for a whole sequence is not used.
    pub fn num_sequences(&self) -> u64 {
        (self.num_tokens() - 1) / self.seq_len
    }

    fn token(&self, index: u64) -> u32 {
        let start = index as usize * self.token_width;
        decode_token(&self.tokens[start..start + self.token_width])
    }

    /// The `seq_len + 1` ids of sequence `k`.
    ///
    /// # Panics
    /// When `k >= num_sequences()`.
    pub fn sequence(&self, k: u64) -> Vec<u32> {
        assert!(k < self.num_sequences(), "sequence {k} of a split of {} sequences", self.num_sequences());
        let start = k * self.seq_len;
        (start..=start + self.seq_len).map(|index| self.token(index)).collect()
    }

    /// An i32 `[sequences.len(), seq_len + 1]` tensor of the given sequences.
    fn batch_tensor(&self, sequences: &[u64]) -> HostTensor {
        let rows = sequences.len() as i64;
        let mut values = Vec::with_capacity(sequences.len() * (self.seq_len as usize + 1));
        for &k in sequences {
            values.extend(self.sequence(k).into_iter().map(|id| id as i32));
        }
        HostTensor::from_slice(&[rows, self.seq_len as i64 + 1], &values)
            .expect("a batch's values fill its dims by construction")
    }
}

/// A little-endian id of 2 or 4 bytes.
fn decode_token(bytes: &[u8]) -> u32 {
    match bytes {
        [low, high] => u32::from(u16::from_le_bytes([*low, *high])),
        _ => u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
    }
}

/// The first id of little-endian `tokens` (`width` bytes each) that is `limit` or more: its
/// index and value.
fn first_id_at_or_above(tokens: &[u8], width: usize, limit: i64) -> Option<(usize, u32)> {
    tokens.chunks_exact(width).map(decode_token).enumerate().find(|&(_, id)| i64::from(id) >= limit)
}

/// The bytes of tokens `split`'s shards hold, checked before anything is read or allocated: the
/// manifest's token width is 2 or 4, its total is the sum of its shards' counts, and each shard
/// file has the size its count promises. A corrupt manifest fails here instead of asking for an
/// allocation of its made-up size.
fn checked_size(split: &TokenizedSplit) -> Result<usize> {
    let manifest = &split.manifest;
    let manifest_path = split.manifest_path();
    let corrupt = |what: String| {
        TrainerError::data(
            &manifest_path,
            format!("{what}; delete {} to tokenize again", split.directory.display()),
        )
    };
    let token_width = u64::from(manifest.token_width);
    if token_width != 2 && token_width != 4 {
        return Err(corrupt(format!("token_width is {token_width}, not 2 or 4")));
    }
    if manifest.vocab_size < 1 {
        return Err(corrupt(format!("vocab_size is {}, not a vocabulary", manifest.vocab_size)));
    }
    let shard_tokens = manifest.shards.iter().try_fold(0u64, |sum, shard| sum.checked_add(shard.num_tokens));
    if shard_tokens != Some(manifest.num_tokens) {
        let shard_tokens = shard_tokens.map_or("more than 2^64".into(), |sum| sum.to_string());
        return Err(corrupt(format!(
            "num_tokens is {}, but its shards' counts add up to {shard_tokens}",
            manifest.num_tokens
        )));
    }
    for shard in &manifest.shards {
        let path = split.directory.join(&shard.file);
        let size = std::fs::metadata(&path).map_err(|error| TrainerError::io(&path, error))?.len();
        if shard.num_tokens.checked_mul(token_width) != Some(size) {
            return Err(shard_size_error(split, shard, size));
        }
    }
    manifest
        .num_tokens
        .checked_mul(token_width)
        .and_then(|bytes| usize::try_from(bytes).ok())
        .ok_or_else(|| corrupt(format!("num_tokens {} does not fit in memory", manifest.num_tokens)))
}

/// A shard file whose size is not the one its entry in `manifest.json` promises: either may
/// be the damaged one.
fn shard_size_error(split: &TokenizedSplit, shard: &Shard, size: u64) -> TrainerError {
    TrainerError::data(
        split.directory.join(&shard.file),
        format!(
            "holds {size} bytes, not the {} tokens of {} bytes that {} says; delete {} to \
             tokenize again",
            shard.num_tokens,
            split.manifest.token_width,
            split.manifest_path().display(),
            split.directory.display()
        ),
    )
}

/// Where the batch stream stands: the next batch is batch `index` of epoch `epoch`. Saved with
/// checkpoints; a [`BatchIter`] started from it yields what an uninterrupted one would have.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DataPosition {
    pub epoch: u64,
    pub index: u64,
}

/// One training batch.
#[derive(Clone, Debug)]
pub struct Batch {
    /// i32 ids, `[batch_size, seq_len + 1]`.
    pub tokens: HostTensor,
    /// The position after this batch (save it with a checkpoint taken after this step).
    pub position: DataPosition,
}

/// The order in which epoch `epoch` visits `num_sequences` sequences: a Fisher-Yates shuffle
/// driven by ChaCha8 seeded from `seed`, on stream `epoch`. ChaCha8's output and this shuffle
/// are fixed here (not delegated to `rand`'s helpers, whose algorithms may change across
/// versions), so a seed means the same order on every build.
pub fn epoch_permutation(num_sequences: u64, seed: u64, epoch: u64) -> Vec<u64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(epoch);
    let mut order: Vec<u64> = (0..num_sequences).collect();
    for i in (1..order.len()).rev() {
        // Lemire's multiply-shift maps 64 random bits to [0, i]; its bias, below i / 2^64, is
        // far under anything a training run could notice.
        let j = ((u128::from(rng.next_u64()) * (i as u128 + 1)) >> 64) as usize;
        order.swap(i, j);
    }
    order
}

/// Shuffled batches of a dataset, epoch after epoch: epoch `e` takes its batches from
/// [`epoch_permutation`]`(num_sequences, seed, e)` in runs of `batch_size`, dropping the
/// incomplete tail.
pub struct BatchIter {
    dataset: Arc<Dataset>,
    batch_size: u64,
    seed: u64,
    position: DataPosition,
    /// The permutation of `permutation_epoch`.
    permutation: Vec<u64>,
    permutation_epoch: Option<u64>,
}

impl BatchIter {
    /// An iterator whose first batch is the one at `start`.
    pub fn new(dataset: Arc<Dataset>, batch_size: i64, seed: u64, start: DataPosition) -> Result<BatchIter> {
        let split = dataset.split();
        let batch_size = u64::try_from(batch_size).ok().filter(|&size| size >= 1).ok_or_else(|| {
            TrainerError::Other(format!("split `{split}`: batch size must be at least 1, got {batch_size}"))
        })?;
        let batches_per_epoch = dataset.num_sequences() / batch_size;
        if batches_per_epoch == 0 {
            return Err(TrainerError::Other(format!(
                "split `{split}` has {} sequences of {} tokens, fewer than one batch of {batch_size}",
                dataset.num_sequences(),
                dataset.seq_len()
            )));
        }
        if start.index >= batches_per_epoch {
            return Err(TrainerError::Other(format!(
                "split `{split}`: data position (epoch {}, batch {}) is past the {batches_per_epoch} batches \
                 of an epoch; did the data, seq_len or batch size change since the checkpoint?",
                start.epoch, start.index
            )));
        }
        Ok(BatchIter {
            dataset,
            batch_size,
            seed,
            position: start,
            permutation: Vec::new(),
            permutation_epoch: None,
        })
    }

    /// The position of the next batch.
    pub fn position(&self) -> DataPosition {
        self.position
    }

    pub fn batches_per_epoch(&self) -> u64 {
        self.dataset.num_sequences() / self.batch_size
    }

    pub fn next_batch(&mut self) -> Result<Batch> {
        let DataPosition { epoch, index } = self.position;
        if self.permutation_epoch != Some(epoch) {
            self.permutation = epoch_permutation(self.dataset.num_sequences(), self.seed, epoch);
            self.permutation_epoch = Some(epoch);
        }
        let start = (index * self.batch_size) as usize;
        let tokens = self.dataset.batch_tensor(&self.permutation[start..start + self.batch_size as usize]);
        self.position = if index + 1 == self.batches_per_epoch() {
            DataPosition { epoch: epoch + 1, index: 0 }
        } else {
            DataPosition { epoch, index: index + 1 }
        };
        Ok(Batch { tokens, position: self.position })
    }
}

/// Runs a [`BatchIter`] on a background thread, keeping up to `depth` batches ready. Its
/// `next` calls return each batch with how long the caller waited for it (the input stall of
/// that step). Dropping it stops the thread.
pub struct Prefetcher {
    receiver: tokio::sync::mpsc::Receiver<Result<Batch>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Prefetcher {
    /// Starts the thread; `depth` 0 counts as 1.
    pub fn spawn(mut iter: BatchIter, depth: usize) -> Prefetcher {
        let (sender, receiver) = tokio::sync::mpsc::channel(depth.max(1));
        let thread = std::thread::Builder::new()
            .name("sirocco-prefetch".into())
            .spawn(move || loop {
                let batch = iter.next_batch();
                let failed = batch.is_err();
                // A send fails once the receiver is gone: the prefetcher was dropped.
                if sender.blocking_send(batch).is_err() || failed {
                    break;
                }
            })
            .expect("the operating system starts a thread");
        Prefetcher { receiver, thread: Some(thread) }
    }

    /// The next batch and how long this call waited for it.
    pub async fn next(&mut self) -> Result<(Batch, Duration)> {
        let start = Instant::now();
        let batch = self.receiver.recv().await.ok_or_else(stopped)??;
        Ok((batch, start.elapsed()))
    }

    /// [`Prefetcher::next`] for synchronous callers.
    ///
    /// # Panics
    /// When called from inside an async runtime (use `next` there).
    pub fn next_blocking(&mut self) -> Result<(Batch, Duration)> {
        let start = Instant::now();
        let batch = self.receiver.blocking_recv().ok_or_else(stopped)??;
        Ok((batch, start.elapsed()))
    }
}

fn stopped() -> TrainerError {
    TrainerError::Other("the data prefetch thread stopped after an error".into())
}

impl Drop for Prefetcher {
    fn drop(&mut self) {
        self.receiver.close();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The first `max_batches` batches of `dataset` in order, unshuffled (sequence `i * batch_size`
/// onwards for batch `i`), as i32 `[batch_size, seq_len + 1]` tensors: the validation set.
/// Fewer when the dataset holds fewer whole batches; none when `batch_size < 1`.
pub fn eval_batches(dataset: &Dataset, batch_size: i64, max_batches: usize) -> Vec<HostTensor> {
    let Ok(batch_size) = u64::try_from(batch_size) else { return Vec::new() };
    if batch_size == 0 {
        return Vec::new();
    }
    let whole_batches = dataset.num_sequences() / batch_size;
    (0..whole_batches.min(max_batches as u64))
        .map(|batch| {
            let sequences: Vec<u64> = (batch * batch_size..(batch + 1) * batch_size).collect();
            dataset.batch_tensor(&sequences)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dataset whose token `i` is `i`.
    fn counting_dataset(num_tokens: u32, seq_len: u64) -> Arc<Dataset> {
        Arc::new(Dataset {
            split: "test".into(),
            directory: PathBuf::new(),
            seq_len,
            token_width: 4,
            tokens: (0..num_tokens).flat_map(u32::to_le_bytes).collect(),
            num_bytes: u64::from(num_tokens),
        })
    }

    fn rows(tensor: &HostTensor) -> Vec<Vec<i32>> {
        let width = tensor.dims()[1] as usize;
        tensor.to_vec::<i32>().unwrap().chunks(width).map(<[i32]>::to_vec).collect()
    }

    #[test]
    fn packs_overlapping_sequences() {
        let dataset = counting_dataset(23, 5);
        assert_eq!(dataset.num_sequences(), 4);
        assert_eq!(dataset.sequence(0), [0, 1, 2, 3, 4, 5]);
        for k in 0..3 {
            assert_eq!(dataset.sequence(k).last(), dataset.sequence(k + 1).first());
        }
        assert_eq!(dataset.sequence(3), [15, 16, 17, 18, 19, 20]);
        // Exactly seq_len + 1 tokens make one sequence.
        assert_eq!(counting_dataset(6, 5).num_sequences(), 1);
    }

    #[test]
    fn reads_u16_tokens() {
        let dataset = Dataset {
            token_width: 2,
            tokens: [7u16, 65535, 0].iter().flat_map(|id| id.to_le_bytes()).collect(),
            ..Arc::into_inner(counting_dataset(0, 2)).unwrap()
        };
        assert_eq!(dataset.sequence(0), [7, 65535, 0]);
    }

    #[test]
    fn shuffles_by_seed_and_epoch() {
        let order = epoch_permutation(1000, 7, 0);
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..1000).collect::<Vec<u64>>());
        assert_ne!(order, sorted, "a shuffle of 1000 that leaves them in order");
        assert_eq!(order, epoch_permutation(1000, 7, 0));
        assert_ne!(order, epoch_permutation(1000, 8, 0));
        assert_ne!(order, epoch_permutation(1000, 7, 1));
        assert_eq!(epoch_permutation(1, 7, 0), [0]);
        assert!(epoch_permutation(0, 7, 0).is_empty());
    }

    #[test]
    fn an_epoch_visits_distinct_sequences_and_drops_the_tail() {
        let dataset = counting_dataset(41, 4);
        assert_eq!(dataset.num_sequences(), 10);
        let mut iter = BatchIter::new(dataset.clone(), 3, 1, DataPosition::default()).unwrap();
        assert_eq!(iter.batches_per_epoch(), 3);
        let mut firsts = Vec::new();
        let mut positions = Vec::new();
        for _ in 0..3 {
            let batch = iter.next_batch().unwrap();
            assert_eq!(batch.tokens.dims(), [3, 5]);
            for row in rows(&batch.tokens) {
                assert_eq!(row[0] % 4, 0);
                assert_eq!(row.windows(2).filter(|pair| pair[1] != pair[0] + 1).count(), 0);
                firsts.push(row[0]);
            }
            positions.push(batch.position);
        }
        firsts.sort_unstable();
        firsts.dedup();
        assert_eq!(firsts.len(), 9);
        assert_eq!(
            positions,
            [
                DataPosition { epoch: 0, index: 1 },
                DataPosition { epoch: 0, index: 2 },
                DataPosition { epoch: 1, index: 0 }
            ]
        );
    }

    #[test]
    fn resuming_from_any_position_continues_the_same_stream() {
        let dataset = counting_dataset(301, 4);
        let mut uninterrupted = BatchIter::new(dataset.clone(), 7, 42, DataPosition::default()).unwrap();
        assert_eq!(uninterrupted.batches_per_epoch(), 10);
        let stream: Vec<Batch> = (0..25).map(|_| uninterrupted.next_batch().unwrap()).collect();
        // Resume after every batch: mid-epoch, at the last batch of an epoch, and at epoch starts.
        for (done, batch) in stream.iter().enumerate() {
            let mut resumed = BatchIter::new(dataset.clone(), 7, 42, batch.position).unwrap();
            for expected in &stream[done + 1..] {
                let next = resumed.next_batch().unwrap();
                assert_eq!(next.tokens, expected.tokens, "resumed at {:?}", batch.position);
                assert_eq!(next.position, expected.position);
            }
        }
        assert_ne!(stream[0].tokens, stream[10].tokens, "epochs 0 and 1 start alike");
    }

    #[test]
    fn refuses_batches_the_data_cannot_fill() {
        let dataset = counting_dataset(41, 4);
        let error = BatchIter::new(dataset.clone(), 11, 0, DataPosition::default()).err().unwrap();
        assert!(error
            .to_string()
            .contains("split `test` has 10 sequences of 4 tokens, fewer than one batch of 11"));
        let error = BatchIter::new(dataset.clone(), 3, 0, DataPosition { epoch: 2, index: 3 }).err().unwrap();
        assert!(error.to_string().contains("(epoch 2, batch 3) is past the 3 batches"), "{error}");
        assert!(BatchIter::new(dataset, 0, 0, DataPosition::default()).is_err());
    }

    #[test]
    fn prefetcher_yields_the_iterators_batches() {
        let dataset = counting_dataset(301, 4);
        let mut iter = BatchIter::new(dataset.clone(), 7, 3, DataPosition::default()).unwrap();
        let expected: Vec<Batch> = (0..15).map(|_| iter.next_batch().unwrap()).collect();
        let start = DataPosition::default();
        let mut prefetcher = Prefetcher::spawn(BatchIter::new(dataset.clone(), 7, 3, start).unwrap(), 2);
        for batch in &expected {
            let (got, _wait) = prefetcher.next_blocking().unwrap();
            assert_eq!((got.tokens, got.position), (batch.tokens.clone(), batch.position));
        }
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let mut prefetcher = Prefetcher::spawn(BatchIter::new(dataset, 7, 3, start).unwrap(), 0);
        runtime.block_on(async {
            for batch in &expected {
                let (got, _wait) = prefetcher.next().await.unwrap();
                assert_eq!(got.tokens, batch.tokens);
            }
        });
    }

    #[test]
    fn dropping_a_full_prefetcher_stops_its_thread() {
        let dataset = counting_dataset(301, 4);
        let prefetcher =
            Prefetcher::spawn(BatchIter::new(dataset, 7, 3, DataPosition::default()).unwrap(), 1);
        std::thread::sleep(Duration::from_millis(20));
        // The thread is blocked on a full channel; drop must wake and join it.
        drop(prefetcher);
    }

    #[test]
    fn eval_batches_are_the_first_sequences_in_order() {
        let dataset = counting_dataset(41, 4);
        let batches = eval_batches(&dataset, 3, 8);
        assert_eq!(batches.len(), 3);
        let firsts: Vec<i32> = batches.iter().flat_map(rows).map(|row| row[0]).collect();
        assert_eq!(firsts, [0, 4, 8, 12, 16, 20, 24, 28, 32]);
        assert_eq!(eval_batches(&dataset, 3, 2).len(), 2);
        assert!(eval_batches(&dataset, 11, 2).is_empty());
        assert!(eval_batches(&dataset, 0, 2).is_empty());
    }
}
