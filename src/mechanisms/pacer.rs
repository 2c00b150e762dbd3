//! How a received file is written: through the page cache, as cp does, or around it with
//! `O_DIRECT` where the page cache measures slower (`recv --direct=WHEN`).

use std::fs::File;
use std::io;
use std::time::Instant;

use tracing::debug;

use crate::sysv::Source;

/// When to write around the page cache with O_DIRECT.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum DirectMode {
    /// Through the page cache, switching a large file to O_DIRECT if that measures faster
    #[default]
    Auto,
    /// O_DIRECT for every whole slot (the unaligned tail goes through the page cache)
    Always,
    /// Always through the page cache, as cp does
    Never,
}

/// Picks the write path of one file: the page cache, or around it with O_DIRECT
/// (`--direct=WHEN`). In `auto` a file starts in the page cache, as with cp. When a window of
/// whole-slot writes runs slower than 2 GB/s (well under memory speed, so page allocation
/// costs more than the copy: a VM whose host takes freed memory back, or dirty-page
/// throttling), the next few slots go O_DIRECT as a probe, and the rest of the file goes direct
/// if the probe ran at least 1.25 times as fast. A lost probe (a slow disk, or one unlucky
/// write) is tried again only after 32 MiB, then 64, 128…, so it costs little either way.
/// Pure: fed lengths and times, unit-tested.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pacer {
    /// Page cache, timing whole-slot writes; `skip` bytes go untimed first (after `losses`
    /// lost probes).
    Watching {
        /// What the page cache achieved so far.
        page_cache: Tally,
        /// Bytes still to write before timing.
        skip: u64,
        /// Probes lost so far.
        losses: u32,
    },
    /// Direct writes being timed, to be compared with the page-cache window that triggered
    /// the probe.
    Probing {
        /// The page-cache window that triggered the probe.
        page_cache: Tally,
        /// The direct writes so far.
        direct: Tally,
        /// Probes lost before this one.
        losses: u32,
    },
    /// O_DIRECT for the rest of the file (or until a write cannot be aligned).
    Direct,
    /// Page cache for the rest of the file.
    Buffered,
}

/// Bytes written and the nanoseconds they took.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    bytes: u64,
    nanos: u64,
}

impl Tally {
    fn add(self, bytes: u64, nanos: u64) -> Tally {
        Tally {
            bytes: self.bytes + bytes,
            nanos: self.nanos.saturating_add(nanos),
        }
    }
    /// Whether this ran at least `num/den` times as fast as `other`, in integers.
    fn faster(self, other: Tally, num: u128, den: u128) -> bool {
        den * u128::from(self.bytes) * u128::from(other.nanos)
            >= num * u128::from(other.bytes) * u128::from(self.nanos)
    }
    fn mb_per_s(self) -> u64 {
        (u128::from(self.bytes) * 1000 / u128::from(self.nanos.max(1))) as u64
    }
}

impl Pacer {
    /// Page-cache bytes timed before judging: long enough to average out one descheduling.
    const WINDOW: u64 = 8 << 20;
    /// Direct bytes timed before judging: the first direct write pays for more than its share.
    const PROBE: u64 = 4 << 20;
    /// Page-cache bytes written after a first lost probe before the next; doubles each time.
    const BACKOFF: u64 = 32 << 20;
    /// Below this the page cache is slow: 2 GB/s, 2 bytes per nanosecond.
    const SLOW: Tally = Tally { bytes: 2, nanos: 1 };

    /// The pacing a file starts with under `mode`.
    pub(crate) fn new(mode: DirectMode) -> Self {
        match mode {
            DirectMode::Auto => Self::watching(0, 0),
            DirectMode::Always => Pacer::Direct,
            DirectMode::Never => Pacer::Buffered,
        }
    }

    fn watching(skip: u64, losses: u32) -> Self {
        Pacer::Watching {
            page_cache: Tally::default(),
            skip,
            losses,
        }
    }

    /// Whether the next write goes direct; `fits` says it meets O_DIRECT's alignment. A write
    /// that does not fit is the file's tail or an odd slot size: the rest stays buffered.
    fn wants_direct(&mut self, fits: bool) -> bool {
        if !fits {
            *self = Pacer::Buffered;
        }
        matches!(self, Pacer::Probing { .. } | Pacer::Direct)
    }

    /// Accounts one write of `len` bytes that took `ns`, made the way `wants_direct` said.
    fn record(&mut self, len: u64, ns: u64) {
        *self = match *self {
            Pacer::Watching { skip, losses, .. } if skip > 0 => {
                Self::watching(skip.saturating_sub(len), losses)
            }
            Pacer::Watching {
                page_cache, losses, ..
            } => {
                let page_cache = page_cache.add(len, ns);
                if page_cache.bytes < Self::WINDOW {
                    Pacer::Watching {
                        page_cache,
                        skip: 0,
                        losses,
                    }
                } else if !page_cache.faster(Self::SLOW, 1, 1) {
                    let direct = Tally::default();
                    Pacer::Probing {
                        page_cache,
                        direct,
                        losses,
                    }
                } else {
                    // Fast so far; memory can turn dear mid-file, so keep watching.
                    Self::watching(0, losses)
                }
            }
            Pacer::Probing {
                page_cache,
                direct,
                losses,
            } => {
                let direct = direct.add(len, ns);
                if direct.bytes < Self::PROBE {
                    Pacer::Probing {
                        page_cache,
                        direct,
                        losses,
                    }
                } else if direct.faster(page_cache, 5, 4) {
                    Pacer::Direct
                } else {
                    Self::watching(Self::BACKOFF << losses.min(16), losses + 1)
                }
            }
            settled => settled,
        };
    }

