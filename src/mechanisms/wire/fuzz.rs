//! The decoders fed valid encodings with a few bytes overwritten: the bounds each checks on
//! what it accepts are reached, not only "no panic" on noise.

use proptest::prelude::*;

use super::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]

    // Each decoder is fed valid encodings with up to four bytes overwritten (none, a fifth of
    // the time: then it must decode to what was encoded), so the bounds checked on what it
    // accepts are reached, not only "no panic" on noise.

    #[cfg_attr(miri, ignore)] // Safe code; the property runs natively.
    #[test]
    fn info_decoding_bounds_what_it_accepts(info in info(), size in prop_oneof![Just(CONTROL_LEN), 0usize..70_000], muts in mutations(INFO_LEN)) {
        let mut b = encode_info(&info);
        let clean = mutate(&mut b, &muts);
        match decode_info(&b, size) {
            Ok(i) => {
                prop_assert!(size >= CONTROL_LEN);
                prop_assert!((MIN_SLOT..=MAX_SLOT).contains(&i.slot_size));
                prop_assert!((1..=MAX_SLOTS).contains(&i.slot_count));
                prop_assert!(i.name.len() <= MAX_CHANNEL_NAME);
                if clean {
                    prop_assert_eq!(i, info);
                }
            }
            Err(_) => prop_assert!(!clean || size < CONTROL_LEN),
        }
    }

    #[cfg_attr(miri, ignore)] // Safe code; the property runs natively.
    #[test]
    fn request_decoding_bounds_names_and_metadata(r in request(), muts in mutations(REQUEST_LEN)) {
        let mut b = encode_request(&r);
        let clean = mutate(&mut b, &muts);
        match decode_request(&b, &encode_path(&r)) {
            Ok(d) => {
                prop_assert!(d.name.len() <= MAX_PATH);
                prop_assert!(d.name.split(|&c| c == b'/').all(|c| c.len() <= MAX_NAME));
                prop_assert!(d.meta.is_none_or(|m| m.mode <= 0o7777 && m.mtime_nsec < 1_000_000_000));
                if clean {
                    prop_assert_eq!(d, r);
                }
            }
            Err(e) => prop_assert!(!clean, "{e}"),
        }
    }

    #[cfg_attr(miri, ignore)] // Safe code; the property runs natively.
    #[test]
    fn chunk_decoding_never_yields_more_than_a_slot(d in desc(), slot in 4096usize..(1 << 20), muts in mutations(SLOT_DESC_LEN)) {
        let mut b = encode_desc(&d);
        let clean = mutate(&mut b, &muts);
        match decode_desc(&b) {
            Ok(c) => {
                prop_assert!(c.len_in(slot).is_none_or(|n| n <= slot));
                prop_assert!(!matches!(c.kind, DescKind::Abort(_)) || c.len == 0);
                if clean {
                    prop_assert_eq!(c, d);
                }
            }
            Err(e) => prop_assert!(!clean, "{e}"),
        }
    }

    #[cfg_attr(miri, ignore)] // Safe code; the property runs natively.
    #[test]
    fn outcome_decoding_bounds_names(o in outcome(), muts in mutations(RESULT_LEN), status_noise in prop_oneof![Just(None), any::<u32>().prop_map(Some)]) {
        let mut b = encode_outcome(&o);
        let clean = mutate(&mut b, &muts) && status_noise.is_none();
        match decode_outcome(status_noise.unwrap_or(o.status.code()), &b) {
            Ok(d) => {
                prop_assert!(d.name.len() <= MAX_NAME);
                if clean {
                    prop_assert_eq!(d, o);
                }
            }
            Err(e) => prop_assert!(!clean, "{e}"),
        }
    }

    #[cfg_attr(miri, ignore)] // Safe code; the property runs natively.
    #[test]
    fn valid_requests_survive_encoding(name in proptest::collection::vec(any::<u8>(), 0..255), size in proptest::option::of(0u64..u64::MAX), md5 in any::<bool>()) {
        let r = Request { op: Op::File, sender_pid: 7, size, md5, meta: Some(Meta { mode: 0o644, mtime_sec: 1, mtime_nsec: 2 }), name, session: 9, file: 4 };
        prop_assert_eq!(decode_request(&encode_request(&r), &encode_path(&r)), Ok(r));
    }
}

