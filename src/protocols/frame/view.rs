//! A read-only look at a channel's live fields, for `status`.

use super::*;
use crate::sysv::{self, Key, Shm};

/// A read-only look at a channel's live fields for `status`: attaches without writing.
pub(crate) struct View {
    control: Control,
    /// The validated header.
    pub info: Info,
    /// The segment's `IPC_STAT` when it was opened.
    stat: sysv::ShmStat,
}

impl View {
    /// Attaches read-only to the segment `shmid` and validates its header.
    ///
    /// # Errors
    /// The segment is gone, unreadable, or not a channel.
    pub(crate) fn open(shmid: i32) -> Result<View, FrameError> {
        let header = |source| FrameError::Header {
            key: Key(0),
            source,
        };
        let shm = Shm::from_id(shmid);
        let stat = shm.stat()?;
        let control = control(shm.attach(false)?).map_err(header)?;
        let mut head = [0u8; INFO_LEN];
        read_head(control.mapping(), &mut head)
            .map_err(|e| header(HeaderError::TooSmall { size: e.size }))?;
        let mut info = decode_info(&head, control.mapping().len()).map_err(header)?;
        // As in `probe`: the pid the kernel translates into our namespace.
        info.receiver_pid = stat.cpid;
        Ok(View {
            control,
            info,
            stat,
        })
    }

    /// What the channel this view shows is, judged as [`probe`] judges one (its parts
    /// checked against the keys, its receiver's liveness from kernel facts), without
    /// attaching again.
    pub(crate) fn judge(&self, key: Key) -> Probe {
        judge_channel(
            key,
            self.control.mapping().id(),
            &self.stat,
            self.info.clone(),
            Judge::Exact,
        )
    }
    /// The published state ([`State`] as a number; anything else is "starting").
    pub(crate) fn state(&self) -> u32 {
        self.control.load_u32(STATE_OFF)
    }
    /// The admitted sender's uid and pid (pid as the receiver's namespace sees it), if one is.
    pub(crate) fn sender(&self) -> Option<(u32, i32)> {
        let admitted = self.control.load_u32(ADMITTED_OFF) as i32;
        (admitted >= 0).then(|| {
            (
                self.control.load_u32(SENDER_UID_OFF),
                self.control.load_u32(SENDER_PID_OFF) as i32,
            )
        })
    }
    /// Bytes the receiver has taken of the current file.
    pub(crate) fn progress(&self) -> u64 {
        self.control.load_u64(PROGRESS_OFF)
    }
    /// The request of the file the receiver is taking (the first one's, before it takes any).
    ///
    /// # Errors
    /// It does not decode (none yet, or torn).
    pub(crate) fn request(&self) -> Result<Request, HeaderError> {
        let mut b = [0u8; REQUEST_LEN];
        self.control.read(SHOWN_REQUEST_OFF, &mut b);
        let mut path = [0u8; PATH_LEN];
        self.control.read(SHOWN_PATH_OFF, &mut path);
        decode_request(&b, &path)
    }
}
