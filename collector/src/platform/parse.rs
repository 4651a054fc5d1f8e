//! Parsers for what the platform implementations read: `systemctl show` output,
//! `netsh winhttp show proxy` output, `wevtutil` XML, registry certificate blobs and
//! uninstall entries. Pure functions, so the Windows formats are tested on Linux.

use super::{EventEntry, InstalledProduct, ServiceAnswer, ServiceFacts, SystemProxySetting};
use crate::probe::route::HostPattern;
use connwatch_shared::wire::{ServiceRole, ServiceState, StartType};

/// At most `max` bytes of `s`, cut at a character boundary.
pub fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Reads `systemctl show --property=LoadState,ActiveState,SubState,UnitFileState,MainPID`.
pub fn systemd_show(text: &str) -> Result<ServiceAnswer, String> {
    let mut load = None;
    let mut active = None;
    let mut unit_file = "";
    let mut pid = None;
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        match key.trim() {
            "LoadState" => load = Some(value.trim()),
            "ActiveState" => active = Some(value.trim()),
            "UnitFileState" => unit_file = value.trim(),
            "MainPID" => pid = value.trim().parse::<u32>().ok().filter(|p| *p != 0),
            _ => {}
        }
    }
    let (Some(load), Some(active)) = (load, active) else {
        return Err(format!(
            "systemctl show gave no LoadState/ActiveState: {}",
            clip(text.trim(), 200)
        ));
    };
    if load == "not-found" {
        return Ok(ServiceAnswer::NotInstalled);
    }
    let state = match active {
        "active" | "reloading" | "refreshing" => ServiceState::Running,
        "activating" => ServiceState::StartPending,
        "deactivating" => ServiceState::StopPending,
        _ => ServiceState::Stopped,
    };
    let start_type = match unit_file {
        "enabled" | "enabled-runtime" | "alias" | "generated" | "linked" | "linked-runtime" => {
            StartType::Automatic
        }
        "masked" | "masked-runtime" => StartType::Disabled,
        "disabled" | "static" | "indirect" | "transient" => StartType::Manual,
        _ => StartType::Unspecified,
    };
    Ok(ServiceAnswer::Found(ServiceFacts {
        state,
        start_type,
        pid: if state == ServiceState::Running {
            pid
        } else {
            None
        },
    }))
}

/// Reads `netsh winhttp show proxy`: `"direct"` or the proxy server list, and the
/// bypass list.
pub fn winhttp_proxy(text: &str) -> Result<SystemProxySetting, String> {
    let mut proxy = None;
    let mut bypass = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.to_ascii_lowercase().starts_with("direct access") {
            proxy = Some("direct".to_string());
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        if key.eq_ignore_ascii_case("proxy server(s)") && !value.is_empty() {
            proxy = Some(value.to_string());
        } else if key.eq_ignore_ascii_case("bypass list") && value != "(none)" {
            bypass = value
                .split([';', ' '])
                .filter_map(HostPattern::winhttp)
                .collect();
        }
    }
    match proxy {
        Some(proxy) => Ok(SystemProxySetting { proxy, bypass }),
        None => Err(format!(
            "netsh printed no proxy setting: {}",
            clip(text.trim(), 200)
        )),
    }
}

fn child<'a, 'i>(parent: roxmltree::Node<'a, 'i>, name: &str) -> Option<roxmltree::Node<'a, 'i>> {
    parent
        .children()
        .find(|n| n.is_element() && n.tag_name().name() == name)
}