/// Up to four (offset, byte) overwrites inside `len` bytes; none a fifth of the time.
fn mutations(len: usize) -> impl Strategy<Value = Vec<(usize, u8)>> {
    prop_oneof![
        1 => Just(Vec::new()),
        4 => proptest::collection::vec((0..len, any::<u8>()), 1..=4),
    ]
}

/// Applies `muts`; returns whether the bytes are still the valid encoding.
fn mutate(b: &mut [u8], muts: &[(usize, u8)]) -> bool {
    let before = b.to_vec();
    for &(i, v) in muts {
        b[i] = v;
    }
    *b == before[..]
}

fn info() -> impl Strategy<Value = Info> {
    (
        (MIN_SLOT / 8..=MAX_SLOT / 8).prop_map(|n| n * 8),
        1..=MAX_SLOTS,
        any::<bool>(),
        (
            any::<i32>(),
            any::<i32>(),
            any::<i32>(),
            0u32..0o1000,
            any::<u64>(),
        ),
        proptest::collection::vec(any::<u8>(), 0..=MAX_CHANNEL_NAME),
    )
        .prop_map(
            |(
                slot_size,
                slot_count,
                require_md5,
                (receiver_pid, rendezvous_shmid, semid, mode, created),
                name,
            )| Info {
                slot_size,
                slot_count,
                require_md5,
                receiver_pid,
                rendezvous_shmid,
                semid,
                mode,
                created,
                name,
            },
        )
}

fn request() -> impl Strategy<Value = Request> {
    (
        proptest::collection::vec(
            any::<u8>().prop_filter("no NUL or /", |c| *c != 0 && *c != b'/'),
            1..=255,
        ),
        proptest::option::of(0u64..u64::MAX),
        any::<bool>(),
        proptest::option::of((0u32..=0o7777, any::<i64>(), 0u32..1_000_000_000)),
        (any::<i32>(), any::<u32>(), any::<u32>()),
    )
        .prop_map(
            |(name, size, md5, meta, (sender_pid, session, file))| Request {
                op: Op::File,
                sender_pid,
                size,
                md5,
                meta: meta.map(|(mode, mtime_sec, mtime_nsec)| Meta {
                    mode,
                    mtime_sec,
                    mtime_nsec,
                }),
                name,
                session,
                file,
            },
        )
}

fn desc() -> impl Strategy<Value = Desc> {
    (
        prop_oneof![
            Just(DescKind::Data),
            Just(DescKind::Last),
            (1u32..=4).prop_map(DescKind::Abort)
        ],
        0u64..(1 << 21),
        any::<u32>(),
        any::<u32>(),
        any::<u64>(),
    )
        .prop_map(|(kind, len, session, file, index)| Desc {
            len: if matches!(kind, DescKind::Abort(_)) {
                0
            } else {
                len
            },
            kind,
            session,
            file,
            index,
        })
}

fn outcome() -> impl Strategy<Value = Outcome> {
    (
        (0u32..=12).prop_map(|c| Status::from_code(c).unwrap()),
        any::<i32>(),
        proptest::collection::vec(any::<u8>(), 0..=MAX_NAME),
        any::<[u8; 16]>(),
        any::<u64>(),
        any::<(i32, u32)>(),
    )
        .prop_map(
            |(status, errno, name, md5, bytes, (segment, sender_uid))| Outcome {
                status,
                errno,
                name,
                md5,
                bytes,
                segment,
                sender_uid,
            },
        )
}
