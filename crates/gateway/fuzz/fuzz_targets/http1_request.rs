//! Any bytes as an HTTP/1 request: the head reader and the chunked decoder never panic, a
//! head is read the same whether its bytes arrive at once or one at a time, and a body never
//! takes more bytes than it was given.
#![no_main]

use bytes::BytesMut;
use flotilla_gateway::edge::Framing;
use flotilla_gateway::h1::chunked::{Chunked, Piece};
use flotilla_gateway::h1::head;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut whole = BytesMut::from(data);
    let at_once = head::parse(&mut whole);
    let mut trickle = BytesMut::new();
    let mut one_by_one = Ok(None);
    for &byte in data {
        trickle.extend_from_slice(&[byte]);
        one_by_one = head::parse(&mut trickle);
        if !matches!(one_by_one, Ok(None)) {
            break;
        }
    }
    match (&at_once, &one_by_one) {
        (Ok(Some(a)), Ok(Some(b))) => {
            assert_eq!(a.request.uri(), b.request.uri());
            assert_eq!(a.request.headers(), b.request.headers());
            assert_eq!(a.framing, b.framing);
        }
        (Ok(None), Ok(None)) | (Err(_), Err(_)) => {}
        // Fed whole, a head may be refused for its size where the trickle stopped earlier.
        (a, b) => assert!(
            matches!(a, Err(head::HeadError::TooLarge)) || matches!(b, Err(head::HeadError::TooLarge)),
            "{a:?} / {b:?}"
        ),
    }
    if let Ok(Some(head)) = at_once {
        if head.framing == Framing::Chunked {
            let before = whole.len();
            let mut chunked = Chunked::default();
            let mut taken = 0;
            while let Ok(Piece::Data(data)) = chunked.decode(&mut whole) {
                taken += data.len();
            }
            assert!(taken <= before && whole.len() <= before - taken);
        }
    }
});
