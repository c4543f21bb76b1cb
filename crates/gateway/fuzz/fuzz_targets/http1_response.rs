//! Any bytes as an upstream's HTTP/1 answer: the SDK client's head reader and the chunked
//! decoder never panic, a head is read the same whether its bytes arrive at once or one at a
//! time, and a body never takes more bytes than it was given.
#![no_main]

use bytes::BytesMut;
use flotilla::client::h1::wire::{response_head, Incoming};
use flotilla::client::h1::H1Error;
use flotilla::http::chunked::{Chunked, Piece};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let head_request = data.first().is_some_and(|b| b & 1 == 1);
    let mut whole = BytesMut::from(data);
    let at_once = response_head(&mut whole, head_request);
    let mut trickle = BytesMut::new();
    let mut one_by_one = Ok(None);
    for &byte in data {
        trickle.extend_from_slice(&[byte]);
        one_by_one = response_head(&mut trickle, head_request);
        if !matches!(one_by_one, Ok(None)) {
            break;
        }
    }
    match (&at_once, &one_by_one) {
        (Ok(Some(a)), Ok(Some(b))) => {
            assert_eq!(a.response.status(), b.response.status());
            assert_eq!(a.response.headers(), b.response.headers());
            assert_eq!(a.body, b.body);
            assert_eq!(a.reusable, b.reusable);
        }
        (Ok(None), Ok(None)) | (Err(_), Err(_)) => {}
        // Fed whole, a head may be refused for its size where the trickle stopped earlier.
        (a, b) => assert!(
            matches!(a, Err(H1Error::HeadTooLarge)) || matches!(b, Err(H1Error::HeadTooLarge)),
            "{a:?} / {b:?}"
        ),
    }
    if let Ok(Some(head)) = at_once {
        if head.body == Incoming::Chunked {
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
