//! A device for crash testing: it keeps what reads see (the *live* image)
//! apart from what would survive a power failure (the *persisted* image), and
//! rebuilds the image a crash could leave at any persist point.
//!
//! # Persistence model (x86 persistent memory)
//!
//! Memory is a sequence of 8-byte aligned words; an aligned 8-byte store is
//! atomic, so a crash leaves every word either at its durable value or at a
//! value stored later, never a mix of the two.
//!
//! - A store lands in the live image at once. A word whose live value differs
//!   from its persisted value is *pending*: the cache may write it back at any
//!   time, so a crash may or may not keep it.
//! - [`Device::flush`] of a range captures the current live value of each
//!   pending word in it (only the words of the range, rounded out to whole
//!   words, not whole cache lines: the model assumes no more than was asked).
//! - [`Device::fence`] makes every captured value durable (copies it into the
//!   persisted image) and counts a persist point. Fences are numbered
//!   0, 1, 2, ... in call order. A word stored again after its flush stays
//!   pending with its newer value, while the captured value becomes durable.
//! - The crash image *after fence k* is the persisted image right after
//!   fence k plus any subset of the words pending at that moment (flushed or
//!   not, with their live values at that moment). The image *before fence k*
//!   is the same with the persisted image of fence k - 1 (the flushes of
//!   fence k not yet waited for).
//!
//! Simplifications: only the latest value of a pending word at a fence is
//! offered, not values overwritten before it; a fence makes the flushes of
//! every thread durable (real SFENCE covers the calling thread's only).
//!
//! # Recording
//!
//! Alongside the live and persisted images the device keeps the initial
//! image and an append-only log. For each fence it appends (a) the words
//! made durable with their values and (b) the words whose live value changed
//! since the previous fence, with their live values at this fence. Stores that
//! leave a word's value unchanged are not logged. [`CrashReplay`] rebuilds
//! the live and persisted images of any fence by replaying the log from the
//! initial image; stepping forward fence by fence costs only the log entries
//! passed.
//!
//! # Invariants
//!
//! - All state sits behind one mutex; every operation takes it once, so a
//!   store and its log entry are never seen apart.
//! - The internal images are padded to whole words; the padding is never
//!   written and never returned.
//!
//! # Media errors
//!
//! The device keeps a set of bad pages like the others, checked before every
//! access (the images are ordinary buffers, not mappings that could be made
//! inaccessible). A recovery write ([`Device::clear_error`]) is recorded as a
//! store followed by a persist (a fence). The crash images ignore media
//! errors: they hold the bytes that were stored, bad pages included;
//! [`CrashDevice::image`] gives zeros for bad pages, as reads cannot see
//! them.
use crate::media::{BAD_BLOCK_SIZE, Holder, Media, Medium};
use crate::{Device, FailureFlags, FlushInstr, MemDevice, PersistMode, Result, check_range};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// Which pending words a crash image keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subset {
    /// None: the image is exactly the persisted image.
    None,
    /// All: the image equals what reads saw at that moment.
    All,
    /// Each pending word kept or dropped by a coin flip drawn from a
    /// generator seeded with this value (the same seed gives the same image).
    Random(u64),
}

/// Log entries of one fence: `[.._end)` ranges into the shared vectors.
#[derive(Clone, Copy, Debug)]
struct FenceRec {
    stores_end: usize,
    durable_end: usize,
}

#[derive(Debug)]
struct State {
    live: Vec<u8>,
    persisted: Vec<u8>,
    initial: Vec<u8>,
    /// Words flushed since the last fence, with the value captured.
    flushed: HashMap<u64, u64>,
    /// Words whose live value changed since the last fence (no duplicates).
    dirty: Vec<u64>,
    /// Bitmap of `dirty`.
    dirty_bits: Vec<u64>,
    /// Log: (word, live value at its fence) for changed words.
    stores: Vec<(u64, u64)>,
    /// Log: (word, value made durable) per fence.
    durable: Vec<(u64, u64)>,
    fences: Vec<FenceRec>,
    /// Bumped by [`CrashDevice::reset_recording`], so that replays notice.
    generation: u64,
}

fn word(buf: &[u8], w: u64) -> u64 {
    let at = w as usize * 8;
    u64::from_le_bytes(buf[at..at + 8].try_into().expect("8 bytes"))
}

