//! Arbitrary bytes as umadb.v1 requests: decoding and the server's checks never panic, and every
//! refusal is an INVALID_ARGUMENT carrying an error response (`dcb_grpc::check_request` asserts it).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    dcb_grpc::check_request(data);
});
