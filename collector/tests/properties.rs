//! Property tests over the collector's parsers of untrusted files: configuration,
//! TrustSettings.xml, service `.exe.config` files and log lines. Whatever the bytes,
//! they answer with a value or an error, never a panic.

use connwatch_collector::config::Config;
use connwatch_collector::probe::{cert, log, proxy};
use proptest::prelude::*;
use std::path::Path;

proptest! {
    // 256 cases keep the suite quick; PROPTEST_CASES does not override an explicit
    // count, so a longer run edits this number.
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_config_text_parses_or_names_the_file(text in "(?s).{0,400}") {
        if let Err(e) = Config::parse(Path::new("/etc/connwatch/collector.toml"), &text) {
            prop_assert!(e.to_string().contains("collector.toml"), "{}", e);
        }
    }

    #[test]
    fn config_like_text_parses_or_names_the_file(
        key in "(group|interval|jitter|\\[aggregator\\]|\\[\\[endpoint\\]\\]|address|timeout|\\[spool\\]|max_kb)",
        value in "(\"[a-z0-9:./ -]{0,20}\"|[0-9]{1,6}|true|\\[\\])",
    ) {
        let text = format!("group = \"eu\"\n{key} = {value}\n");
        if let Err(e) = Config::parse(Path::new("/x/c.toml"), &text) {
            prop_assert!(e.to_string().contains("c.toml"), "{}", e);
        }
    }

    #[test]
    fn trust_settings_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = cert::parse_settings(&bytes);
        let _ = cert::decode_text(&bytes);
    }

    #[test]
    fn trust_settings_like_xml_never_panics(thumb in "[0-9A-Fa-f :]{0,60}", user in "(true|false|yes|1|)", junk in ".{0,30}") {
        let xml = format!(
            "<?xml version=\"1.0\"?><ConnectorTrustSettingsFile><CloudProxyTrust><Thumbprint>{thumb}</Thumbprint><IsInUserStore>{user}</IsInUserStore></CloudProxyTrust>{junk}</ConnectorTrustSettingsFile>"
        );
        let _ = cert::parse_settings(xml.as_bytes());
    }

    #[test]
    fn exe_config_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600), addr in ".{0,40}") {
        let _ = proxy::parse_exe_config(&bytes);
        let xml = format!("<configuration><system.net><defaultProxy enabled=\"true\"><proxy proxyaddress=\"{addr}\"/></defaultProxy></system.net></configuration>");
        let _ = proxy::parse_exe_config(xml.as_bytes());
    }

    #[test]
    fn log_lines_never_panic_and_counts_add_up(lines in proptest::collection::vec((proptest::option::of(0u32..20000), "[ -~]{0,120}|.{600,640}"), 0..12)) {
        let tally = log::tally(lines.iter().map(|(id, l)| (*id, l.as_str())));
        let matched = lines.iter().filter(|(id, l)| log::classify(*id, l).is_some()).count();
        let counted: u32 = tally.iter().map(|s| s.count).sum();
        prop_assert_eq!(counted as usize, matched);
        for s in &tally {
            prop_assert!(s.last_line.len() <= 512);
        }
    }
}