    /// The filesystem refused O_DIRECT: page cache for the rest of the file.
    fn refused(&mut self) {
        *self = Pacer::Buffered;
    }
}

/// The output file, written through the page cache or around it as its `Pacer` decides.
pub(crate) struct PacedFile<'a> {
    file: &'a mut File,
    pacer: Pacer,
    /// O_DIRECT is set on the descriptor.
    direct: bool,
    /// Bytes written so far: the file offset, which O_DIRECT needs aligned too.
    offset: u64,
    /// Of those, the bytes written with O_DIRECT (said at `-v` when the file is done).
    direct_bytes: u64,
}

impl<'a> PacedFile<'a> {
    /// Writes into `file` (empty, at offset 0) as `pacer` decides.
    pub(crate) fn new(file: &'a mut File, pacer: Pacer) -> Self {
        PacedFile {
            file,
            pacer,
            direct: false,
            offset: 0,
            direct_bytes: 0,
        }
    }

    /// Writes all of `src`, the way the pacer says.
    pub(crate) fn write_all(&mut self, src: Source) -> io::Result<()> {
        let aligned = |n: u64| n.is_multiple_of(crate::os::DIRECT_ALIGN as u64);
        let len = src.len();
        let fits =
            src.is_aligned(crate::os::DIRECT_ALIGN) && aligned(len as u64) && aligned(self.offset);
        let want = self.pacer.wants_direct(fits);
        if want != self.direct {
            match crate::os::set_direct(self.file, want) {
                Ok(()) => self.direct = want,
                // A filesystem without O_DIRECT says EINVAL here.
                Err(_) if want => self.pacer.refused(),
                Err(e) => return Err(e),
            }
        }
        let before = self.pacer;
        let t = Instant::now();
        let mut done = 0;
        while done < len {
            match src.write_once(self.file, done) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Some filesystems take F_SETFL O_DIRECT and refuse the write itself; a short
                // direct write leaves the rest unaligned. Either way the page cache takes over.
                Err(e) if self.direct && e.kind() == io::ErrorKind::InvalidInput => {
                    crate::os::set_direct(self.file, false)?;
                    self.direct = false;
                    self.pacer.refused();
                }
                Err(e) => return Err(e),
            }
        }
        self.offset += len as u64;
        if self.direct {
            self.direct_bytes += len as u64;
        }
        let nanos = t.elapsed().as_nanos() as u64;
        self.pacer.record(len as u64, nanos);
        match (before, self.pacer) {
            (Pacer::Watching { .. }, Pacer::Probing { page_cache, .. }) => debug!(
                page_cache_mb_s = page_cache.mb_per_s(),
                offset = self.offset,
                "page cache is slow; probing O_DIRECT"
            ),
            (Pacer::Probing { direct, .. }, after) if !matches!(after, Pacer::Probing { .. }) => {
                debug!(
                    direct_mb_s = direct.add(len as u64, nanos).mb_per_s(),
                    direct = after == Pacer::Direct,
                    "O_DIRECT probed"
                )
            }
            _ => {}
        }
        Ok(())
    }
}

