//! The info region: what the receiver publishes about its channel, once, magic last.

use super::*;

/// What the receiver publishes about its channel; written once, before the magic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Info {
    /// Bytes per content slot.
    pub slot_size: usize,
    /// Slots in the ring.
    pub slot_count: u32,
    /// Whether every file is verified with MD5, whatever its sender asks.
    pub require_md5: bool,
    /// The receiver's pid as it wrote it (readers use the control segment's creator instead).
    pub receiver_pid: i32,
    /// The rendezvous segment's id: checked against the segment found at key + 1.
    pub rendezvous_shmid: i32,
    /// The semaphore set's id: checked against the set found at the key.
    pub semid: i32,
    /// The channel's permission bits.
    pub mode: u32,
    /// When the channel was created (Unix seconds).
    pub created: u64,
    /// The name the receiver serves (empty: a channel by number), at most
    /// [`MAX_CHANNEL_NAME`] bytes.
    pub name: Vec<u8>,
}

impl Info {
    /// The ring's size in bytes (slot size × slot count; both bounded by `decode_info`).
    pub(crate) fn ring_len(&self) -> usize {
        self.slot_size * self.slot_count as usize
    }
    /// The size of a sender's segment for this channel: its regions, then the ring.
    pub(crate) fn segment_len(&self) -> usize {
        RING_OFF + self.ring_len()
    }
}

/// Encodes the info region, magic included (the receiver writes the magic last).
pub(crate) fn encode_info(info: &Info) -> [u8; INFO_LEN] {
    let mut b = [0u8; INFO_LEN];
    b[0..8].copy_from_slice(&MAGIC);
    wr_u32(&mut b, 8, VERSION);
    wr_u32(&mut b, 12, CONTROL_LEN as u32);
    wr_u64(&mut b, 16, info.slot_size as u64);
    wr_u32(&mut b, 24, info.slot_count);
    wr_u32(&mut b, 28, u32::from(info.require_md5));
    wr_u32(&mut b, 32, info.receiver_pid as u32);
    wr_u32(&mut b, 36, info.rendezvous_shmid as u32);
    wr_u32(&mut b, 40, info.semid as u32);
    wr_u32(&mut b, 44, info.mode);
    wr_u64(&mut b, 48, info.created);
    let name = &info.name[..info.name.len().min(MAX_CHANNEL_NAME)];
    wr_u32(&mut b, 56, name.len() as u32);
    b[64..64 + name.len()].copy_from_slice(name);
    b
}

/// Decodes the info region of a control segment of `segment_size` bytes (from IPC_STAT).
pub(crate) fn decode_info(b: &[u8], segment_size: usize) -> Result<Info, HeaderError> {
    let too_small = HeaderError::TooSmall {
        size: segment_size.min(b.len()),
    };
    if b.len() < INFO_LEN || segment_size < INFO_LEN {
        return Err(too_small);
    }
    if b[0..8] != MAGIC {
        return Err(HeaderError::NotShmxfer);
    }
    // Before the size: another version's control segment may be of another size, and the
    // version is what its user needs to hear about.
    let version = rd_u32(b, 8);
    if version != VERSION {
        return Err(HeaderError::Version { found: version });
    }
    if segment_size < CONTROL_LEN {
        return Err(too_small);
    }
    let field = |field, value: u64| HeaderError::Field { field, value };
    let control_len = rd_u32(b, 12);
    if control_len as usize != CONTROL_LEN {
        return Err(field("control length", control_len.into()));
    }
    let slot_size = rd_u64(b, 16);
    // A multiple of 8: slots are copied by aligned words (see `Mapping::write`).
    if !(MIN_SLOT as u64..=MAX_SLOT as u64).contains(&slot_size) || !slot_size.is_multiple_of(8) {
        return Err(field("slot size", slot_size));
    }
    let slot_count = rd_u32(b, 24);
    if !(1..=MAX_SLOTS).contains(&slot_count) {
        return Err(field("slot count", slot_count.into()));
    }
    let flags = rd_u32(b, 28);
    if flags > 1 {
        return Err(field("flags", flags.into()));
    }
    let mode = rd_u32(b, 44);
    if mode > 0o777 {
        return Err(field("mode", mode.into()));
    }
    let name_len = rd_u32(b, 56) as usize;
    if name_len > MAX_CHANNEL_NAME {
        return Err(field("name length", name_len as u64));
    }
    Ok(Info {
        slot_size: slot_size as usize,
        slot_count,
        require_md5: flags == 1,
        receiver_pid: rd_u32(b, 32) as i32,
        rendezvous_shmid: rd_u32(b, 36) as i32,
        semid: rd_u32(b, 40) as i32,
        mode,
        created: rd_u64(b, 48),
        name: b[64..64 + name_len].to_vec(),
    })
}
