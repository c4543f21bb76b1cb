//! Any routes file: parsing answers routes or an error that names the file, never a panic.
#![no_main]

use flotilla::config::TomlFile;
use flotilla_gateway::routes::RouteTable;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(err) = RouteTable::parse(&TomlFile::from_text("routes.toml", text)) {
        assert_eq!(err.path.to_str(), Some("routes.toml"));
    }
});