fn set_word(buf: &mut [u8], w: u64, v: u64) {
    let at = w as usize * 8;
    buf[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

impl State {
    fn mark_dirty(&mut self, w: u64) {
        let (i, bit) = ((w / 64) as usize, 1u64 << (w % 64));
        if self.dirty_bits[i] & bit == 0 {
            self.dirty_bits[i] |= bit;
            self.dirty.push(w);
        }
    }

    /// Applies `f` to the bytes `[off, off + len)` of the live image, word by
    /// word, and marks the words whose value changed.
    fn store(&mut self, off: usize, len: usize, mut f: impl FnMut(&mut [u8], usize)) {
        let end = off + len;
        let mut o = off;
        while o < end {
            let w = (o / 8) as u64;
            let n = (8 - o % 8).min(end - o);
            let old = word(&self.live, w);
            f(&mut self.live[o..o + n], o - off);
            if word(&self.live, w) != old {
                self.mark_dirty(w);
            }
            o += n;
        }
    }
}

/// A volatile device that records persistence for crash testing. See the
/// module documentation for the model.
///
/// Typical use: run a workload against it (as `Arc<CrashDevice>` or
/// `&dyn Device`), then for each `k < fences()` mount
/// [`CrashDevice::crash_device`]`(k, subset)` and check recovery; or walk all
/// fences cheaply with [`CrashDevice::replay`].
#[derive(Debug)]
pub struct CrashDevice {
    len: u64,
    state: Mutex<State>,
    media: Media,
}

impl CrashDevice {
    /// A zero-filled device of `size` bytes, everything durable.
    pub fn new(size: u64) -> Self {
        let len = usize::try_from(size).expect("device size exceeds the address space");
        Self::from_image(vec![0; len])
    }

    /// A device holding `image`, all of it durable.
    pub fn from_image(mut image: Vec<u8>) -> Self {
        let len = image.len() as u64;
        image.resize(image.len().next_multiple_of(8), 0);
        let words = image.len() / 8;
        CrashDevice {
            len,
            media: Media::new(len, None),
            state: Mutex::new(State {
                live: image.clone(),
                persisted: image.clone(),
                initial: image,
                flushed: HashMap::new(),
                dirty: Vec::new(),
                dirty_bits: vec![0; words.div_ceil(64)],
                stores: Vec::new(),
                durable: Vec::new(),
                fences: Vec::new(),
                generation: 0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many fences (persist points) have been recorded.
    pub fn fences(&self) -> usize {
        self.lock().fences.len()
    }

    /// A copy of the live image (what reads see now; bad pages, which reads
    /// cannot see, as zeros).
    pub fn image(&self) -> Vec<u8> {
        let bad = self.media.bad_ranges();
        let mut out = self.lock().live[..self.len as usize].to_vec();
        for (off, len) in bad {
            out[off as usize..(off + len) as usize].fill(0);
        }
        out
    }

    /// A copy of the persisted image now: what survives a crash now for
    /// certain.
    pub fn persisted_image(&self) -> Vec<u8> {
        self.lock().persisted[..self.len as usize].to_vec()
    }

    /// Treats the live image as fully durable and starts a new recording:
    /// the log and the fence count are cleared. Use it after setting up a
    /// starting state whose persist points are not of interest. Replays
    /// made before must not be used afterwards (they panic).
    pub fn reset_recording(&self) {
        let mut s = self.lock();
        let s = &mut *s;
        s.persisted.copy_from_slice(&s.live);
        s.initial.copy_from_slice(&s.live);
        s.flushed.clear();
        s.dirty.clear();
        s.dirty_bits.fill(0);
        s.stores = Vec::new();
        s.durable = Vec::new();
        s.fences = Vec::new();
        s.generation += 1;
    }

    /// A replay positioned at the start of the recording (live and persisted
    /// images both the initial image).
    pub fn replay(&self) -> CrashReplay<'_> {
        let s = self.lock();
        CrashReplay {
            dev: self,
            generation: s.generation,
            live: s.initial.clone(),
            persisted: s.initial.clone(),
            steps: 0,
        }
    }

    /// The image a crash right after fence `k` could leave, keeping `subset`
    /// of the words pending then. Panics if `k >= self.fences()`.
    pub fn crash_image(&self, k: usize, subset: Subset) -> Vec<u8> {
        let mut r = self.replay();
        r.seek_after_fence(k);
        r.image(subset)
    }

    /// The image a crash right before fence `k` (after every store and flush
    /// that precede it) could leave. Panics if `k >= self.fences()`.
    pub fn crash_image_before_fence(&self, k: usize, subset: Subset) -> Vec<u8> {
        let mut r = self.replay();
        r.seek_before_fence(k);
        r.image(subset)
    }

    /// [`CrashDevice::crash_image`] as a fresh [`MemDevice`].
    pub fn crash_device(&self, k: usize, subset: Subset) -> MemDevice {
        MemDevice::from_image(self.crash_image(k, subset))
    }

    /// The image a crash now could leave (including stores after the last
    /// fence).
    pub fn crash_image_now(&self, subset: Subset) -> Vec<u8> {
        let s = self.lock();
        combine(&s.live, &s.persisted, self.len, subset)
    }

    /// Bytes of log recorded so far (for keeping an eye on memory use).
    pub fn log_bytes(&self) -> usize {
        let s = self.lock();
        (s.stores.len() + s.durable.len()) * 16 + s.fences.len() * std::mem::size_of::<FenceRec>()
    }
}

/// Builds a crash image from the live and persisted images.
fn combine(live: &[u8], persisted: &[u8], len: u64, subset: Subset) -> Vec<u8> {
    let mut out = match subset {
        Subset::None => persisted.to_vec(),
        Subset::All => live.to_vec(),
        Subset::Random(seed) => {
            let mut rng = SplitMix64(seed);
            let mut out = persisted.to_vec();
            for w in 0..(live.len() / 8) as u64 {
                let v = word(live, w);
                if v != word(persisted, w) && rng.next() & 1 == 1 {
                    set_word(&mut out, w, v);
                }
            }
            out
        }
    };
    out.truncate(len as usize);
    out
}

/// A small deterministic generator (SplitMix64) for [`Subset::Random`].
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl Device for CrashDevice {
    fn len(&self) -> u64 {
        self.len
    }

    fn read(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        check_range(off, buf.len() as u64, self.len)?;
        self.media.check_read(off, buf.len() as u64)?;
        let s = self.lock();
        crate::mcsafe::read_slice(buf, &s.live[off as usize..off as usize + buf.len()]);
        Ok(())
    }

    fn write(&self, off: u64, data: &[u8]) -> Result<()> {
        check_range(off, data.len() as u64, self.len)?;
        self.media.check_write(off, data.len() as u64)?;
        self.store_unchecked(off, data);
        Ok(())
    }

    fn fill(&self, off: u64, len: u64, byte: u8) -> Result<()> {
        check_range(off, len, self.len)?;
        self.media.check_write(off, len)?;
        self.lock()
            .store(off as usize, len as usize, |dst, _| dst.fill(byte));
        Ok(())
    }

    /// Captures the live values of the pending words of the range (clamped
    /// to the device).
    fn flush(&self, off: u64, len: u64) {
        if off >= self.len || len == 0 {
            return;
        }
        let end = off.saturating_add(len).min(self.len);
        let mut s = self.lock();
        let s = &mut *s;
        for w in off / 8..end.div_ceil(8) {
            let v = word(&s.live, w);
            if v != word(&s.persisted, w) || s.flushed.contains_key(&w) {
                s.flushed.insert(w, v);
            }
        }
    }

    /// Makes the captured values durable and records a persist point.
    fn fence(&self) {
        let mut s = self.lock();
        let s = &mut *s;
        let mut made_durable: Vec<(u64, u64)> = s.flushed.drain().collect();
        made_durable.sort_unstable();
        for &(w, v) in &made_durable {
            set_word(&mut s.persisted, w, v);
        }
        s.durable.extend(made_durable);
        s.dirty.sort_unstable();
        for &w in &s.dirty {
            s.stores.push((w, word(&s.live, w)));
            s.dirty_bits[(w / 64) as usize] &= !(1u64 << (w % 64));
        }
        s.dirty.clear();
        s.fences.push(FenceRec {
            stores_end: s.stores.len(),
            durable_end: s.durable.len(),
        });
    }

    /// Reports persistence by CLWB: the device emulates persistent memory,
    /// so callers must flush and fence as they would there.
    fn mode(&self) -> PersistMode {
        PersistMode::CpuFlush(FlushInstr::Clwb)
    }

    fn describe(&self) -> String {
        format!(
            "crash-test memory (emulated persistence, {} fences recorded)",
            self.fences()
        )
    }

    fn inject_error(&self, off: u64, len: u64) -> Result<()> {
        self.media
            .add(self, &[(off, len)], FailureFlags::BACKGROUND)
    }

    fn import_bad_ranges(&self, ranges: &[(u64, u64)]) -> Result<()> {
        self.media.add(self, ranges, FailureFlags::BACKGROUND)
    }

    fn bad_ranges(&self) -> Vec<(u64, u64)> {
        self.media.bad_ranges()
    }

    fn clear_error(&self, off: u64, data: &[u8]) -> Result<()> {
        self.media.clear(self, off, data)
    }

    fn set_holder(&self, holder: Arc<dyn Holder>) -> Result<()> {
        self.media.set_holder(holder)
    }

    fn clear_holder(&self) -> Option<Arc<dyn Holder>> {
        self.media.clear_holder()
    }

    fn remove(&self) -> Result<()> {
        self.media.remove()
    }
}

impl CrashDevice {
    /// Stores `data` at `off` (checked to be in range) into the live image.
    fn store_unchecked(&self, off: u64, data: &[u8]) {
        self.lock().store(off as usize, data.len(), |dst, at| {
            dst.copy_from_slice(&data[at..at + dst.len()])
        });
    }
}

impl Medium for CrashDevice {
    /// The images are plain buffers: reads check the bad set instead.
    fn set_access(&self, _off: u64, _len: u64, _accessible: bool) -> bool {
        false
    }
    fn write_through(&self, off: u64, data: &[u8]) -> Result<()> {
        check_range(off, data.len() as u64, self.len)?;
        self.store_unchecked(off, data);
        Ok(())
    }
    fn persist_range(&self, off: u64, len: u64) {
        self.persist(off, len);
    }
}

const _: u64 = BAD_BLOCK_SIZE;

/// Rebuilds the live and persisted images of a [`CrashDevice`] at its
/// recorded fences, stepping forward through the log (seeking backwards
/// restarts from the initial image).
#[derive(Debug)]
pub struct CrashReplay<'a> {
    dev: &'a CrashDevice,
    generation: u64,
    live: Vec<u8>,
    persisted: Vec<u8>,
    /// Half-steps applied: step `2k` applies the stores of fence `k`, step
    /// `2k + 1` its durable words. So `2k + 1` steps = before fence `k`,
    /// `2k + 2` steps = after fence `k`.
    steps: usize,
}

impl CrashReplay<'_> {
    fn go_to(&mut self, target: usize) {
        let s = self.dev.lock();
        assert_eq!(
            s.generation, self.generation,
            "the recording was reset during the replay"
        );
        assert!(
            target <= 2 * s.fences.len(),
            "no such fence: {} recorded",
            s.fences.len()
        );
        if target < self.steps {
            self.live.copy_from_slice(&s.initial);
            self.persisted.copy_from_slice(&s.initial);
            self.steps = 0;
        }
        while self.steps < target {
            let k = self.steps / 2;
            let (stores_start, durable_start) = if k == 0 {
                (0, 0)
            } else {
                (s.fences[k - 1].stores_end, s.fences[k - 1].durable_end)
            };
            if self.steps.is_multiple_of(2) {
                for &(w, v) in &s.stores[stores_start..s.fences[k].stores_end] {
                    set_word(&mut self.live, w, v);
                }
            } else {
                for &(w, v) in &s.durable[durable_start..s.fences[k].durable_end] {
                    set_word(&mut self.persisted, w, v);
                }
            }
            self.steps += 1;
        }
    }

    /// Moves to the moment right after fence `k`. Panics if there is no such
    /// fence.
    pub fn seek_after_fence(&mut self, k: usize) {
        self.go_to(2 * k + 2);
    }

    /// Moves to the moment right before fence `k`: its stores and flushes
    /// done, nothing of it made durable yet. Panics if there is no such
    /// fence.
    pub fn seek_before_fence(&mut self, k: usize) {
        self.go_to(2 * k + 1);
    }

    /// Moves to right after the next fence and returns its index, or `None`
    /// when the last fence has been passed. Starting from a fresh replay
    /// this visits fences 0, 1, 2, ...
    pub fn next_fence(&mut self) -> Option<usize> {
        let k = self.steps / 2;
        if k >= self.dev.fences() {
            return None;
        }
        self.go_to(2 * k + 2);
        Some(k)
    }

    /// The crash image at the current position.
    pub fn image(&self, subset: Subset) -> Vec<u8> {
        combine(&self.live, &self.persisted, self.dev.len, subset)
    }

    /// The crash image at the current position as a fresh [`MemDevice`].
    pub fn device(&self, subset: Subset) -> MemDevice {
        MemDevice::from_image(self.image(subset))
    }

    /// Device offsets (multiples of 8) of the words pending at the current
    /// position: those a crash may or may not keep.
    pub fn pending_offsets(&self) -> Vec<u64> {
        (0..(self.live.len() / 8) as u64)
            .filter(|&w| word(&self.live, w) != word(&self.persisted, w))
            .map(|w| w * 8)
            .collect()
    }

    /// The crash image keeping exactly the pending words at the given
    /// offsets (as returned by [`CrashReplay::pending_offsets`]); other
    /// offsets are ignored.
    pub fn image_with(&self, keep: &[u64]) -> Vec<u8> {
        let mut out = self.persisted.clone();
        for &off in keep {
            let w = off / 8;
            if off % 8 == 0 && (w as usize) < self.live.len() / 8 {
                set_word(&mut out, w, word(&self.live, w));
            }
        }
        out.truncate(self.dev.len as usize);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(img: &[u8], off: usize) -> u64 {
        u64::from_le_bytes(img[off..off + 8].try_into().unwrap())
    }

    fn put(dev: &CrashDevice, off: u64, v: u64) {
        dev.write(off, &v.to_le_bytes()).unwrap();
    }

    #[test]
    fn unflushed_store_may_or_may_not_survive() {
        let dev = CrashDevice::new(4096);
        put(&dev, 0, 0x1111);
        dev.fence();
        assert_eq!(dev.fences(), 1);
        let none = dev.crash_image(0, Subset::None);
        let all = dev.crash_image(0, Subset::All);
        assert_eq!(w(&none, 0), 0);
        assert_eq!(w(&all, 0), 0x1111);
        assert_ne!(none, all);
        // Reads see the store all along.
        let mut b = [0u8; 8];
        dev.read(0, &mut b).unwrap();
        assert_eq!(u64::from_le_bytes(b), 0x1111);
    }

    #[test]
    fn flushed_and_fenced_store_survives_every_crash() {
        let dev = CrashDevice::new(4096);
        put(&dev, 64, 0xabcd);
        dev.persist(64, 8);
        for subset in [
            Subset::None,
            Subset::All,
            Subset::Random(1),
            Subset::Random(2),
        ] {
            assert_eq!(w(&dev.crash_image(0, subset), 64), 0xabcd);
        }
        // Before that fence it was not yet guaranteed.
        assert_eq!(w(&dev.crash_image_before_fence(0, Subset::None), 64), 0);
        assert_eq!(w(&dev.crash_image_before_fence(0, Subset::All), 64), 0xabcd);
        assert_eq!(dev.persisted_image(), dev.image());
    }

    /// A scripted sequence, with the expected durable and possible values of
    /// each word at each fence.
    #[test]
    fn images_at_each_fence() {
        let dev = CrashDevice::new(64);
        // Fence 0: word 0 = A made durable.
        put(&dev, 0, 0xA);
        dev.persist(0, 8);
        // Fence 1: word 1 = B flushed, word 2 = C not flushed.
        put(&dev, 8, 0xB);
        dev.flush(8, 8);
        put(&dev, 16, 0xC);
        dev.fence();
        // Fence 2: word 0 overwritten with D, nothing flushed.
        put(&dev, 0, 0xD);
        dev.fence();
        // Fence 3: flush everything.
        dev.persist(0, 64);
        // Fence 4: word 3 = E flushed, then overwritten with F before the fence.
        put(&dev, 24, 0xE);
        dev.flush(24, 8);
        put(&dev, 24, 0xF);
        dev.fence();
        assert_eq!(dev.fences(), 5);

        // (fence, None image words 0..4, All image words 0..4)
        let expect: [(usize, [u64; 4], [u64; 4]); 5] = [
            (0, [0xA, 0, 0, 0], [0xA, 0, 0, 0]),
            (1, [0xA, 0xB, 0, 0], [0xA, 0xB, 0xC, 0]),
            (2, [0xA, 0xB, 0, 0], [0xD, 0xB, 0xC, 0]),
            (3, [0xD, 0xB, 0xC, 0], [0xD, 0xB, 0xC, 0]),
            (4, [0xD, 0xB, 0xC, 0xE], [0xD, 0xB, 0xC, 0xF]),
        ];
        let words = |img: &[u8]| [w(img, 0), w(img, 8), w(img, 16), w(img, 24)];
        for (k, none, all) in expect {
            assert_eq!(
                words(&dev.crash_image(k, Subset::None)),
                none,
                "fence {k} None"
            );
            assert_eq!(
                words(&dev.crash_image(k, Subset::All)),
                all,
                "fence {k} All"
            );
        }
        // Before fence 1: B flushed but not yet durable.
        assert_eq!(
            words(&dev.crash_image_before_fence(1, Subset::None)),
            [0xA, 0, 0, 0]
        );
        assert_eq!(
            words(&dev.crash_image_before_fence(1, Subset::All)),
            [0xA, 0xB, 0xC, 0]
        );
        // Before fence 4: E captured, not durable; F live.
        assert_eq!(
            words(&dev.crash_image_before_fence(4, Subset::None)),
            [0xD, 0xB, 0xC, 0]
        );
        assert_eq!(
            words(&dev.crash_image_before_fence(4, Subset::All)),
            [0xD, 0xB, 0xC, 0xF]
        );

        // The replay visits the same images in order, and can seek back.
        let mut r = dev.replay();
        let mut seen = Vec::new();
        while let Some(k) = r.next_fence() {
            assert_eq!(r.image(Subset::None), dev.crash_image(k, Subset::None));
            assert_eq!(r.image(Subset::All), dev.crash_image(k, Subset::All));
            seen.push(k);
        }
        assert_eq!(seen, [0, 1, 2, 3, 4]);
        r.seek_after_fence(2);
        assert_eq!(r.pending_offsets(), [0, 16]);
        assert_eq!(words(&r.image_with(&[16])), [0xA, 0xB, 0xC, 0]);
        assert_eq!(words(&r.image_with(&[0, 3, 9999])), [0xD, 0xB, 0, 0]);
        assert_eq!(words(&r.device(Subset::All).image()), [0xD, 0xB, 0xC, 0]);
        r.seek_before_fence(0);
        assert_eq!(r.pending_offsets(), [0]);
        assert_eq!(
            words(&dev.crash_device(3, Subset::None).image()),
            [0xD, 0xB, 0xC, 0]
        );

        // Now: after the last fence nothing else happened.
        assert_eq!(
            dev.crash_image_now(Subset::None),
            dev.crash_image(4, Subset::None)
        );
        put(&dev, 32, 0x99);
        assert_eq!(w(&dev.crash_image_now(Subset::All), 32), 0x99);
        assert_eq!(w(&dev.crash_image_now(Subset::None), 32), 0);
    }

    #[test]
    fn flush_covers_the_words_of_its_range_only() {
        let dev = CrashDevice::new(128);
        dev.write(0, &[1; 24]).unwrap();
        // Bytes 3..5 lie in word 0 only; word 1 shares the cache line but the
        // model does not assume it is written back.
        dev.flush(3, 2);
        // A flush past the end is clamped.
        dev.write(120, &[2; 8]).unwrap();
        dev.flush(124, u64::MAX);
        dev.flush(500, 8);
        dev.fence();
        let img = dev.crash_image(0, Subset::None);
        assert_eq!(img[..8], [1; 8]);
        assert_eq!(img[8..24], [0; 16]);
        assert_eq!(img[120..], [2; 8]);
    }

    #[test]
    fn random_subsets_keep_whole_words() {
        // Persisted pattern: every byte 0x11; then stores of various shapes.
        let dev = CrashDevice::from_image(vec![0x11; 8192]);
        for i in 0..512u64 {
            put(&dev, i * 8, 0xdead_0000 + i);
        }
        dev.write(4096 + 5, &[0xee; 7]).unwrap(); // spans words 512 and 513
        dev.fill(5000, 100, 0x77).unwrap();
        dev.flush(0, 64); // words 0..8 become durable
        dev.fence();
        let old = dev.crash_image(0, Subset::None);
        let new = dev.crash_image(0, Subset::All);
        assert_eq!(new, dev.image());
        let mut r = dev.replay();
        r.seek_after_fence(0);
        let pending = r.pending_offsets();
        assert!(pending.len() > 500);
        let (mut kept, mut dropped) = (0, 0);
        for seed in 0..40 {
            let img = dev.crash_image(0, Subset::Random(seed));
            assert_eq!(
                img,
                dev.crash_image(0, Subset::Random(seed)),
                "deterministic"
            );
            for o in (0..img.len()).step_by(8) {
                let got = &img[o..o + 8];
                if got == &new[o..o + 8] && got != &old[o..o + 8] {
                    kept += 1;
                } else if got == &old[o..o + 8] && got != &new[o..o + 8] {
                    dropped += 1;
                } else {
                    assert!(got == &old[o..o + 8], "word at {o} is a mix: {got:?}");
                }
                if o < 64 {
                    assert_eq!(got, &new[o..o + 8], "flushed and fenced words are durable");
                }
            }
        }
        assert!(
            kept > 1000 && dropped > 1000,
            "kept {kept}, dropped {dropped}"
        );
        assert_ne!(
            dev.crash_image(0, Subset::Random(1)),
            dev.crash_image(0, Subset::Random(2))
        );
    }

    #[test]
    fn unchanged_stores_are_not_recorded() {
        let dev = CrashDevice::new(1 << 20);
        dev.fill(0, 1 << 20, 0).unwrap();
        dev.write(4096, &[0; 4096]).unwrap();
        dev.persist(0, 1 << 20);
        assert_eq!(dev.log_bytes(), std::mem::size_of::<FenceRec>());
        // A store undone before the fence leaves nothing pending.
        put(&dev, 8, 5);
        put(&dev, 8, 0);
        dev.fence();
        let mut r = dev.replay();
        r.seek_after_fence(1);
        assert!(r.pending_offsets().is_empty());
    }

    #[test]
    fn reset_recording_makes_everything_durable() {
        let dev = CrashDevice::new(4096);
        put(&dev, 0, 7);
        dev.fence();
        dev.reset_recording();
        assert_eq!(dev.fences(), 0);
        assert_eq!(dev.persisted_image(), dev.image());
        put(&dev, 8, 9);
        dev.fence();
        let img = dev.crash_image(0, Subset::None);
        assert_eq!((w(&img, 0), w(&img, 8)), (7, 0));
    }

    #[test]
    #[should_panic(expected = "no such fence")]
    fn crash_image_past_the_last_fence_panics() {
        let dev = CrashDevice::new(64);
        dev.fence();
        dev.crash_image(1, Subset::None);
    }

    #[test]
    fn odd_sizes_and_ranges() {
        let dev = CrashDevice::new(13);
        assert_eq!(dev.len(), 13);
        dev.write(9, &[1, 2, 3, 4]).unwrap();
        assert!(dev.write(10, &[1, 2, 3, 4]).is_err());
        assert!(dev.fill(0, 14, 0).is_err());
        let mut b = [0u8; 2];
        assert!(dev.read(12, &mut b).is_err());
        dev.persist(0, 13);
        let img = dev.crash_image(0, Subset::None);
        assert_eq!(img.len(), 13);
        assert_eq!(img[9..], [1, 2, 3, 4]);
        assert!(dev.describe().contains("1 fences"));
        // The default u64 accessors work on the word model too.
        dev.write_u64(0, 42).unwrap();
        assert_eq!(dev.read_u64(0).unwrap(), 42);
        assert!(dev.write_u64(6, 1).is_err());
        assert!(matches!(dev.mode(), PersistMode::CpuFlush(_)));
    }
}