impl Drop for PacedFile<'_> {
    fn drop(&mut self) {
        debug!(
            bytes = self.offset,
            direct_bytes = self.direct_bytes,
            "file written ({} of its bytes with O_DIRECT)",
            self.direct_bytes
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;

    const MIB: u64 = 1 << 20;

    /// Feeds `slots` whole-slot writes of 1 MiB, each taking `nanos`.
    fn feed(p: &mut Pacer, slots: u64, nanos: u64) -> Vec<bool> {
        (0..slots)
            .map(|_| {
                let direct = p.wants_direct(true);
                p.record(MIB, nanos);
                direct
            })
            .collect()
    }

    #[test]
    fn auto_stays_in_the_page_cache_while_it_runs_at_memory_speed() {
        let mut p = Pacer::new(DirectMode::Auto);
        // 0.2 ms per MiB: 5 GB/s, what a page-cache copy costs on a host.
        assert!(feed(&mut p, 64, 200_000).iter().all(|d| !d));
        assert!(matches!(p, Pacer::Watching { losses: 0, .. }));
    }

    #[test]
    fn auto_probes_a_slow_page_cache_and_goes_direct_when_the_probe_is_faster() {
        let mut p = Pacer::new(DirectMode::Auto);
        // 2.4 ms per MiB: the page cache on memory the host took back.
        assert!(feed(&mut p, 8, 2_400_000).iter().all(|d| !d));
        assert!(matches!(p, Pacer::Probing { .. }));
        // The probe's slots take 0.5 ms each: direct from here on, whatever it then costs.
        assert_eq!(feed(&mut p, 4, 500_000), [true; 4]);
        assert_eq!(p, Pacer::Direct);
        assert!(feed(&mut p, 4, 9_000_000).iter().all(|d| *d));
    }

    #[test]
    fn auto_keeps_the_page_cache_when_direct_is_no_faster() {
        let mut p = Pacer::new(DirectMode::Auto);
        feed(&mut p, 8, 2_000_000);
        // A slow disk: the direct probe takes 10 ms a slot.
        assert_eq!(feed(&mut p, 4, 10_000_000), [true; 4]);
        // Probes again only after 32 MiB, then after 64 MiB: one slot in ten at most.
        let d = feed(&mut p, 32 + 8, 2_000_000);
        assert!(d.iter().all(|d| !d));
        assert_eq!(feed(&mut p, 4, 10_000_000), [true; 4]);
        assert!(feed(&mut p, 64 + 7, 2_000_000).iter().all(|d| !d));
        assert!(matches!(p, Pacer::Watching { losses: 2, .. }));
        // A little faster is not enough: leaving the page cache must pay for itself.
        let mut p = Pacer::new(DirectMode::Auto);
        feed(&mut p, 8, 2_000_000);
        feed(&mut p, 4, 1_700_000);
        assert!(matches!(p, Pacer::Watching { losses: 1, .. }));
    }

    #[test]
    fn auto_judges_each_window_afresh_so_a_late_slowdown_is_caught() {
        let mut p = Pacer::new(DirectMode::Auto);
        feed(&mut p, 100, 200_000);
        // Within two windows of slow writes it probes.
        let slow = (1..=16).find(|_| {
            feed(&mut p, 1, 3_000_000);
            matches!(p, Pacer::Probing { .. })
        });
        assert!(slow.is_some(), "{p:?}");
    }

    #[test]
    #[cfg_attr(miri, ignore)] // Files.
    fn a_write_that_cannot_be_aligned_ends_direct_writes_for_the_file() {
        let mut p = Pacer::new(DirectMode::Always);
        assert!(p.wants_direct(true));
        assert!(!p.wants_direct(false));
        assert!(!p.wants_direct(true));
        let mut p = Pacer::new(DirectMode::Always);
        p.refused();
        assert!(!p.wants_direct(true));
        let mut p = Pacer::new(DirectMode::Never);
        assert!(feed(&mut p, 32, 50_000_000).iter().all(|d| !d));
    }

    /// A page-aligned buffer of `len` bytes of a pattern, as a slot would be.
    fn aligned_pattern(len: usize, seed: u8) -> (Vec<u8>, usize) {
        let mut v = vec![0u8; len + crate::os::DIRECT_ALIGN];
        let at = v.as_ptr().align_offset(crate::os::DIRECT_ALIGN);
        for (i, b) in v[at..at + len].iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(31).wrapping_add(seed);
        }
        (v, at)
    }

    #[test]
    #[cfg_attr(miri, ignore)] // Files.
    fn a_file_switched_to_direct_mid_way_is_byte_identical() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let mut file = File::create(&path).unwrap();
        let mut expected = Vec::new();
        {
            // Forced into a probe that wins: page cache, then direct, then a buffered tail.
            let mut out = PacedFile::new(&mut file, Pacer::new(DirectMode::Auto));
            for seed in 0..3u8 {
                let (v, at) = aligned_pattern(64 << 10, seed);
                out.write_all(Source::Own(&v[at..at + (64 << 10)])).unwrap();
                expected.extend_from_slice(&v[at..at + (64 << 10)]);
            }
            out.pacer = Pacer::Probing {
                page_cache: Tally {
                    bytes: Pacer::WINDOW,
                    nanos: u64::MAX / 8,
                },
                direct: Tally {
                    bytes: Pacer::PROBE,
                    nanos: 0,
                },
                losses: 0,
            };
            for seed in 3..6u8 {
                let (v, at) = aligned_pattern(64 << 10, seed);
                out.write_all(Source::Own(&v[at..at + (64 << 10)])).unwrap();
                expected.extend_from_slice(&v[at..at + (64 << 10)]);
            }
            // The filesystem of the target dir may not take O_DIRECT; then all went buffered.
            assert!(out.pacer == Pacer::Direct || out.pacer == Pacer::Buffered);
            let (v, at) = aligned_pattern(5000, 9);
            out.write_all(Source::Own(&v[at..at + 5000])).unwrap();
            expected.extend_from_slice(&v[at..at + 5000]);
            assert_eq!(out.pacer, Pacer::Buffered);
            assert!(!out.direct);
        }
        drop(file);
        assert_eq!(std::fs::read(&path).unwrap(), expected);
    }
}