/// Reads `wevtutil qe ... /f:RenderedXml /e:Events` output.
pub fn events_xml(text: &str) -> Result<Vec<EventEntry>, String> {
    let doc = roxmltree::Document::parse(text.trim_start_matches('\u{feff}'))
        .map_err(|e| format!("wevtutil printed XML that cannot be read: {e}"))?;
    let mut out = Vec::new();
    for event in doc
        .descendants()
        .filter(|n| n.is_element() && n.tag_name().name() == "Event")
    {
        let system = child(event, "System");
        let text_of = |name: &str| {
            system
                .and_then(|s| child(s, name))
                .and_then(|n| n.text())
                .map(str::trim)
        };
        let Some(record_id) = text_of("EventRecordID").and_then(|t| t.parse().ok()) else {
            continue;
        };
        let event_id = text_of("EventID").and_then(|t| t.parse().ok());
        let message = child(event, "RenderingInfo")
            .and_then(|r| child(r, "Message"))
            .and_then(|m| m.text())
            .map(str::to_string)
            .unwrap_or_else(|| {
                child(event, "EventData")
                    .map(|d| {
                        d.children()
                            .filter_map(|n| n.text())
                            .map(str::trim)
                            .filter(|t| !t.is_empty())
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .unwrap_or_default()
            });
        out.push(EventEntry {
            record_id,
            event_id,
            text: message.split_whitespace().collect::<Vec<_>>().join(" "),
        });
    }
    out.sort_by_key(|e| e.record_id);
    Ok(out)
}

/// The encoded certificate in a registry certificate blob: a list of properties, each
/// `id: u32 LE, reserved: u32 LE, length: u32 LE, data`, where property 32 holds the
/// certificate.
pub fn cert_from_blob(blob: &[u8]) -> Option<Vec<u8>> {
    const CERT_PROPERTY: u32 = 32;
    let mut rest = blob;
    while rest.len() >= 12 {
        let word = |i: usize| u32::from_le_bytes([rest[i], rest[i + 1], rest[i + 2], rest[i + 3]]);
        let id = word(0);
        let len = usize::try_from(word(8)).ok()?;
        let data = rest.get(12..12usize.checked_add(len)?)?;
        if id == CERT_PROPERTY {
            return Some(data.to_vec());
        }
        rest = &rest[12 + len..];
    }
    None
}

/// The version of the connector or updater among installed products, by display name:
/// the updater's name says "updater"; the connector's names the application proxy or
/// private network connector and does not.
pub fn pick_version(products: &[InstalledProduct], role: ServiceRole) -> Option<String> {
    products
        .iter()
        .find(|p| {
            let name = p.name.to_ascii_lowercase();
            let connector = name.contains("connector")
                && (name.contains("application proxy")
                    || name.contains("app proxy")
                    || name.contains("private network"));
            let updater = name.contains("updater");
            match role {
                ServiceRole::Connector => connector && !updater,
                ServiceRole::Updater => connector && updater,
                _ => false,
            }
        })
        .map(|p| p.version.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemctl_show_output_maps_to_state_and_start_type() {
        let running = "LoadState=loaded\nActiveState=active\nSubState=running\nUnitFileState=enabled\nMainPID=4242\n";
        assert_eq!(
            systemd_show(running),
            Ok(ServiceAnswer::Found(ServiceFacts {
                state: ServiceState::Running,
                start_type: StartType::Automatic,
                pid: Some(4242),
            }))
        );
        let masked = "LoadState=masked\nActiveState=inactive\nSubState=dead\nUnitFileState=masked\nMainPID=0\n";
        assert_eq!(
            systemd_show(masked),
            Ok(ServiceAnswer::Found(ServiceFacts {
                state: ServiceState::Stopped,
                start_type: StartType::Disabled,
                pid: None,
            }))
        );
        let starting =
            "LoadState=loaded\nActiveState=activating\nUnitFileState=disabled\nMainPID=7\n";
        assert!(matches!(
            systemd_show(starting),
            Ok(ServiceAnswer::Found(ServiceFacts {
                state: ServiceState::StartPending,
                start_type: StartType::Manual,
                pid: None
            }))
        ));
        let missing = "LoadState=not-found\nActiveState=inactive\nUnitFileState=\nMainPID=0\n";
        assert_eq!(systemd_show(missing), Ok(ServiceAnswer::NotInstalled));
        assert!(systemd_show("garbage").is_err());
    }

    #[test]
    fn netsh_winhttp_output_gives_direct_or_the_proxy() {
        let direct = "\r\nCurrent WinHTTP proxy settings:\r\n\r\n    Direct access (no proxy server).\r\n\r\n";
        let proxy_of = |t: &str| winhttp_proxy(t).map(|s| s.proxy);
        assert_eq!(proxy_of(direct), Ok("direct".into()));
        let proxied = "\nCurrent WinHTTP proxy settings:\n\n    Proxy Server(s) :  proxy.contoso.com:8080\n    Bypass List     :  (none)\n";
        assert_eq!(
            winhttp_proxy(proxied),
            Ok(SystemProxySetting {
                proxy: "proxy.contoso.com:8080".into(),
                bypass: Vec::new()
            })
        );
        let bypassing = "Current WinHTTP proxy settings:\r\n\r\n    Proxy Server(s) :  http=p:80;https=p:443\r\n    Bypass List     :  <local>;*.contoso.com\r\n";
        let s = winhttp_proxy(bypassing).expect("parse");
        assert_eq!(s.proxy, "http=p:80;https=p:443");
        assert_eq!(s.bypass.len(), 2);
        assert_eq!(s.bypass[0], HostPattern::Local);
        assert!(proxy_of("Access is denied.").is_err());
    }

    #[test]
    fn wevtutil_xml_gives_record_ids_event_ids_and_messages() {
        let xml = r#"<Events><Event xmlns='http://schemas.microsoft.com/win/2004/08/events/event'><System><Provider Name='Microsoft-AadApplicationProxy-Connector'/><EventID>12008</EventID><Level>2</Level><EventRecordID>88</EventRecordID></System><EventData><Data Name='msg'>ignored when rendered</Data></EventData><RenderingInfo Culture='en-US'><Message>Microsoft Entra exceeded the maximum number of permitted
 Kerberos authentication attempts to the backend server.</Message></RenderingInfo></Event><Event xmlns='http://schemas.microsoft.com/win/2004/08/events/event'><System><EventID Qualifiers='0'>1000</EventID><EventRecordID>87</EventRecordID></System><EventData><Data>Connector re-registration failed: The Connector trust certificate expired.</Data></EventData></Event></Events>"#;
        let events = events_xml(xml).expect("parse");
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].record_id, 87, "oldest first");
        assert_eq!(events[0].event_id, Some(1000));
        assert!(events[0].text.contains("trust certificate expired"));
        assert_eq!(events[1].event_id, Some(12008));
        assert_eq!(
            events[1].text,
            "Microsoft Entra exceeded the maximum number of permitted Kerberos authentication attempts to the backend server."
        );
        assert!(events_xml("<Events>").is_err());
        assert_eq!(events_xml("<Events></Events>"), Ok(vec![]));
    }

    #[test]
    fn a_registry_blob_yields_its_certificate_property() {
        let mut blob = Vec::new();
        for (id, data) in [
            (3u32, &b"sha1-hash-here"[..]),
            (32, b"\x30\x82DER"),
            (92, b"x"),
        ] {
            blob.extend_from_slice(&id.to_le_bytes());
            blob.extend_from_slice(&1u32.to_le_bytes());
            blob.extend_from_slice(&u32::try_from(data.len()).expect("len").to_le_bytes());
            blob.extend_from_slice(data);
        }
        assert_eq!(cert_from_blob(&blob), Some(b"\x30\x82DER".to_vec()));
        assert_eq!(cert_from_blob(&blob[..20]), None, "truncated");
        let mut lying = blob.clone();
        lying[8] = 0xff;
        assert_eq!(cert_from_blob(&lying), None, "length past the end");
    }

    #[test]
    fn installed_versions_are_told_apart_by_name() {
        let products = [
            InstalledProduct {
                name: "Microsoft Visual C++ 2015 Redistributable".into(),
                version: "14.0.1".into(),
            },
            InstalledProduct {
                name: "Microsoft AAD Application Proxy Connector Updater".into(),
                version: "1.5.1975.0".into(),
            },
            InstalledProduct {
                name: "Microsoft Entra private network connector".into(),
                version: "1.5.3437.0".into(),
            },
        ];
        assert_eq!(
            pick_version(&products, ServiceRole::Connector).as_deref(),
            Some("1.5.3437.0")
        );
        assert_eq!(
            pick_version(&products, ServiceRole::Updater).as_deref(),
            Some("1.5.1975.0")
        );
        assert_eq!(pick_version(&products[..1], ServiceRole::Connector), None);
    }

    #[test]
    fn clip_cuts_at_a_character_boundary() {
        assert_eq!(clip("héllo", 2), "h");
        assert_eq!(clip("abc", 10), "abc");
    }
}
